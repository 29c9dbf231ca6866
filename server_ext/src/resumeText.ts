/**
 * "Resume where you left off" (pure): when a notebook's fresh kernel process is asked
 * about (once per process), whether the server's answer is an offer, and the words of the
 * question and of its outcome. The dialog and the signals are in resumeOffer.ts.
 */
import { TranslationBundle } from './i18n';
import { names } from './restoreText';

export interface IVariableNote {
  name: string;
  reason: string;
}

/** `GET api_extension/resume?kernel_id=&path=`. */
export interface IResumeOffer {
  offer: boolean;
  /** Why there is no offer ("" when there is one). */
  why: string;
  path: string;
  commit_id: string | null;
  /** Epoch seconds. */
  saved_at: number | null;
  variables: string[];
  not_saved: IVariableNote[];
}

/** `POST api_extension/resume {"kernel_id", "path", "commit_id"}`. */
export interface IResumeResult {
  ok: boolean;
  restored: string[];
  not_restored: IVariableNote[];
  detail: string;
  commit_id: string;
}

/** How many variable names the question lists before "and N more". */
export const NAMES_SHOWN = 8;

/** The question is asked only for an offer with a checkpoint and variables in it. */
export function shouldOffer(answer: IResumeOffer | null | undefined): boolean {
  return (
    !!answer &&
    answer.offer === true &&
    typeof answer.commit_id === 'string' &&
    answer.commit_id !== '' &&
    Array.isArray(answer.variables) &&
    answer.variables.length > 0
  );
}

/**
 * The server could not look at the kernel yet (gpushift was attaching its state saver,
 * or the kernel was still starting): worth asking again in a moment.
 */
export function worthAskingAgain(answer: IResumeOffer | null | undefined): boolean {
  return !!answer && answer.offer === false && /ask again|not ready/i.test(answer.why ?? '');
}

function pad(n: number): string {
  return n < 10 ? `0${n}` : `${n}`;
}

/**
 * When the checkpoint was made, in local time: "14:05" today, "2024-03-05 14:05" on
 * another day; "" when the server did not say.
 */
export function formatSavedAt(
  trans: TranslationBundle,
  savedAt: number | null | undefined,
  now: Date = new Date()
): string {
  if (typeof savedAt !== 'number' || !isFinite(savedAt)) {
    return '';
  }
  const at = new Date(savedAt * 1000);
  const time = `${pad(at.getHours())}:${pad(at.getMinutes())}`;
  const today =
    at.getFullYear() === now.getFullYear() &&
    at.getMonth() === now.getMonth() &&
    at.getDate() === now.getDate();
  if (today) {
    return time;
  }
  const date = `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}`;
  return trans.__('%1 %2', date, time);
}

/** The last part of a contents path: `work/a.ipynb` → `a.ipynb`. */
function baseName(path: string): string {
  const parts = path.split('/').filter(part => part !== '');
  return parts.length ? parts[parts.length - 1] : path;
}

export interface IResumeQuestion {
  title: string;
  /** "a.ipynb has a checkpoint from an earlier kernel: 2 variables from 14:05." */
  summary: string;
  /** "x, names" (the first NAMES_SHOWN, then "and N more"). */
  variables: string;
  /** What will not come back, one line each ("df — too large"); may be empty. */
  notSaved: string[];
  /** What the buttons do. */
  choice: string;
  resume: string;
  fresh: string;
}

/** The dialog's words. `path` names the notebook when the server's answer does not. */
export function resumeQuestion(
  trans: TranslationBundle,
  offer: IResumeOffer,
  path: string,
  now: Date = new Date()
): IResumeQuestion {
  const name = baseName(offer.path || path);
  const count = offer.variables.length;
  const when = formatSavedAt(trans, offer.saved_at, now);
  const saved = when
    ? trans._n('%1 variable from %2', '%1 variables from %2', count, when)
    : trans._n('%1 variable', '%1 variables', count);
  const notSaved = (offer.not_saved ?? []).map(n =>
    n.reason ? trans.__('%1 — %2', n.name, n.reason) : n.name
  );
  return {
    title: trans.__('Resume where you left off?'),
    summary: trans.__('%1 has a checkpoint from an earlier kernel: %2.', name, saved),
    variables: names(trans, offer.variables, NAMES_SHOWN),
    notSaved: notSaved.length
      ? [
          trans._n(
            'Will not come back (it was not saved):',
            'Will not come back (they were not saved):',
            notSaved.length
          ),
          ...notSaved
        ]
      : [],
    choice: trans.__(
      'Resume brings them back into the new kernel. Start fresh leaves it empty; the checkpoint is kept.'
    ),
    resume: trans.__('Resume'),
    fresh: trans.__('Start fresh')
  };
}

