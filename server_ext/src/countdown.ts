/**
 * The idle warning's countdown (pure). The sidecar says when the move happens
 * (`warning_until`, its clock) and what its clock read when it answered (`at`); the
 * browser's clock may differ from the pod's, so the remaining time is counted from the
 * answer, not from `Date.now()` against `warning_until`.
 */
import { TranslationBundle } from './i18n';
import { IIdleSnapshot } from './types';

/** Seconds left before the idle move, never negative; null when no warning shows. */
export function secondsLeft(
  snapshot: IIdleSnapshot | null | undefined,
  receivedAtMs: number,
  nowMs: number
): number | null {
  if (!snapshot || snapshot.state !== 'warning') {
    return null;
  }
  const until = snapshot.warning_until;
  if (typeof until !== 'number') {
    return null;
  }
  const serverNow = typeof snapshot.at === 'number' ? snapshot.at : receivedAtMs / 1000;
  const elapsed = Math.max(0, (nowMs - receivedAtMs) / 1000);
  return Math.max(0, until - serverNow - elapsed);
}

/** "0:09", "2:30": minutes and seconds, rounded up (a warning never reads 0:00 early). */
export function formatCountdown(seconds: number): string {
  const whole = Math.max(0, Math.ceil(seconds));
  const minutes = Math.floor(whole / 60);
  const rest = whole % 60;
  return `${minutes}:${rest.toString().padStart(2, '0')}`;
}

/**
 * The warning's text. `notSaved`: what the move stops without saving (`willStopNames`),
 * named in a shorter sentence — JupyterLab cuts a notification's text at 140 characters.
 */
export function idleWarningMessage(
  trans: TranslationBundle,
  seconds: number,
  notSaved: string | null = null
): string {
  if (notSaved) {
    return trans.__(
      'The GPU has been idle: moving to a CPU pod in %1. Not saved: %2.',
      formatCountdown(seconds),
      notSaved
    );
  }
  return trans.__(
    'The GPU has been idle. This notebook moves back to a CPU pod in %1; your variables are saved and restored.',
    formatCountdown(seconds)
  );
}
