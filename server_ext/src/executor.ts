/**
 * The notebook cell executor: on a CPU pod a cell that needs a GPU does not start until
 * the user chose. It replaces JupyterLab's default executor (disabled in package.json)
 * and runs cells with JupyterLab's own `runCell`, so everything else stays as it was.
 */
import { Notification } from '@jupyterlab/apputils';
import { Cell, CodeCell, ICodeCellModel } from '@jupyterlab/cells';
import { INotebookCellExecutor, NotebookPanel, runCell } from '@jupyterlab/notebook';

import { afterClassify, answerAtFirstHit, beforeRun, ICellContext } from './decision';
import { askAboutGpuCell } from './gpuDialog';
import { detectCudaError, IOutputLike } from './cudaErrors';
import { TranslationBundle } from './i18n';
import { QuietNotebooks } from './quietNotebooks';
import { unsavedText, willStopText } from './willStop';
import { SerialGate } from './serialGate';
import { IMigrationService } from './tokens';
import { IClassification } from './types';

/** The class of a cell held for a move, and its prompt meanwhile (`[⏳]:`). */
export const HELD_CLASS = 'gpushift-held';
export const HELD_PROMPT = '⏳';

export interface IExecutorOptions {
  service: IMigrationService;
  quiet: QuietNotebooks;
  trans: TranslationBundle;
  /** The notebook panel of a model (to checkpoint its kernel when moving). */
  findPanel: (cell: Cell) => NotebookPanel | null;
}

/** What the gate hands back: the running cell's promise, boxed so it is not awaited. */
interface IStarted {
  execution: Promise<boolean>;
}

export class GpuAwareCellExecutor implements INotebookCellExecutor {
  constructor(private readonly _options: IExecutorOptions) {
    _options.service.changed.connect(this._releaseHeld, this);
  }

  async runCell(options: INotebookCellExecutor.IRunCellOptions): Promise<boolean> {
    const key = options.sessionContext?.path ?? 'notebook';
    // Decide cell by cell in notebook order; each cell is handed to the kernel before
    // the next one is decided, but the gate does not wait for it to finish.
    const started = await this._gate.run(key, () => this._decideAndStart(options));
    return started.execution;
  }

  private async _decideAndStart(
    options: INotebookCellExecutor.IRunCellOptions
  ): Promise<IStarted> {
    const { service } = this._options;
    const cell = options.cell;
    const code = cell.model.type === 'code' ? cell.model.sharedModel.getSource() : '';
    const path = options.sessionContext?.path ?? '';
    const kernelId = options.sessionContext?.session?.kernel?.id ?? null;
    const ctx: ICellContext = {
      pod: service.pod,
      settings: service.settings,
      migrating: service.migrating,
      quietNotebook: this._options.quiet.has(path),
      hasCode: cell.model.type === 'code' && code.trim() !== ''
    };
    const before = beforeRun(ctx);
    const firstHit = answerAtFirstHit(ctx, before);
    switch (before) {
      case 'run':
        return this._start(options, null);
      case 'hold':
        this._tellHeld();
        return { execution: Promise.resolve(false) };
      case 'track':
        // GPU pod: the cell starts now; the classifier says whether it is GPU work.
        return this._start(options, service.classify(code, kernelId, firstHit));
      case 'classify':
        break;
    }
    const result = await service.classify(code, kernelId, firstHit);
    switch (afterClassify(ctx, result)) {
      case 'run':
        return this._start(options, Promise.resolve(result));
      case 'move':
        return this._move(options, code, 'auto');
      case 'ask':
        break;
    }
    const trans = this._options.trans;
    const willStop = willStopText(trans, await service.podSessions());
    // The variables take a pickling to look at: the dialog opens at once and says
    // which would not come back as soon as the kernels have answered.
    const unsaved = service.podSessions(true).then(pod => unsavedText(trans, pod));
    const choice = await askAboutGpuCell(trans, result!.reasons, willStop, unsaved);
    switch (choice) {
      case 'move':
        return this._move(options, code, 'auto');
      case 'quiet':
        this._options.quiet.add(path);
        return this._start(options, Promise.resolve(result));
      case 'cpu':
        return this._start(options, Promise.resolve(result));
      case 'cancel':
        return { execution: Promise.resolve(false) };
    }
  }

