/**
 * A notebook deleted in JupyterLab keeps its checkpoints (the server extension keeps them
 * in the workspace's hidden `.gpushift/checkpoints/`): when the user deletes a notebook or
 * a folder, and the server says checkpoints are kept for it, the user is offered to
 * delete them too. "Keep them" is the default: they could bring the variables back if
 * the notebook is restored. Quiet when the server extension does not answer.
 */
import { Dialog, Notification, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Contents } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import { ApiClient, ApiError } from './api';
import {
  cleanupQuestion,
  deletedText,
  ICheckpointsDeleted,
  ICheckpointsKept,
  RecentKeys,
  shouldOffer
} from './checkpointText';
import { TranslationBundle } from './i18n';
import { SerialGate } from './serialGate';

/** The endpoint of a path's checkpoints. */
function endpoint(path: string): string {
  return `checkpoints?path=${encodeURIComponent(path)}`;
}

export class CheckpointCleanup implements IDisposable {
  constructor(
    private readonly _contents: Contents.IManager,
    private readonly _api: ApiClient,
    private readonly _trans: TranslationBundle
  ) {
    _contents.fileChanged.connect(this._onFileChanged, this);
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._contents.fileChanged.disconnect(this._onFileChanged, this);
  }

  private _onFileChanged(_: Contents.IManager, change: Contents.IChangedArgs): void {
    const path = change.type === 'delete' ? change.oldValue?.path : undefined;
    // Only the server's own files (a drive's paths are `drive:path`).
    if (!path || this._contents.driveName(path) !== '') {
      return;
    }
    if (!this._recent.firstTime(path)) {
      return; // the same deletion announced again
    }
    // One question at a time when several files are deleted at once.
    void this._questions.run('ask', () => this._offer(path));
  }

  private async _offer(path: string): Promise<void> {
    let kept: ICheckpointsKept;
    try {
      kept = await this._api.get<ICheckpointsKept>(endpoint(path), 10000);
    } catch (error) {
      console.warn(`gpushift: the checkpoints of ${path} were not looked up`, error);
      return;
    }
    if (this._disposed || !shouldOffer(kept)) {
      return;
    }
    const trans = this._trans;
    const question = cleanupQuestion(trans, kept);
    const result = await showDialog({
      title: question.title,
      body: body(question.message, question.consequence),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Keep them'), actions: ['keep'] }),
        Dialog.warnButton({ label: trans.__('Delete them'), actions: ['delete'] })
      ],
      defaultButton: 0
    });
    if (!result.button.accept || !result.button.actions.includes('delete')) {
      return;
    }
    try {
      const deleted = await this._api.delete<ICheckpointsDeleted>(endpoint(path));
      Notification.success(deletedText(trans, deleted), { autoClose: 5000 });
    } catch (error) {
      const detail = error instanceof ApiError ? error.detail : String(error);
      await showErrorMessage(trans.__('The checkpoints of %1 were not deleted', question.name), {
        message: detail
      });
    }
  }

  private _disposed = false;
  private _recent = new RecentKeys(5000);
  private _questions = new SerialGate();
}

function body(message: string, consequence: string): Widget {
  const node = document.createElement('div');
  node.className = 'gpushift-checkpoint-cleanup';
  for (const text of [message, consequence]) {
    const paragraph = document.createElement('p');
    paragraph.textContent = text;
    node.appendChild(paragraph);
  }
  return new Widget({ node });
}
