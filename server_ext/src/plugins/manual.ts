/**
 * `gpushift-jupyter:manual` (the seed's fe-extension-02): the status bar item, the "Move
 * to GPU" / "Move to CPU" commands (palette, Kernel menu, notebook toolbar) and the
 * settings.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator } from '@jupyterlab/translation';

import { ApiClient, ApiError } from '../api';
import { BackgroundWatcher } from '../background';
import { BACKGROUND_KEYS, backgroundBody, readBackgroundSetting } from '../backgroundSetting';
import { canMove, canPickProfile, readSettings } from '../decision';
import { confirmMove } from '../gpuDialog';
import { loadBundle, TranslationBundle } from '../i18n';
import { clampIdleTimeout, describeBounds } from '../podKind';
import { pickProfile } from '../profilePicker';
import { PodStatusItem } from '../statusItem';
import { IMigrationService } from '../tokens';
import { Target } from '../types';
import { moveLossText } from '../willStop';

export const PLUGIN_ID = 'gpushift-jupyter:manual';

export namespace CommandIDs {
  export const moveToGpu = 'gpushift:move-to-gpu';
  export const moveToCpu = 'gpushift:move-to-cpu';
  /** "Move to GPU…": choose the GPU profile. */
  export const moveToGpuProfile = 'gpushift:move-to-gpu-profile';
  /** The toolbar button: the move that makes sense on this pod. */
  export const move = 'gpushift:move';
  export const idleTimeout = 'gpushift:set-idle-timeout';
  /** "Turn background checkpoints off" / "… on": the user's setting. */
  export const toggleBackground = 'gpushift:toggle-background-checkpoints';
}

export const manualPlugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Status bar item with the pod kind, commands to move between CPU and GPU pods, settings.',
  autoStart: true,
  requires: [IMigrationService],
  optional: [INotebookTracker, IStatusBar, ICommandPalette, ISettingRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    service: IMigrationService,
    tracker: INotebookTracker | null,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null
  ): void => {
    const trans = loadBundle(translator);
    const { commands } = app;
    const api = new ApiClient(app.serviceManager.serverSettings, trans);
    /** The plugin's settings, once loaded. */
    let userSettings: ISettingRegistry.ISettings | null = null;
    const backgroundOn = () => readBackgroundSetting(userSettings?.composite ?? {}).enabled;
    const move = async (target: Target, profile: string | null = null) => {
      const panel = tracker?.currentWidget ?? null;
      // Asked only when the move would stop something or leave variables behind.
      const loss = moveLossText(trans, await service.podSessions(true));
      if (loss !== null && !(await confirmMove(trans, target, loss))) {
        return false;
      }
      return service.move(target, { reason: 'manual', panel, pendingCell: null, profile });
    };
    const profileNames = () => service.config?.profiles ?? [];
    commands.addCommand(CommandIDs.moveToGpu, {
      label: trans.__('Move to GPU'),
      caption: trans.__('Save the variables, move this notebook to a GPU pod and restore them there'),
      isEnabled: () => canMove(service.pod, service.migrating).toGpu,
      execute: () => move('gpu')
    });
    commands.addCommand(CommandIDs.moveToCpu, {
      label: trans.__('Move to CPU'),
      caption: trans.__('Save the variables, move this notebook back to a CPU pod and restore them there'),
      isEnabled: () => canMove(service.pod, service.migrating).toCpu,
      execute: () => move('cpu')
    });
    commands.addCommand(CommandIDs.moveToGpuProfile, {
      label: trans.__('Move to GPU…'),
      caption: trans.__('Choose a GPU (the admin\'s profiles, with what is free now) and move this notebook there'),
      isEnabled: () => canPickProfile(service.pod, service.migrating, profileNames()),
      execute: async () => {
        let answer;
        try {
          answer = await service.profiles();
        } catch (error) {
          const why = error instanceof ApiError ? error.detail : String(error);
          Notification.error(trans.__('The GPU profiles could not be listed: %1', why), { autoClose: 8000 });
          return false;
        }
        const profile = await pickProfile(trans, answer);
        return profile === null ? false : move('gpu', profile);
      }
    });
    commands.addCommand(CommandIDs.move, {
      label: () => (service.pod.kind === 'gpu' ? trans.__('Move to CPU') : trans.__('Move to GPU')),
      caption: () =>
        service.pod.kind === 'gpu'
          ? trans.__('Move this notebook back to a CPU pod (variables are kept)')
          : trans.__('Move this notebook to a GPU pod (variables are kept)'),
      isEnabled: () => {
        const can = canMove(service.pod, service.migrating);
        return can.toGpu || can.toCpu;
      },
      execute: () => move(service.pod.kind === 'gpu' ? 'cpu' : 'gpu')
    });
    commands.addCommand(CommandIDs.idleTimeout, {
      label: trans.__('Set GPU idle timeout…'),
      isEnabled: () => settingRegistry !== null && service.config?.idleBounds != null,
      execute: async () => {
        const bounds = service.config?.idleBounds ?? null;
        const answer = await InputDialog.getNumber({
          title: trans.__('GPU idle timeout (seconds)'),
          label: describeBounds(trans, bounds),
          value: service.settings.idleTimeoutSeconds ?? bounds?.timeout_seconds ?? 180
        });
        if (answer.button.accept && answer.value !== null && settingRegistry) {
          await settingRegistry.set(PLUGIN_ID, 'idleTimeoutSeconds', answer.value);
        }
      }
    });
    commands.addCommand(CommandIDs.toggleBackground, {
      label: () =>
        backgroundOn()
          ? trans.__('Turn background checkpoints off')
          : trans.__('Turn background checkpoints on'),
      caption: () =>
        backgroundOn()
          ? trans.__('Stop saving the variables in the background after cells run')
          : trans.__('Save the variables in the background after cells run'),
      isEnabled: () => userSettings !== null,
      execute: async () => {
        await userSettings?.set(BACKGROUND_KEYS.enabled, !backgroundOn());
      }
    });
    if (palette) {
      for (const command of [
        CommandIDs.moveToGpu,
        CommandIDs.moveToGpuProfile,
        CommandIDs.moveToCpu,
        CommandIDs.idleTimeout,
        CommandIDs.toggleBackground
      ]) {
        palette.addItem({ command, category: trans.__('GPU') });
      }
    }
    // The current notebook's background checkpoint, in the status bar item's tooltip.
    const background = statusBar && tracker ? new BackgroundWatcher(tracker, api) : null;
    if (statusBar) {
      statusBar.registerStatusItem('gpushift-jupyter:pod-kind', {
        // A click opens "Move to GPU…" (when a profile can be chosen).
        item: new PodStatusItem(
          service,
          trans,
          () => {
            if (commands.isEnabled(CommandIDs.moveToGpuProfile)) {
              void commands.execute(CommandIDs.moveToGpuProfile);
            }
          },
          background
        ),
        align: 'left',
        rank: 0
      });
    }
    // Buttons and menu entries follow the pod kind and the migration state.
    let lastState = '';
    service.changed.connect(() => {
      const can = canMove(service.pod, service.migrating);
      const pick = canPickProfile(service.pod, service.migrating, profileNames());
      const state = `${service.pod.kind}:${can.toGpu}:${can.toCpu}:${pick}:${service.config?.idleBounds != null}`;
      if (state !== lastState) {
        lastState = state;
        commands.notifyCommandChanged();
      }
    });
    if (settingRegistry) {
      void loadSettings(settingRegistry, service, trans).then(settings => {
        if (settings) {
          userSettings = settings;
          commands.notifyCommandChanged(CommandIDs.toggleBackground);
          settings.changed.connect(() => commands.notifyCommandChanged(CommandIDs.toggleBackground));
          sendBackgroundSetting(settings, service, api, () => background?.refresh());
        }
      });
    }
  }
};

