/**
 * When to ask the classifier about a cell ahead of its run (pure timing, no JupyterLab):
 * once the user has paused on a cell (selected it, or typed in it and then stopped) for
 * `delayMs`. A newer change restarts the wait, so typing sends nothing until it pauses.
 */

/** How long a pause on a cell must last before it is classified ahead of its run: long
 * enough that typing sends nothing, short enough that a user rarely runs a cell sooner. */
export const PREVIEW_DELAY_MS = 300;

export class PreviewScheduler<T> {
  /**
   * @param _send what to do with the item when a pause ends.
   * @param _delayMs how long the pause must last.
   */
  constructor(
    private readonly _send: (item: T) => void,
    private readonly _delayMs: number = PREVIEW_DELAY_MS
  ) {}

  /** Something changed: after the pause, `read()` the item as it is then and send it
   * (null: nothing to send, e.g. the cell is empty or the pod is a GPU pod). */
  changed(read: () => T | null): void {
    this.cancel();
    this._timer = setTimeout(() => {
      this._timer = null;
      const item = read();
      if (item !== null) {
        this._send(item);
      }
    }, this._delayMs);
  }

  /** Forget the wait in progress (the cell is running, or the notebook closed). */
  cancel(): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  /** A pause is being waited for. */
  get pending(): boolean {
    return this._timer !== null;
  }

  private _timer: ReturnType<typeof setTimeout> | null = null;
}
