/**
 * What to do when JupyterLab loses its connection to the notebook server (pure). During
 * a move the server really is gone for a while (the pod is replaced): the move's progress
 * notification says so, and JupyterLab's connection-lost dialog would tell the user to
 * check their network. So the dialog is skipped while a move is in flight, and shortly
 * after it (connections opened before the move keep failing for a moment); at any other
 * time JupyterLab's own behaviour stands: JupyterHub's "restart your server" dialog when
 * the page runs under JupyterHub, else the default error dialog.
 */

/** After a move, failures of connections opened before it are still the move's. */
export const AFTER_MOVE_GRACE_MS = 30000;

export type ConnectionLostAction = 'skip' | 'hub' | 'default';

export interface IConnectionLostContext {
  /** When a move was last seen in flight (ms epoch; now while one is); null: never. */
  lastMoveAt: number | null;
  /** The page runs under JupyterHub (its `hubPrefix` page option is set). */
  underHub: boolean;
  /** Now, ms epoch. */
  now: number;
}

export function connectionLostAction(ctx: IConnectionLostContext): ConnectionLostAction {
  if (ctx.lastMoveAt !== null && ctx.now - ctx.lastMoveAt <= AFTER_MOVE_GRACE_MS) {
    return 'skip';
  }
  return ctx.underHub ? 'hub' : 'default';
}
