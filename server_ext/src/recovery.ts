/**
 * What the page does with the server's migration record, and what the user reads after a
 * move that could not complete (pure).
 *
 * Two cases give a fresh kernel the saved state: a move in phase `restoring` (the normal
 * end of a move: restore, then run the held cell), and a move that ended rolled back or
 * failed after the old pod was already replaced (`recoverable` from GET /migration: no GPU
 * was free, the guard put the notebook back on CPU; the new pod's kernel is empty). The
 * second is a recovery: the state comes back, the held cell is NOT run (it asked for a
 * GPU this pod does not have), and the user is told why and offered to try again.
 */
import { NoticeType, shorten } from './phases';

export { shorten };
import { IMigration, IRestoreResult, Target } from './types';

/** JupyterLab's notifications truncate longer messages (Notification docs). */
export const NOTICE_MAX_CHARS = 140;

export type RestoreKind = 'restore' | 'recover';

/**
 * Whether the page should restore state for migration `m` now, and which way; null: not
 * now. Nothing while the server is away (the pod is being replaced) or for a migration
 * this page handled already.
 */
export function restoreKindOf(
  m: IMigration | null,
  serverDown: boolean,
  handled: ReadonlySet<string>
): RestoreKind | null {
  if (!m || serverDown || handled.has(m.id)) {
    return null;
  }
  if (m.phase === 'restoring') {
    return 'restore';
  }
  if (m.recoverable === true && (m.phase === 'rolled_back' || m.phase === 'failed')) {
    return 'recover';
  }
  return null;
}

function podName(target: Target): string {
  return target === 'gpu' ? 'GPU' : 'CPU';
}

/** The pod the notebook is on after a move to `target` that did not complete. */
function otherPod(target: Target): string {
  return target === 'gpu' ? 'CPU' : 'GPU';
}


/** Why the move did not complete, in a sentence: the guard's or scheduler's reason. */
export function failureReason(m: IMigration): string {
  return shorten(m.error || (m.phase === 'rolled_back' ? 'the new pod did not start' : 'no reason given'), 1000);
}

export interface IRecoveryText {
  message: string;
  type: NoticeType;
  /** The full story for the "Details" dialog. */
  details: string;
  /** Whether a "Try again" (the same move) makes sense. */
  canRetry: boolean;
}

/**
 * What the user reads after the state of a move that did not complete was restored on
 * this pod (`result`: the answer of POST /restore).
 */
export function describeRecovery(m: IMigration, result: IRestoreResult): IRecoveryText {
  const restored = result.restored ?? [];
  const missing = result.not_restored ?? [];
  const ended = m.phase === 'rolled_back' ? 'rolled back' : 'failed';
  const here = otherPod(m.target);
  const held = m.pending_cell ? m.pending_cell : null;
  const cellLine = held
    ? `The cell that asked for the move was NOT run: it needs a ${podName(m.target)}. ` +
      'Run it again once the move succeeds.'
    : '';
  const details = [
    `The move to a ${podName(m.target)} pod was ${ended}: ${failureReason(m)}.`,
    result.ok
      ? `Your variables were restored on this ${here} pod from the checkpoint taken before the move.`
      : `Your variables could not be restored: ${result.detail || 'the restore failed'}. ` +
        'The checkpoint is still on the workspace volume.',
    restored.length ? `Restored: ${restored.join(', ')}` : result.ok ? 'Nothing was restored.' : '',
    ...missing.map(v => `Not restored: ${v.name} — ${v.reason}`),
    cellLine,
    `Migration ${m.id}.`
  ]
    .filter(line => line)
    .join('\n');

  let what: string;
  let type: NoticeType;
  if (!result.ok) {
    what = `Variables NOT restored on ${here}.`;
    type = 'error';
  } else if (missing.length) {
    what = `Restored ${restored.length} variable(s) on ${here}, ${missing.length} not.`;
    type = 'warning';
  } else {
    what = `Restored ${restored.length} variable(s) on ${here}.`;
    type = 'warning'; // the user did not get the GPU they asked for
  }
  const cell = held ? ' Held cell NOT run.' : '';
  const head = `Move to ${podName(m.target)} ${ended}: `;
  const tail = `. ${what}${cell}`;
  const room = NOTICE_MAX_CHARS - head.length - tail.length;
  return {
    message: `${head}${shorten(failureReason(m), room)}${tail}`,
    type,
    details,
    canRetry: m.target === 'gpu' || m.target === 'cpu'
  };
}

/** The body of POST /migrate for "Try again": the same move, the same held cell. */
export function retryRequest(m: IMigration): {
  target: Target;
  reason: 'auto' | 'manual';
  pendingCell: { cell_id: string; code: string } | null;
} {
  const cell = m.pending_cell;
  return {
    target: m.target,
    reason: m.reason === 'auto' ? 'auto' : 'manual',
    pendingCell: cell && cell.cell_id ? { cell_id: cell.cell_id, code: cell.code } : null
  };
}
