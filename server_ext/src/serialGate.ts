/**
 * Runs async steps one after the other per key (pure). "Run all" asks the executor for
 * every cell at once; each cell first awaits the classifier, and answers can come back
 * in any order. Deciding cells one at a time per notebook keeps them reaching the kernel
 * in notebook order.
 */
export class SerialGate {
  private _tails = new Map<string, Promise<unknown>>();

  /** Run `step` once every earlier step of `key` has settled; resolves with its result. */
  run<T>(key: string, step: () => Promise<T>): Promise<T> {
    const previous = this._tails.get(key) ?? Promise.resolve();
    const result = previous.then(step, step);
    const tail = result.catch(() => undefined);
    this._tails.set(key, tail);
    void tail.then(() => {
      if (this._tails.get(key) === tail) {
        this._tails.delete(key); // nothing queued behind it: forget the key
      }
    });
    return result;
  }

  /** Keys with steps queued or running (for tests). */
  get busyKeys(): string[] {
    return [...this._tails.keys()];
  }
}
