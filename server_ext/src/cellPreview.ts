/**
 * Classifies the cell a user is on before they run it, so that running it is a lookup on
 * the server (`KernelClassifier.preview`): the walk of a long cell is paid while the user
 * reads or types, not between Shift+Enter and the cell starting. Only where the run would
 * ask the classifier (a CPU pod with automatic moves on, see `beforeRun`). A preview is a
 * head start, never an answer: the run asks again and gets the same verdict either way.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { Cell } from '@jupyterlab/cells';
import { INotebookTracker } from '@jupyterlab/notebook';
import { Signal } from '@lumino/signaling';

import { beforeRun } from './decision';
import { PreviewScheduler } from './previewScheduler';
import { QuietNotebooks } from './quietNotebooks';
import { IMigrationService } from './tokens';

/** What a preview sends: the cell's text and its kernel. */
interface IPreviewItem {
  code: string;
  kernelId: string;
}

export class CellPreview {
  constructor(
    private readonly _tracker: INotebookTracker,
    private readonly _service: IMigrationService,
    private readonly _quiet: QuietNotebooks,
    delayMs?: number
  ) {
    this._scheduler = new PreviewScheduler<IPreviewItem>(item => {
      this._waiting = false;
      void _service.preview(item.code, item.kernelId);
    }, delayMs);
    _tracker.activeCellChanged.connect(this._watch, this);
    // A cell the user paused on before its kernel was up, or before the page knew the
    // pod's kind, is previewed once they are.
    _service.changed.connect(this._retry, this);
    // A cell run (this one or another) may change the kernel's memory: the cell is
    // previewed again in the memory after it.
    _service.classified.connect(this._ran, this);
    this._watch(_tracker, _tracker.activeCell);
  }

  /** Stop previewing (idempotent): every connection made with this as its receiver goes. */
  dispose(): void {
    this._scheduler.cancel();
    Signal.clearData(this);
    this._cell = null;
    this._session = null;
  }

  /** The user moved to another cell: preview it after the pause, and follow its edits. */
  private _watch(_: unknown, cell: Cell | null): void {
    this._follow(cell);
    this._edited();
  }

  private _follow(cell: Cell | null): void {
    this._cell?.model.contentChanged.disconnect(this._edited, this);
    this._session?.statusChanged.disconnect(this._retry, this);
    this._cell = cell;
    // The tracker's notebook (the active cell's): a cell of a notebook being built has
    // no panel among its ancestors yet.
    this._session = cell ? (this._tracker.currentWidget?.sessionContext ?? null) : null;
    cell?.model.contentChanged.connect(this._edited, this);
    this._session?.statusChanged.connect(this._retry, this);
  }

  private _ran(_: unknown, kernelId: string): void {
    if (this._cell && this._session?.session?.kernel?.id === kernelId) {
      this._edited();
    }
  }

  private _edited(): void {
    this._waiting = true;
    this._scheduler.changed(() => this._item());
  }

  /** Something a preview depends on changed (the kernel's status, the pod): try again if
   * the last pause sent nothing and there is something to send now. (Not on every change
   * regardless: on a GPU pod, or for a quiet notebook, each refresh of the service would
   * arm a timer that finds nothing to send.) */
  private _retry(): void {
    if (this._waiting && !this._scheduler.pending && this._item()) {
      this._edited();
    }
  }

  /** The active cell's text and kernel if its run would ask the classifier, else null. */
  private _item(): IPreviewItem | null {
    const cell = this._cell;
    if (!cell || cell.isDisposed || cell.model.type !== 'code') {
      return null;
    }
    const session = this._session;
    const kernelId = session?.session?.kernel?.id;
    if (!session || !kernelId) {
      return null;
    }
    const code = cell.model.sharedModel.getSource();
    const service = this._service;
    const decision = beforeRun({
      pod: service.pod,
      settings: service.settings,
      migrating: service.migrating,
      quietNotebook: this._quiet.has(session.path),
      hasCode: code.trim() !== ''
    });
    return decision === 'classify' ? { code, kernelId } : null;
  }

  private readonly _scheduler: PreviewScheduler<IPreviewItem>;
  private _cell: Cell | null = null;
  private _session: ISessionContext | null = null;
  /** The last pause on this cell sent nothing (yet). */
  private _waiting = false;
}
