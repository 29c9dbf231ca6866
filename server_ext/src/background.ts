/**
 * The current notebook's background checkpoint (`GET api_extension/background`), for the
 * status bar item: asked every 10 s while a notebook is current, soon after one of its
 * cells finished, and more often while one is being saved; not at all without a current
 * notebook. Errors are quiet (one console warning).
 */
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';

import { ApiClient, ApiError } from './api';
import { IBackgroundReport, readBackground } from './backgroundText';

/** Between two questions while a notebook is current. */
export const POLL_MS = 10000;
/** After a cell finished, and while a background checkpoint is running. */
export const SOON_MS = 2000;

export class BackgroundWatcher {
  constructor(
    private readonly _tracker: INotebookTracker,
    private readonly _api: ApiClient
  ) {
    _tracker.currentChanged.connect(this._onCurrent, this);
    NotebookActions.executed.connect(this._onExecuted, this);
    this._onCurrent();
  }

  /** The current notebook kernel's last background checkpoint; null: none known. */
  get report(): IBackgroundReport | null {
    return this._report;
  }

  /** `report` changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Ask again now (the user's background setting changed), if a notebook is current. */
  refresh(): void {
    if (this._tracker.currentWidget) {
      this._schedule(0);
    }
  }

  dispose(): void {
    this._schedule(null);
    this._tracker.currentChanged.disconnect(this._onCurrent, this);
    NotebookActions.executed.disconnect(this._onExecuted, this);
    Signal.clearData(this);
  }

  private _onCurrent(): void {
    this._setReport(null, null);
    this._schedule(this._tracker.currentWidget ? 0 : null);
  }

  private _onExecuted(_: unknown, args: { notebook: unknown }): void {
    if (this._tracker.currentWidget?.content === args.notebook) {
      this._schedule(SOON_MS);
    }
  }

  /** Ask in `ms` (replacing the question planned); null: ask no more. */
  private _schedule(ms: number | null): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    if (ms !== null) {
      this._timer = setTimeout(() => void this._poll(), ms);
    }
  }

  private async _poll(): Promise<void> {
    this._timer = null;
    const panel: NotebookPanel | null = this._tracker.currentWidget;
    if (!panel) {
      return;
    }
    const kernelId = panel.sessionContext.session?.kernel?.id ?? null;
    let next = POLL_MS;
    if (kernelId === null) {
      this._setReport(null, null);
    } else {
      try {
        const answer = await this._api.get<unknown>(
          `background?kernel_id=${encodeURIComponent(kernelId)}`,
          5000
        );
        if (this._tracker.currentWidget !== panel) {
          return; // another notebook's turn: asked for already
        }
        const report = readBackground(answer);
        this._setReport(kernelId, report);
        if (report?.state === 'running' || report?.state === 'busy') {
          next = SOON_MS;
        }
      } catch (error) {
        if (this._tracker.currentWidget !== panel) {
          return;
        }
        if (error instanceof ApiError && error.status === 404) {
          this._setReport(null, null); // a kernel the server does not run (yet)
        } else if (!this._warned) {
          this._warned = true;
          console.warn('gpushift: the background checkpoint state is not known', error);
        }
      }
    }
    // Still the current notebook, and no other question planned meanwhile.
    if (this._tracker.currentWidget === panel && this._timer === null) {
      this._schedule(next);
    }
  }

  private _setReport(kernelId: string | null, report: IBackgroundReport | null): void {
    const key = JSON.stringify([kernelId, report]);
    if (key !== this._key) {
      this._key = key;
      this._report = report;
      this._changed.emit();
    }
  }

  private _report: IBackgroundReport | null = null;
  private _key = JSON.stringify([null, null]);
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _warned = false;
  private readonly _changed = new Signal<this, void>(this);
}
