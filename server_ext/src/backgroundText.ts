/**
 * Background checkpoints (pure): the server saves a kernel's variables on its own after
 * the user's cells, while the kernel is idle (`GET api_extension/background?kernel_id=`).
 * What its answer is, and the status bar item's words for it. The polling is in
 * background.ts.
 */
import { TranslationBundle } from './i18n';
import { formatSavedAt } from './resumeText';

export type BackgroundState =
  | 'none'
  | 'running'
  | 'saved'
  | 'skipped'
  | 'failed'
  | 'cancelled'
  | 'off'
  | 'busy';

const STATES: ReadonlySet<string> = new Set([
  'none',
  'running',
  'saved',
  'skipped',
  'failed',
  'cancelled',
  'off',
  'busy'
]);

/** The kernel's last background checkpoint, as the server reports it. */
export interface IBackgroundReport {
  interval_s: number;
  max_state_mib: number;
  /** The user's own interval (their setting); 0: they turned them off; null: none. */
  user_interval_s?: number | null;
  state: BackgroundState;
  /** Epoch seconds. */
  at?: number;
  /** Why (skipped, failed, cancelled, off). */
  why?: string;
  commit_id?: string;
  /** How many variables were saved (saved). */
  variables?: number;
  fork_ms?: number;
  commit_s?: number;
  state_bytes?: number;
}

/** The server's answer when it is one (a known state); null otherwise. */
export function readBackground(data: unknown): IBackgroundReport | null {
  if (data === null || typeof data !== 'object') {
    return null;
  }
  const report = data as Record<string, unknown>;
  if (typeof report.state !== 'string' || !STATES.has(report.state)) {
    return null;
  }
  return report as unknown as IBackgroundReport;
}

/**
 * What the status bar item says: `line` for its tooltip ("" for nothing), and `mark`,
 * the state the item shows at a glance: "warn" when the variables were not saved in the
 * background (skipped or failed), "" otherwise.
 */
export interface IBackgroundText {
  line: string;
  mark: 'warn' | '';
}

/** The server's reason as a clause: without its final full stop. */
function clause(why: string | undefined): string {
  return (why ?? '').trim().replace(/\.+$/, '');
}

export function backgroundText(
  trans: TranslationBundle,
  report: IBackgroundReport | null,
  now: Date = new Date()
): IBackgroundText {
  if (!report) {
    return { line: '', mark: '' };
  }
  const why = clause(report.why);
  switch (report.state) {
    case 'saved': {
      // "3 variables saved 12:03 (background)."
      const when = formatSavedAt(trans, report.at, now);
      const count = report.variables;
      let line: string;
      if (typeof count === 'number') {
        line = when
          ? trans._n('%1 variable saved %2 (background).', '%1 variables saved %2 (background).', count, when)
          : trans._n('%1 variable saved (background).', '%1 variables saved (background).', count);
      } else {
        line = when
          ? trans.__('Variables saved %1 (background).', when)
          : trans.__('Variables saved (background).');
      }
      return { line, mark: '' };
    }
    case 'running':
    case 'busy':
      return { line: trans.__('Saving variables in the background…'), mark: '' };
    case 'skipped':
      return {
        line: trans.__(
          'Not saved in the background: %1.',
          why ||
            trans.__(
              'the variables are larger than %1 MiB; they are saved on a move or on demand',
              report.max_state_mib
            )
        ),
        mark: 'warn'
      };
    case 'failed':
      return {
        line: trans.__(
          'Not saved in the background: %1.',
          why || trans.__('the background checkpoint failed')
        ),
        mark: 'warn'
      };
    case 'cancelled':
      return {
        line: why
          ? trans.__('Background checkpoint cancelled: %1.', why)
          : trans.__('Background checkpoint cancelled.'),
        mark: ''
      };
    case 'off':
      // The user's setting, or the admin's (or the server's): only the user can change it.
      return {
        line:
          report.user_interval_s === 0
            ? trans.__('You turned background checkpoints off (setting "Save variables in the background").')
            : trans.__('Background checkpoints are off.'),
        mark: ''
      };
    case 'none':
      return { line: '', mark: '' };
  }
}
