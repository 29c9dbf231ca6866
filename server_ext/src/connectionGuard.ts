/**
 * During a move the notebook server really is gone for a while (the pod is replaced), and
 * JupyterLab's own "Server Connection Error" dialog would tell the user to check their
 * network. The move's progress notification already says what is happening, so that
 * dialog is closed while a move is in flight; at any other time it stays.
 */
import { Dialog } from '@jupyterlab/apputils';

import { IMigrationService } from './tokens';

/** JupyterLab's title of the dialog (`ConnectionLost` in @jupyterlab/application). */
export const CONNECTION_LOST_TITLE = 'Server Connection Error';

/** Whether a dialog's header is the connection-lost one. */
export function isConnectionLostTitle(header: string | null | undefined): boolean {
  return (header ?? '').trim() === CONNECTION_LOST_TITLE;
}

export class ConnectionLostGuard {
  constructor(private readonly _service: IMigrationService) {
    Dialog.tracker.widgetAdded.connect(this._closeIfMoving, this);
    _service.changed.connect(this._closeIfMoving, this);
  }

  /** Connection-lost dialogs closed so far (for the console and tests). */
  get closed(): number {
    return this._closed;
  }

  private _closeIfMoving(): void {
    if (!this._service.migrating) {
      return;
    }
    Dialog.tracker.forEach(dialog => {
      const header = dialog.node.querySelector('.jp-Dialog-header')?.textContent;
      if (!dialog.isDisposed && isConnectionLostTitle(header)) {
        this._closed += 1;
        console.info('gpushift: the server is away during a move; connection-lost dialog closed');
        dialog.reject();
      }
    });
  }

  private _closed = 0;
}