/**
 * Sends the user's background-checkpoint setting to the server, which keeps it in memory
 * only: now, on every change, and to a server that came back (a restart, a move: the
 * notebook server is gone meanwhile) or is another pod's. One request at a time, in
 * order; quiet on failure (a pod without gpushift's server part). `onSent`: the server
 * took it.
 */
function sendBackgroundSetting(
  settings: ISettingRegistry.ISettings,
  service: IMigrationService,
  api: ApiClient,
  onSent: () => void
): void {
  let sent: string | null = null;
  let queue: Promise<void> = Promise.resolve();
  const send = () => {
    if (service.serverDownSince !== null) {
      sent = null; // sent again when it answers
      return;
    }
    const body = backgroundBody(readBackgroundSetting(settings.composite as Record<string, unknown>));
    const key = `${service.config?.PodName ?? ''}:${body.interval_seconds}`;
    if (key === sent) {
      return;
    }
    sent = key;
    queue = queue.then(async () => {
      try {
        await api.put('background', body);
        onSent();
      } catch (error) {
        console.warn('gpushift: the background checkpoint setting was not sent', error);
      }
    });
  };
  settings.changed.connect(send);
  service.changed.connect(send);
  send();
}

/** Apply the settings to the service, and the idle timeout to the sidecar (GPU pods);
 * the settings (null: not loaded). */
async function loadSettings(
  registry: ISettingRegistry,
  service: IMigrationService,
  trans: TranslationBundle
): Promise<ISettingRegistry.ISettings | null> {
  let settings: ISettingRegistry.ISettings;
  try {
    settings = await registry.load(PLUGIN_ID);
  } catch (error) {
    console.warn('gpushift: settings not loaded; using the defaults', error);
    return null;
  }
  let sentTimeout: string | null = null;
  const applyTimeout = async () => {
    const wanted = service.settings.idleTimeoutSeconds;
    if (service.pod.kind !== 'gpu') {
      return;
    }
    const { seconds, note } = clampIdleTimeout(trans, wanted, service.config?.idleBounds);
    const key = `${service.config?.PodName}:${seconds}`;
    if (key === sentTimeout || (seconds === null && sentTimeout === null)) {
      return;
    }
    sentTimeout = key;
    try {
      await service.setIdleTimeout(seconds);
      if (note) {
        Notification.info(trans.__('GPU idle timeout: %1', note), { autoClose: 8000 });
      }
    } catch (error) {
      sentTimeout = null;
      Notification.error(trans.__('The GPU idle timeout was not changed: %1', (error as Error).message), {
        autoClose: 8000
      });
    }
  };
  const apply = () => {
    service.settings = readSettings(settings.composite as Record<string, unknown>);
    void applyTimeout();
  };
  settings.changed.connect(apply);
  apply();
  service.changed.connect(() => void applyTimeout());
  return settings;
}
