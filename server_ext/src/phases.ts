/**
 * A migration's phase as the user reads it (pure): the notification's text and type.
 */
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

/** A reason to put inside a sentence: without its own final full stop. */
function sentence(detail: string | null | undefined, fallback: string): string {
  return (detail || fallback).trim().replace(/\.+$/, '');
}

function podName(target: Target): string {
  return target === 'gpu' ? 'a GPU pod' : 'a CPU pod';
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

/** Ordered steps shown to the user; the index is the step number "(2/5)". */
const STEPS: MigrationPhase[] = [
  'checkpointing',
  'patching',
  'recreating',
  'restoring',
  'done'
];

/** "(2/5)" for a phase in the user-visible sequence, '' otherwise. */
export function stepOf(phase: MigrationPhase): string {
  const at = phase === 'requested' ? 0 : phase === 'checkpointed' ? 0 : STEPS.indexOf(phase);
  return at < 0 ? '' : `(${at + 1}/${STEPS.length})`;
}

/** The sentence for a phase (what is happening now, in the user's words). */
export function phaseMessage(
  phase: MigrationPhase,
  target: Target,
  detail?: string | null
): string {
  const where = podName(target);
  switch (phase) {
    case 'requested':
      return `Moving to ${where}: starting…`;
    case 'checkpointing':
      return `Moving to ${where}: saving your variables…`;
    case 'checkpointed':
      return `Moving to ${where}: variables saved.`;
    case 'patching':
      return `Moving to ${where}: asking the cluster for ${where}…`;
    case 'recreating':
      return `Moving to ${where}: waiting for ${where} to start (the page reconnects by itself)…`;
    case 'restoring':
      return `Moving to ${where}: restoring your variables…`;
    case 'done':
      return `Now on ${where}.`;
    case 'rolled_back':
      return `The move to ${where} was rolled back: ${sentence(detail, 'the new pod did not start')}. You are back where you were.`;
    case 'failed':
      return `The move to ${where} failed: ${sentence(detail, 'no reason given')}.`;
    case 'cancelled':
      return `The move to ${where} was cancelled: ${sentence(detail, 'the notebook was stopped')}.`;
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
export function describeMigration(m: IMigration): { message: string; type: NoticeType } {
  const step = isTerminal(m.phase) ? '' : ` ${stepOf(m.phase)}`;
  if (m.phase === 'rolled_back' && podWasReplaced(m)) {
    // Not "back where you were": the pod was replaced, its kernel is new (the state
    // comes back with the recovery, restore.ts).
    const back = m.target === 'gpu' ? 'a CPU pod' : 'a GPU pod';
    const head = `The move to ${podName(m.target)} was rolled back: `;
    const tail = `. Back on ${back}.`;
    const reason = shorten(m.error || 'the new pod did not start', 140 - head.length - tail.length);
    return {
      message: `${head}${reason}${tail}`,
      type: 'warning'
    };
  }
  return {
    message: phaseMessage(m.phase, m.target, m.error) + step,
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
export function serverGoneMessage(target: Target, seconds: number): string {
  return (
    `Moving to ${podName(target)}: the notebook server is restarting on the new pod ` +
    `(${Math.round(seconds)} s)… Keep this page open.`
  );
}
