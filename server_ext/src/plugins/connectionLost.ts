/**
 * `gpushift-jupyter:connection-lost`: JupyterLab's connection-lost handler
 * (IConnectionLost), aware of moves. The token has one provider; JupyterLab's
 * (`@jupyterlab/hub-extension:connectionlost`, which serves with and without JupyterHub)
 * is disabled in package.json (`jupyterlab.disabledExtensions`), and this one does what it
 * did whenever no move is in flight (connectionGuard.ts decides).
 */
import {
  ConnectionLost,
  IConnectionLost,
  JupyterFrontEnd,
  JupyterFrontEndPlugin,
  JupyterLab
} from '@jupyterlab/application';
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ServerConnection, ServiceManager } from '@jupyterlab/services';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { connectionLostAction } from '../connectionGuard';
import { IMigrationService } from '../tokens';

/** JupyterHub's command that opens its page to restart the server (hub-extension). */
const HUB_RESTART = 'hub:restart';

export const connectionLostPlugin: JupyterFrontEndPlugin<IConnectionLost> = {
  id: 'gpushift-jupyter:connection-lost',
  description:
    'Shows JupyterLab\'s (or JupyterHub\'s) connection-lost dialog, except while gpushift moves the notebook to another pod.',
  autoStart: true,
  provides: IConnectionLost,
  requires: [IMigrationService, JupyterFrontEnd.IPaths],
  optional: [ITranslator, JupyterLab.IInfo],
  activate: (
    app: JupyterFrontEnd,
    service: IMigrationService,
    paths: JupyterFrontEnd.IPaths,
    translator: ITranslator | null,
    info: JupyterLab.IInfo | null
  ): IConnectionLost => {
    const hubPrefix = paths.urls.hubPrefix || '';
    const hubDialog = hubConnectionLost(app, paths, translator ?? nullTranslator, info);
    let skipped = 0;
    return async (
      manager: ServiceManager.IManager,
      err: ServerConnection.NetworkError,
      maybeTranslator?: ITranslator
    ): Promise<void> => {
      const action = connectionLostAction({
        lastMoveAt: service.lastMoveAt,
        underHub: hubPrefix !== '',
        now: Date.now()
      });
      switch (action) {
        case 'skip':
          skipped += 1;
          // The console line lets the browser tests count what was skipped.
          console.info(`gpushift: connection lost during a move; no dialog (${skipped})`);
          return;
        case 'hub':
          return hubDialog(manager, err);
        case 'default':
          return ConnectionLost(manager, err, maybeTranslator ?? translator ?? undefined);
      }
    };
  }
};

/**
 * JupyterHub's dialog ("Server unavailable or unreachable", Restart / Dismiss), as
 * `@jupyterlab/hub-extension:connectionlost` shows it: its strings are JupyterLab's, so
 * they are translated in JupyterLab's domain.
 */
function hubConnectionLost(
  app: JupyterFrontEnd,
  paths: JupyterFrontEnd.IPaths,
  translator: ITranslator,
  info: JupyterLab.IInfo | null
): IConnectionLost {
  const trans = translator.load('jupyterlab');
  let showing = false;
  return async () => {
    if (showing) {
      return;
    }
    showing = true;
    if (info) {
      info.isConnected = false;
    }
    const result = await showDialog({
      title: trans.__('Server unavailable or unreachable'),
      body: trans.__(
        'Your server at %1 is not running.\nWould you like to restart it?',
        paths.urls.base
      ),
      buttons: [
        Dialog.okButton({ label: trans.__('Restart') }),
        Dialog.cancelButton({ label: trans.__('Dismiss') })
      ]
    });
    if (info) {
      info.isConnected = true;
    }
    showing = false;
    if (result.button.accept && app.commands.hasCommand(HUB_RESTART)) {
      await app.commands.execute(HUB_RESTART);
    }
  };
}
