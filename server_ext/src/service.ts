/**
 * The migration service: polls the server extension for the pod kind, the migration and
 * the idle timer, and sends the user's requests.
 */
import { Dialog, Notification, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { ISignal, Signal } from '@lumino/signaling';

import { ApiClient, ApiError } from './api';
import { DEFAULT_SETTINGS, IUserSettings } from './decision';
import { secondsLeft } from './countdown';
import { TranslationBundle } from './i18n';
import { isTerminal } from './phases';
import { PodKind, podKindOf } from './podKind';
import { pollDelay } from './pollDelay';
import { IProfilesAnswer, readProfiles } from './profiles';
import { IMigrationService, IMoveOptions } from './tokens';
import {
  IClassification,
  IIdleSnapshot,
  IMigration,
  IPodSessions,
  IRuntimeConfig,
  Target
} from './types';
import {
  IUnmappedImage,
  keepImageRequest,
  unmappedImageOf,
  unmappedImageQuestion
} from './unmappedImage';

/** Statuses of a route/proxy whose notebook pod is gone or starting (GET api_extension). */
const GATEWAY_STATUSES = new Set([502, 503, 504]);

export class MigrationService implements IMigrationService {
  constructor(
    readonly api: ApiClient,
    private readonly _trans: TranslationBundle
  ) {
    this._pod = { kind: 'unknown', reason: _trans.__('not asked yet') };
  }

  get pod(): PodKind {
    return this._pod;
  }
  get config(): IRuntimeConfig | null {
    return this._config;
  }
  get migration(): IMigration | null {
    return this._migration;
  }
  get migrating(): boolean {
    return (
      this._starting !== null || (this._migration !== null && !isTerminal(this._migration.phase))
    );
  }
  get starting(): Target | null {
    return this._starting;
  }
  get lastMoveAt(): number | null {
    return this.migrating || this._starting !== null ? Date.now() : this._lastMoveAt;
  }
  get serverDownSince(): number | null {
    return this._downSince;
  }
  get idle(): IIdleSnapshot | null {
    return this._idle;
  }
  get changed(): ISignal<IMigrationService, void> {
    return this._changed;
  }
  get classified(): ISignal<IMigrationService, string> {
    return this._classified;
  }
  get settings(): IUserSettings {
    return this._settings;
  }
  set settings(value: IUserSettings) {
    this._settings = { ...value };
    this._changed.emit();
  }

  idleSecondsLeft(): number | null {
    return secondsLeft(this._idle, this._idleReceivedAt, Date.now());
  }

  /** Start polling (the first answer arrives before this resolves). */
  async start(): Promise<void> {
    await this.refresh();
    this._schedule();
  }

  dispose(): void {
    this._disposed = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    Signal.clearData(this);
  }

  async refresh(): Promise<void> {
    let config: IRuntimeConfig | null = null;
    try {
      config = await this.api.get<IRuntimeConfig>('', 5000);
      this._downSince = null;
    } catch (error) {
      if (error instanceof ApiError && (error.serverDown || GATEWAY_STATUSES.has(error.status))) {
        // The extension answers this one 200 always: a 502/503/504 (JSON or not) comes
        // from the route or proxy in front of a pod that is gone or not ready yet.
        this._downSince = this._downSince ?? Date.now();
      } else if (error instanceof ApiError && error.status === 404) {
        // No server extension: the front end is installed without it.
        config = {
          optimizer: {
            state: 'off',
            reason: this._trans.__('the gpushift server extension is not enabled')
          }
        };
      }
    }
    if (config !== null) {
      this._config = config;
      this._pod = podKindOf(this._trans, config);
      // Side by side: after a move, this answer is what the page waits for before its
      // restore and the held cell (the two set different fields).
      await Promise.all([this._refreshMigration(config), this._refreshIdle()]);
    } else if (this._downSince !== null && this._config === null) {
      this._pod = podKindOf(this._trans, null);
    }
    if (this.migrating) {
      this._lastMoveAt = Date.now();
    }
    this._changed.emit();
  }

  async profiles(): Promise<IProfilesAnswer> {
    const answer = readProfiles(await this.api.get<unknown>('profiles'));
    if (answer === null) {
      throw new ApiError(0, 'bad-answer', this._trans.__('the server did not list the GPU profiles'), false);
    }
    return answer;
  }

  async move(target: Target, options: IMoveOptions): Promise<boolean> {
    const panel = options.panel ?? null;
    const kernel = panel?.sessionContext.session?.kernel ?? null;
    let body: Record<string, unknown> = {
      target,
      reason: options.reason,
      kernel_id: kernel?.id ?? null,
      // The session's path: the one the server knows the kernel by.
      path: panel ? panel.sessionContext.path || panel.context.path : null,
      pending_cell: options.pendingCell ?? null
    };
    if (options.profile) {
      body.profile = options.profile;
    }
    // The progress shows "saving your variables" while the server checkpoints, before
    // it answers (the first step of the move).
    this._starting = target;
    this._changed.emit();
    try {
      for (;;) {
        try {
          const answer = await this.api.post<{ migration: IMigration }>('migrate', body, 120000);
          this._accepted(answer.migration, body.path as string | null);
          return true;
        } catch (error) {
          const unmapped =
            error instanceof ApiError ? unmappedImageOf(error, body) : null;
          if (unmapped === null) {
            throw error;
          }
          this._starting = null;
          this._changed.emit();
          if (!(await this._askKeepImage(unmapped))) {
            await this.refresh();
            return false;
          }
          body = keepImageRequest(body);
          this._starting = target;
          this._changed.emit();
        }
      }
    } catch (error) {
      this._starting = null;
      this._changed.emit(); // the progress drops its "saving your variables" at once
      const detail = error instanceof ApiError ? error.detail : String(error);
      const title =
        target === 'gpu'
          ? this._trans.__('Could not move to a GPU pod')
          : this._trans.__('Could not move to a CPU pod');
      Notification.error(this._trans.__('%1: %2', title, detail), {
        autoClose: false,
        actions: [
          {
            label: this._trans.__('Details'),
            callback: () => void showErrorMessage(title, { message: detail })
          }
        ]
      });
      await this.refresh();
      return false;
    }
  }

  private _accepted(migration: IMigration, path: string | null): void {
    this._epoch += 1;
    this._starting = null;
    this._migration = migration;
    this._lastMoveAt = Date.now();
    if (path && migration?.id) {
      this._movedPaths.set(migration.id, path);
    }
    this._changed.emit();
    this._schedule(0);
  }

  /** "No GPU image is configured for …": true when the user chose "Move anyway". */
  private async _askKeepImage(unmapped: IUnmappedImage): Promise<boolean> {
    const words = unmappedImageQuestion(this._trans, unmapped);
    const result = await showDialog({
      title: words.title,
      body: words.body,
      buttons: [
        Dialog.cancelButton({ label: words.cancel }),
        Dialog.warnButton({ label: words.accept, className: 'gpushift-keep-image' })
      ],
      defaultButton: 0
    });
    return result.button.accept;
  }

  movedPath(id: string): string | null {
    return this._movedPaths.get(id) ?? null;
  }

  async stayOnGpu(): Promise<boolean> {
    try {
      await this.api.post('idle/stay', {});
      await this.refresh();
      return true;
    } catch (error) {
      await this.refresh();
      return false;
    }
  }

  async setIdleTimeout(seconds: number | null): Promise<IIdleSnapshot | null> {
    const idle = await this.api.put<IIdleSnapshot>('idle/timeout', { seconds });
    this._setIdle(idle);
    this._changed.emit();
    return idle;
  }

  async podSessions(variables = false): Promise<IPodSessions | null> {
    try {
      // Looking at the variables pickles them in each kernel (at most a few seconds).
      return variables
        ? await this.api.get<IPodSessions>('pod?variables=1', 20000)
        : await this.api.get<IPodSessions>('pod', 5000);
    } catch (error) {
      console.warn('gpushift: the server did not say what a move would stop', error);
      return null;
    }
  }

  async classify(
    code: string,
    kernelId: string | null,
    firstHit = false
  ): Promise<IClassification | null> {
    try {
      const body: Record<string, unknown> = { code };
      if (kernelId) {
        body.kernel_id = kernelId;
      }
      if (firstHit) {
        body.first_hit = true;
      }
      const answer = await this.api.post<IClassification>('classify', body, 5000);
      if (kernelId) {
        this._classified.emit(kernelId);
      }
      return answer;
    } catch (error) {
      // The user's cell runs when the classifier cannot tell: say so in the console.
      console.warn('gpushift: the classifier did not answer; running the cell', error);
      return null;
    }
  }

  async preview(code: string, kernelId: string): Promise<IClassification | null> {
    try {
      const body = { code, kernel_id: kernelId, preview: true };
      return await this.api.post<IClassification>('classify', body, 5000);
    } catch (error) {
      // Only a head start: the cell's run asks again.
      console.debug('gpushift: no preview of the cell', error);
      return null;
    }
  }

  reportActivity(kernelId: string, gpuCellRunning: boolean): void {
    // One after the other: a "finished" must not overtake its "started".
    this._activity = this._activity.then(() =>
      this.api
        .post('activity', { kernel_id: kernelId, gpu_cell_running: gpuCellRunning }, 5000)
        .then(() => undefined)
        .catch(error => console.warn('gpushift: activity not reported', error))
    );
  }

  async attach(kernelId: string, path: string): Promise<void> {
    try {
      await this.api.post('attach', { kernel_id: kernelId, path }, 60000);
    } catch (error) {
      console.warn(`gpushift: could not attach the state saver to ${path}`, error);
    }
  }

  private async _refreshMigration(config: IRuntimeConfig): Promise<void> {
    // The runtime config carries a summary; GET /migration the full record (pending
    // cell, checkpoint) - ask only while one is or was just in flight.
    // A move this page started while this poll was under way: the poll's answers are
    // older than the server's answer to the move, so they must not replace it.
    const epoch = this._epoch;
    const summary = config.migration ?? null;
    if (summary === null && !this.migrating) {
      this._setPolledMigration(null, epoch);
      return;
    }
    try {
      const answer = await this.api.get<{ migration: IMigration | null }>('migration', 5000);
      this._setPolledMigration(answer.migration ?? summary, epoch);
    } catch {
      this._setPolledMigration(summary, epoch);
    }
  }

  private _setPolledMigration(migration: IMigration | null, epoch: number): void {
    if (epoch === this._epoch && this._starting === null) {
      this._migration = migration;
    }
  }

  private async _refreshIdle(): Promise<void> {
    if (this._pod.kind !== 'gpu') {
      this._setIdle(null);
      return;
    }
    try {
      this._setIdle(await this.api.get<IIdleSnapshot>('idle', 5000));
    } catch {
      this._setIdle(this._config?.idle ?? null);
    }
  }

  private _setIdle(idle: IIdleSnapshot | null): void {
    this._idle = idle;
    this._idleReceivedAt = Date.now();
  }

  private _schedule(delay?: number): void {
    if (this._disposed) {
      return;
    }
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    const wait =
      delay ??
      pollDelay({
        migrating: this.migrating,
        serverDown: this._downSince !== null,
        idleWarning: this._idle?.state === 'warning',
        onGpu: this._pod.kind === 'gpu'
      });
    this._timer = setTimeout(async () => {
      this._timer = null;
      try {
        await this.refresh();
      } finally {
        this._schedule();
      }
    }, wait);
  }

  private _pod: PodKind;
  private _config: IRuntimeConfig | null = null;
  private _migration: IMigration | null = null;
  private _idle: IIdleSnapshot | null = null;
  private _idleReceivedAt = 0;
  private _downSince: number | null = null;
  private _starting: Target | null = null;
  private _lastMoveAt: number | null = null;
  /** Counts the moves this page started (polls begun before one are stale after it). */
  private _epoch = 0;
  private _settings: IUserSettings = { ...DEFAULT_SETTINGS };
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _disposed = false;
  private _activity: Promise<void> = Promise.resolve();
  private _movedPaths = new Map<string, string>();
  private _changed = new Signal<IMigrationService, void>(this);
  private _classified = new Signal<IMigrationService, string>(this);
}
