/**
 * What the user reads after a restore (pure).
 */
import { NoticeType } from './phases';
import { IRestoreResult } from './types';

function names(list: readonly string[], max = 4): string {
  const shown = list.slice(0, max).join(', ');
  return list.length > max ? `${shown} and ${list.length - max} more` : shown;
}

export function describeRestore(result: IRestoreResult): {
  message: string;
  type: NoticeType;
  details: string | null;
} {
  const restored = result.restored ?? [];
  const missing = result.not_restored ?? [];
  const details = [
    restored.length ? `Restored: ${restored.join(', ')}` : 'Nothing was restored.',
    ...missing.map(m => `Not restored: ${m.name} — ${m.reason}`),
    result.detail ? `\n${result.detail}` : ''
  ]
    .join('\n')
    .trim();
  if (!result.ok) {
    return {
      message: `Your variables were not restored: ${result.detail || 'the restore failed'}.`,
      type: 'error',
      details
    };
  }
  if (missing.length) {
    return {
      message: `Restored ${restored.length} variable(s); ${missing.length} not restored: ${names(
        missing.map(m => m.name)
      )}.`,
      type: 'warning',
      details
    };
  }
  if (!restored.length) {
    return { message: 'Moved. There were no variables to restore.', type: 'success', details: null };
  }
  return {
    message: `Moved. Restored ${restored.length} variable(s): ${names(restored)}.`,
    type: 'success',
    details
  };
}
