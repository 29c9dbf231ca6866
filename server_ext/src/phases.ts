/**
 * A migration's phase as the user reads it (pure): the notification's text and type.
 */
import { TranslationBundle } from './i18n';
import { IMigration, MigrationPhase, Target } from './types';

export type NoticeType = 'in-progress' | 'success' | 'error' | 'warning' | 'info';

export const TERMINAL_PHASES: ReadonlySet<MigrationPhase> = new Set<MigrationPhase>([
  'done',
  'rolled_back',
  'failed',
  'cancelled'
]);

/** Whether the migration is over (done, rolled back, failed or cancelled: the notebook
 * was stopped, by Kubeflow's Stop or its culler, during the move). */
export function isTerminal(phase: MigrationPhase | string | undefined | null): boolean {
  return TERMINAL_PHASES.has(phase as MigrationPhase);
}

/**
 * The move as the page's progress shows it: one the new pod's server restored by itself,
 * which this page has not collected yet, is still "restoring your variables" (3/3) for
 * the user — until the notebook here has them (restore.ts collects them).
 */
export function asSeenByThePage(m: IMigration | null): IMigration | null {
  if (m && m.restored_on_server === true && isTerminal(m.phase)) {
    return { ...m, phase: 'restoring' };
  }
  return m;
}

/** A reason to put inside a sentence: without its own final full stop. */
function sentence(detail: string | null | undefined, fallback: string): string {
  return (detail || fallback).trim().replace(/\.+$/, '');
}

/** "a GPU pod" / "a CPU pod", translated. */
export function podName(trans: TranslationBundle, target: Target): string {
  return target === 'gpu' ? trans.__('a GPU pod') : trans.__('a CPU pod');
}

/**
 * `text` without its final full stops, within `max` characters: whole, else its first
 * sentences that fit (a scheduler's message leads with the reason, then adds preemption
 * notes), else cut with an ellipsis.
 */
export function shorten(text: string, max: number): string {
  const clean = text.trim().replace(/\s+/g, ' ').replace(/\.+$/, '');
  if (clean.length <= max) {
    return clean;
  }
  const end = clean.lastIndexOf('. ', max);
  if (end > 0) {
    return clean.slice(0, end);
  }
  return `${clean.slice(0, Math.max(1, max - 1)).trimEnd()}…`;
}

/**
 * The steps the user sees, numbered 1/N .. N/N. Each step lasts long enough for the page
 * to see it (the quick `patching` shares its step with the pod start, and the page shows
 * step 1 itself while its own request saves the variables), so none is skipped; the
 * last in-progress message is N/N.
 */
export const STEP_COUNT = 3;

/** The step (1-based) of a phase in progress; 0 for the terminal phases. */
export function stepNumber(phase: MigrationPhase, serverDown = false): number {
  switch (phase) {
    case 'requested':
    case 'checkpointing':
    case 'checkpointed':
      return serverDown ? 2 : 1;
    case 'patching':
    case 'recreating':
      return 2;
    case 'restoring':
      return 3;
    default:
      return 0;
  }
}

/** "(2/3)" for a phase in progress, '' otherwise. */
export function stepOf(phase: MigrationPhase, serverDown = false): string {
  const at = stepNumber(phase, serverDown);
  return at === 0 ? '' : `(${at}/${STEP_COUNT})`;
}

/** The sentence for a phase (what is happening now, in the user's words). */
export function phaseMessage(
  trans: TranslationBundle,
  phase: MigrationPhase,
  target: Target,
  detail?: string | null
): string {
  const where = podName(trans, target);
  switch (phase) {
    case 'requested':
    case 'checkpointing':
    case 'checkpointed':
      return trans.__('Moving to %1: saving your variables…', where);
    case 'patching':
    case 'recreating':
      return trans.__('Moving to %1: starting the new pod (the page reconnects by itself)…', where);
    case 'restoring':
      return trans.__('Moving to %1: restoring your variables…', where);
    case 'done':
      return trans.__('Now on %1.', where);
    case 'rolled_back':
      return trans.__(
        'The move to %1 was rolled back: %2. You are back where you were.',
        where,
        sentence(detail, trans.__('the new pod did not start'))
      );
    case 'failed':
      return trans.__('The move to %1 failed: %2.', where, sentence(detail, trans.__('no reason given')));
    case 'cancelled':
      return trans.__(
        'The move to %1 was cancelled: %2.',
        where,
        sentence(detail, trans.__('the notebook was stopped'))
      );
  }
}

export function phaseType(phase: MigrationPhase): NoticeType {
  switch (phase) {
    case 'done':
      return 'success';
    case 'failed':
      return 'error';
    case 'rolled_back':
      return 'warning';
    case 'cancelled':
      return 'info';
    default:
      return 'in-progress';
  }
}

/** The text and type of the progress notification for a migration record. */
export function describeMigration(
  trans: TranslationBundle,
  m: IMigration
): { message: string; type: NoticeType } {
  const step = isTerminal(m.phase) ? '' : ` ${stepOf(m.phase)}`;
  if (m.phase === 'rolled_back' && podWasReplaced(m)) {
    // Not "back where you were": the pod was replaced, its kernel is new (the state
    // comes back with the recovery, restore.ts).
    const back = podName(trans, m.target === 'gpu' ? 'cpu' : 'gpu');
    const fallback = trans.__('the new pod did not start');
    const frame = trans.__('The move to %1 was rolled back: %2. Back on %3.', podName(trans, m.target), '\u0000', back);
    const room = 140 - (frame.length - 1);
    return {
      message: frame.replace('\u0000', shorten(m.error || fallback, room)),
      type: 'warning'
    };
  }
  return {
    message: phaseMessage(trans, m.phase, m.target, m.error) + step,
    type: phaseType(m.phase)
  };
}

/** Whether the move replaced the notebook's pod (its kernel is a new one now). */
export function podWasReplaced(m: IMigration): boolean {
  if (m.recoverable === true) {
    return true;
  }
  const history = Array.isArray(m.history) ? (m.history as { phase?: unknown }[]) : [];
  return history.some(h => h?.phase === 'recreating' || h?.phase === 'restoring');
}

/** Shown while the server does not answer during a move (the pod is being replaced). */
export function serverGoneMessage(trans: TranslationBundle, target: Target, seconds: number): string {
  return (
    trans.__(
      'Moving to %1: the notebook server is restarting on the new pod (%2 s)… Keep this page open.',
      podName(trans, target),
      Math.round(seconds)
    ) + ` ${stepOf('recreating')}`
  );
}