export type ResumeNoticeType = 'success' | 'warning' | 'error';

export interface IResumeNotice {
  message: string;
  type: ResumeNoticeType;
  /** For a "Details" button: every variable not restored and why, the server's detail. */
  details: string | null;
}

/** After "Resume": what came back. */
export function resumeOutcome(
  trans: TranslationBundle,
  result: IResumeResult,
  path: string
): IResumeNotice {
  const name = baseName(path);
  const restored = result.restored ?? [];
  const missing = result.not_restored ?? [];
  const details =
    [
      ...missing.map(m => trans.__('Not restored: %1 — %2', m.name, m.reason)),
      result.detail ?? ''
    ]
      .join('\n')
      .trim() || null;
  if (!result.ok) {
    return {
      message: trans.__(
        'The variables of %1 were not restored: %2',
        name,
        result.detail || trans.__('the restore failed')
      ),
      type: 'error',
      details
    };
  }
  if (missing.length) {
    return {
      message: trans._n(
        'Restored %1 variable of %2; not restored: %3.',
        'Restored %1 variables of %2; not restored: %3.',
        restored.length,
        name,
        names(
          trans,
          missing.map(m => m.name),
          NAMES_SHOWN
        )
      ),
      type: 'warning',
      details
    };
  }
  if (!restored.length) {
    return {
      message: trans.__('Nothing was restored in %1.', name),
      type: 'warning',
      details
    };
  }
  return {
    message: trans._n(
      'Restored %1 variable of %2: %3.',
      'Restored %1 variables of %2: %3.',
      restored.length,
      name,
      names(trans, restored, NAMES_SHOWN)
    ),
    type: 'success',
    details: null
  };
}

/** After "Resume", when the server refused (`code` of its error) or did not answer. */
export function resumeRefused(
  trans: TranslationBundle,
  code: string,
  detail: string,
  path: string
): IResumeNotice {
  const name = baseName(path);
  switch (code) {
    case 'kernel_ran_cells':
      return {
        message: trans.__(
          'Nothing was restored in %1: a cell ran in the new kernel meanwhile. The checkpoint is kept.',
          name
        ),
        type: 'warning',
        details: detail || null
      };
    case 'move_in_progress':
      return {
        message: trans.__(
          'Nothing was restored in %1: a move is under way, and it restores the variables itself.',
          name
        ),
        type: 'warning',
        details: detail || null
      };
    case 'no_checkpoint':
      return {
        message: trans.__('Nothing was restored in %1: its checkpoint is gone.', name),
        type: 'warning',
        details: detail || null
      };
    default:
      return {
        message: trans.__('The variables of %1 were not restored: %2', name, detail || code),
        type: 'error',
        details: null
      };
  }
}

/**
 * Which kernel process a status belongs to, and whether it was asked about. A kernel id
 * outlives a restart (the menu's, or the server's after an out-of-memory kill): each
 * restart is a new process, asked about again once it is idle. Shared by every notebook
 * that shows the kernel, so that a restart is counted once.
 */
export class KernelProcesses {
  private _restarts = new Map<string, number>();
  private _restarting = new Set<string>();
  private _asked = new Set<string>();

  /**
   * A status of kernel `id`. Returns the key of its current process when the kernel is
   * idle (ready to be asked about), null otherwise.
   */
  status(id: string, status: string): string | null {
    if (status === 'restarting' || status === 'autorestarting') {
      // One restart may announce itself more than once ("restarting", "autorestarting").
      if (!this._restarting.has(id)) {
        this._restarting.add(id);
        this._restarts.set(id, (this._restarts.get(id) ?? 0) + 1);
      }
      return null;
    }
    if (status !== 'idle') {
      return null;
    }
    this._restarting.delete(id);
    return this.current(id);
  }

  /** The key of kernel `id`'s current process. */
  current(id: string): string {
    return `${id}#${this._restarts.get(id) ?? 0}`;
  }

  /** True the first time the process `key` is claimed (to ask about it). */
  claim(key: string): boolean {
    if (this._asked.has(key)) {
      return false;
    }
    this._asked.add(key);
    return true;
  }
}
