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
import { TranslationBundle } from './i18n';
import { isTerminal, NoticeType, shorten } from './phases';
import { IMigration, IRestoreResult, Target } from './types';

export { shorten };

/** JupyterLab's notifications truncate longer messages (Notification docs). */
export const NOTICE_MAX_CHARS = 140;

export type RestoreKind = 'restore' | 'recover';

/**
 * Whether the page should restore state for migration `m` now, and which way; null: not
 * now. Nothing while the server is away (the pod is being replaced) or for a migration
 * this page handled already.
 *
 * `watched`: the migrations this page saw under way. A page that watched a move collects
 * its restore even after another tab did (`restored_on_server` is then false): its own
 * notebook's kernel went with the old pod, and only the restore's answer names the one
 * that holds the state. A tab that polls later than another (a slower or background one)
 * otherwise stayed on "No Kernel".
 */
export function restoreKindOf(
  m: IMigration | null,
  serverDown: boolean,
  handled: ReadonlySet<string>,
  watched: ReadonlySet<string> = new Set()
): RestoreKind | null {
  if (!m || serverDown || handled.has(m.id)) {
    return null;
  }
  // The server restores an arriving move by itself; a page that saw it only after it
  // ended still collects what it did (and the held cell).
  if (m.phase === 'restoring' || m.restored_on_server === true) {
    return 'restore';
  }
  if (m.recoverable === true && (m.phase === 'rolled_back' || m.phase === 'failed')) {
    return 'recover';
  }
  // Ended after a restore on the new pod (a move that found the Notebook as it wanted
  // it ended without one: its kernel is still there).
  if (watched.has(m.id) && isTerminal(m.phase) && m.restore_report) {
    return 'restore';
  }
  return null;
}

/** Why the move did not complete, in a sentence: the guard's or scheduler's reason. */
export function failureReason(trans: TranslationBundle, m: IMigration): string {
  const fallback =
    m.phase === 'rolled_back' ? trans.__('the new pod did not start') : trans.__('no reason given');
  return shorten(m.error || fallback, 1000);
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
export function describeRecovery(
  trans: TranslationBundle,
  m: IMigration,
  result: IRestoreResult
): IRecoveryText {
  const restored = result.restored ?? [];
  const missing = result.not_restored ?? [];
  const rolledBack = m.phase === 'rolled_back';
  const toGpu = m.target === 'gpu';
  // The pod the notebook is on after a move that did not complete: the one it left.
  const here = toGpu ? trans.__('CPU') : trans.__('GPU');
  const wanted = toGpu ? trans.__('GPU') : trans.__('CPU');
  const held = m.pending_cell ? m.pending_cell : null;
  const reason = failureReason(trans, m);
  const details = [
    rolledBack
      ? trans.__('The move to a %1 pod was rolled back: %2.', wanted, reason)
      : trans.__('The move to a %1 pod failed: %2.', wanted, reason),
    result.ok
      ? trans.__('Your variables were restored on this %1 pod from the checkpoint taken before the move.', here)
      : trans.__(
          'Your variables could not be restored: %1. The checkpoint is still on the workspace volume.',
          result.detail || trans.__('the restore failed')
        ),
    restored.length
      ? trans.__('Restored: %1', restored.join(', '))
      : result.ok
        ? trans.__('Nothing was restored.')
        : '',
    ...missing.map(v => trans.__('Not restored: %1 — %2', v.name, v.reason)),
    held
      ? trans.__(
          'The cell that asked for the move was NOT run: it needs a %1. Run it again once the move succeeds.',
          wanted
        )
      : '',
    trans.__('Migration %1.', m.id)
  ]
    .filter(line => line)
    .join('\n');

  let what: string;
  let type: NoticeType;
  if (!result.ok) {
    what = trans.__('Variables NOT restored on %1.', here);
    type = 'error';
  } else if (missing.length) {
    what = trans._n(
      'Restored %1 variable on %2, %3 not.',
      'Restored %1 variables on %2, %3 not.',
      restored.length,
      here,
      missing.length
    );
    type = 'warning';
  } else {
    what = trans._n('Restored %1 variable on %2.', 'Restored %1 variables on %2.', restored.length, here);
    type = 'warning'; // the user did not get the GPU they asked for
  }
  const cell = held ? ` ${trans.__('Held cell NOT run.')}` : '';
  const head = rolledBack
    ? trans.__('Move to %1 rolled back: ', wanted)
    : trans.__('Move to %1 failed: ', wanted);
  const tail = `. ${what}${cell}`;
  const room = NOTICE_MAX_CHARS - head.length - tail.length;
  return {
    message: `${head}${shorten(reason, room)}${tail}`,
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