  /** Run the cell with JupyterLab's runCell; report GPU activity and CUDA errors. */
  private _start(
    options: INotebookCellExecutor.IRunCellOptions,
    classification: Promise<IClassification | null> | null
  ): IStarted {
    const { service } = this._options;
    const kernelId = options.sessionContext?.session?.kernel?.id ?? null;
    const onGpu = service.pod.kind === 'gpu';
    let reported = false;
    let finished = false;
    if (onGpu && classification && kernelId) {
      void classification.then(result => {
        if (!result?.needs_gpu) {
          return;
        }
        service.reportActivity(kernelId, true);
        if (finished) {
          // It was over before the classifier answered: still GPU work, just done.
          service.reportActivity(kernelId, false);
        } else {
          reported = true;
        }
      });
    }
    const execution = runCell(options).finally(() => {
      finished = true;
      if (reported && kernelId) {
        service.reportActivity(kernelId, false);
      }
    });
    if (service.pod.kind === 'cpu') {
      // runCell rejects when the cell raised: that is exactly when to look.
      const look = () => this._offerMoveOnCudaError(options);
      void execution.then(look, look);
    }
    return { execution };
  }

  private async _move(
    options: INotebookCellExecutor.IRunCellOptions,
    code: string,
    reason: 'auto' | 'manual'
  ): Promise<IStarted> {
    const panel = this._options.findPanel(options.cell);
    this._hold(options.cell);
    const accepted = await this._options.service.move('gpu', {
      reason,
      panel,
      pendingCell: { cell_id: options.cell.model.id, code }
    });
    if (!accepted) {
      this._releaseHeld();
    }
    return { execution: Promise.resolve(false) };
  }

  /** The cell that asked for the move shows that it waits for it: `[⏳]:`. */
  private _hold(cell: Cell): void {
    this._held.add(cell);
    cell.addClass(HELD_CLASS);
    if (cell instanceof CodeCell) {
      cell.setPrompt(HELD_PROMPT);
    }
  }

  /** Once no move is in flight the held cells look as before (the restore runs the one
   * the move was for: its prompt is then the kernel's). */
  private _releaseHeld(): void {
    if (this._options.service.migrating || this._held.size === 0) {
      return;
    }
    for (const cell of this._held) {
      cell.removeClass(HELD_CLASS);
      if (!cell.isDisposed && cell instanceof CodeCell && cell.promptNode?.textContent?.includes(HELD_PROMPT)) {
        cell.setPrompt(`${cell.model.executionCount ?? ''}`);
      }
    }
    this._held.clear();
  }

  /** A CUDA error in the output of a cell that ran on a CPU pod offers the move. */
  private _offerMoveOnCudaError(options: INotebookCellExecutor.IRunCellOptions): void {
    const cell = options.cell;
    if (cell.model.type !== 'code') {
      return;
    }
    const outputs = (cell.model as ICodeCellModel).outputs.toJSON() as IOutputLike[];
    const found = detectCudaError(this._options.trans, outputs);
    if (!found || this._options.service.migrating) {
      return;
    }
    const code = cell.model.sharedModel.getSource();
    const trans = this._options.trans;
    Notification.warning(trans.__('This cell needs a GPU: %1.', found.summary), {
      autoClose: false,
      actions: [
        {
          label: trans.__('Move to GPU and run it there'),
          callback: () => void this._move(options, code, 'auto')
        },
        { label: trans.__('Dismiss'), callback: () => undefined, displayType: 'link' }
      ]
    });
  }

  /** One notice for a batch of cells held back ("run all" during a move). */
  private _tellHeld(): void {
    const now = Date.now();
    if (now - this._heldNoticeAt < 5000) {
      return;
    }
    this._heldNoticeAt = now;
    Notification.warning(
      this._options.trans.__('A move between pods is in progress: cells do not run until it is done.'),
      { autoClose: 8000 }
    );
  }

  private _gate = new SerialGate();
  private _held = new Set<Cell>();
  private _heldNoticeAt = 0;
}
