/**
 * How long the migration service waits before it asks the server again (pure).
 *
 * The page follows a move by polling `GET api_extension`. While the pod is replaced the
 * request fails at the route or proxy in front of it (502/503/504, or no answer), and the
 * first answer from the new pod's server is what starts the page's restore and, after it,
 * the held cell: every millisecond of that wait is the user's. So while a move is in
 * flight and the server is down the page asks four times a second (a failed request costs
 * the route a fast 5xx, for the few seconds the pod is away); otherwise once a second while
 * something the user watches changes, and rarely when nothing does.
 */

/** Poll intervals (ms). */
export const POLL_MS = { quiet: 5000, gpu: 2000, busy: 1000, arriving: 250 };

export interface IPollState {
  /** A move is in flight (this page's or another's). */
  migrating: boolean;
  /** The last poll found no server (the pod is gone or not ready yet). */
  serverDown: boolean;
  /** The idle warning's countdown is showing. */
  idleWarning: boolean;
  /** The pod holds a GPU. */
  onGpu: boolean;
}

/** The delay before the next poll. */
export function pollDelay(state: IPollState): number {
  if (state.migrating && state.serverDown) {
    return POLL_MS.arriving;
  }
  if (state.migrating || state.serverDown || state.idleWarning) {
    return POLL_MS.busy;
  }
  return state.onGpu ? POLL_MS.gpu : POLL_MS.quiet;
}
