/**
 * Attach kishu (the state saver) to each notebook's kernel once it is ready, so a move
 * can save the notebook's variables.
 */
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

import { IMigrationService } from './tokens';

export class AttachWatcher {
  constructor(
    private readonly _service: IMigrationService,
    tracker: INotebookTracker,
    /** Paths being restored: the restore flow attaches them itself afterwards. */
    private readonly _skip: () => ReadonlySet<string>
  ) {
    tracker.widgetAdded.connect((_, panel) => this._watch(panel));
    tracker.forEach(panel => this._watch(panel));
    _service.changed.connect(this._retryAll, this);
    this._tracker = tracker;
  }

  private _watch(panel: NotebookPanel): void {
    const context = panel.sessionContext;
    const check = () => void this._maybeAttach(panel);
    context.kernelChanged.connect(check);
    context.statusChanged.connect(check);
    panel.disposed.connect(() => {
      context.kernelChanged.disconnect(check);
      context.statusChanged.disconnect(check);
    });
    check();
  }

  /** The pod kind may become known after the kernels were ready. */
  private _retryAll(): void {
    this._tracker.forEach(panel => void this._maybeAttach(panel));
  }

  private async _maybeAttach(panel: NotebookPanel): Promise<void> {
    const pod = this._service.pod.kind;
    if (pod !== 'cpu' && pod !== 'gpu') {
      return;
    }
    const kernel = panel.sessionContext.session?.kernel;
    if (!kernel || kernel.status !== 'idle' || this._attached.has(kernel.id)) {
      return;
    }
    const path = panel.sessionContext.path || panel.context.path;
    if (this._skip().has(path) || this._service.migration?.phase === 'restoring') {
      return;
    }
    this._attached.add(kernel.id);
    await this._service.attach(kernel.id, path);
  }

  private _tracker: INotebookTracker;
  private _attached = new Set<string>();
}
