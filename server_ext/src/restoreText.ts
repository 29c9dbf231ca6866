/**
 * What the user reads after a restore (pure).
 */
import { TranslationBundle } from './i18n';
import { NoticeType } from './phases';
import { IRestoreResult } from './types';

/** "a, b, c, d and 2 more". */
export function names(trans: TranslationBundle, list: readonly string[], max = 4): string {
  const shown = list.slice(0, max).join(', ');
  return list.length > max ? trans.__('%1 and %2 more', shown, list.length - max) : shown;
}

/** The "Details" text: what came back, what did not and why. */
export function restoreDetails(trans: TranslationBundle, result: IRestoreResult): string {
  const restored = result.restored ?? [];
  const missing = result.not_restored ?? [];
  return [
    restored.length ? trans.__('Restored: %1', restored.join(', ')) : trans.__('Nothing was restored.'),
    ...missing.map(m => trans.__('Not restored: %1 — %2', m.name, m.reason)),
    result.detail ? `\n${result.detail}` : ''
  ]
    .join('\n')
    .trim();
}

export function describeRestore(
  trans: TranslationBundle,
  result: IRestoreResult
): {
  message: string;
  type: NoticeType;
  details: string | null;
} {
  const restored = result.restored ?? [];
  const missing = result.not_restored ?? [];
  const details = restoreDetails(trans, result);
  if (!result.ok) {
    return {
      message: trans.__(
        'Your variables were not restored: %1.',
        result.detail || trans.__('the restore failed')
      ),
      type: 'error',
      details
    };
  }
  if (missing.length) {
    return {
      message: trans._n(
        'Restored %1 variable; %2 not restored: %3.',
        'Restored %1 variables; %2 not restored: %3.',
        restored.length,
        missing.length,
        names(
          trans,
          missing.map(m => m.name)
        )
      ),
      type: 'warning',
      details
    };
  }
  if (!restored.length) {
    return {
      message: trans.__('Moved. There were no variables to restore.'),
      type: 'success',
      details: null
    };
  }
  return {
    message: trans._n(
      'Moved. Restored %1 variable: %2.',
      'Moved. Restored %1 variables: %2.',
      restored.length,
      names(trans, restored)
    ),
    type: 'success',
    details
  };
}

/**
 * The held cell to run after a restore: only the server's answer counts, and only when
 * the restore succeeded. A cell run over a failed restore (a module missing in the new
 * image) could act on half a state — `df.to_csv(open('out.csv', 'w'))` truncates the file
 * before it fails — so it stays held, and the user is told the restore failed.
 */
export function heldCellToRun(result: IRestoreResult): { cell_id: string } | null {
  if (!result.ok || result.recovered) {
    return null;
  }
  return result.pending_cell ?? null;
}

/**
 * A held cell is run at once only when its restore is fresh: the server restores a move
 * without a browser, and a cell held since — the user may have come back hours later —
 * is offered ("Run the held cell"), never run behind their back.
 */
export const HELD_CELL_FRESH_SECONDS = 120;

export function heldCellIsStale(result: IRestoreResult, nowSeconds: number): boolean {
  return (
    result.restored_on_server === true &&
    typeof result.restored_at === 'number' &&
    nowSeconds - result.restored_at > HELD_CELL_FRESH_SECONDS
  );
}
