/**
 * Saves wait while a move replaces the pod. A save then reaches no server (the route
 * answers 503) and JupyterLab shows a "File Save Error" dialog; autosave runs into it on
 * every move that takes longer than its interval. So while a move is in flight, each open
 * document's save (autosave's and the user's alike) waits until the move is over and the
 * server answers, and then happens.
 *
 * Why per document and not `IDocumentManager.autosave = false`: JupyterLab writes that
 * switch into the user's settings, so a page closed during a move would leave autosave
 * off for good.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { PromiseDelegate } from '@lumino/coreutils';

import { IMigrationService } from './tokens';

export class SaveHold {
  constructor(
    private readonly _app: JupyterFrontEnd,
    private readonly _service: IMigrationService,
    private readonly _docs: IDocumentManager
  ) {
    _service.changed.connect(this._update, this);
    this._update();
  }

  /** Whether saves wait now. */
  get holding(): boolean {
    return this._clear !== null;
  }

  dispose(): void {
    this._service.changed.disconnect(this._update, this);
    this._clear?.resolve();
  }

  private _update(): void {
    const moving = this._service.migrating || this._service.serverDownSince !== null;
    if (this._service.migrating) {
      if (this._clear === null) {
        this._clear = new PromiseDelegate<void>();
        console.info('gpushift: saves wait for the move');
      }
      // Documents opened since the last look wait too.
      for (const widget of this._app.shell.widgets('main')) {
        const context = this._docs.contextForWidget(widget);
        if (context) {
          this._gate(context);
        }
      }
    } else if (!moving && this._clear !== null) {
      const clear = this._clear;
      this._clear = null;
      console.info('gpushift: the move is over; saves go ahead');
      clear.resolve();
    }
  }

  /**
   * Make `context.save` wait while a move is in flight (once per context), and never run
   * two saves of one document at once: a save asked for while another is under way (or
   * waits for the move) waits for it, and one waiting save serves every request made
   * meanwhile. Two saves at once race: the second compares the file on disk with what
   * it knew before the first wrote, and JupyterLab shows "File Changed" — which after a
   * move, when the held save and the next autosave meet, it did.
   */
  private _gate(context: DocumentRegistry.Context): void {
    if (this._gated.has(context)) {
      return;
    }
    this._gated.add(context);
    const save = context.save.bind(context);
    context.save = (): Promise<void> => {
      const queued = this._queued.get(context);
      if (queued) {
        return queued;
      }
      const running = this._running.get(context) ?? Promise.resolve();
      const next = (async () => {
        await running.catch(() => undefined);
        while (this._clear !== null) {
          await this._clear.promise;
        }
        this._queued.delete(context);
        if (context.isDisposed) {
          return;
        }
        const run = save();
        this._running.set(context, run);
        try {
          await run;
        } finally {
          if (this._running.get(context) === run) {
            this._running.delete(context);
          }
        }
      })();
      this._queued.set(context, next);
      return next;
    };
  }

  private _clear: PromiseDelegate<void> | null = null;
  private _gated = new WeakSet<DocumentRegistry.Context>();
  /** The save that waits to start, per document. */
  private _queued = new WeakMap<DocumentRegistry.Context, Promise<void>>();
  /** The save under way, per document. */
  private _running = new WeakMap<DocumentRegistry.Context, Promise<void>>();
}
