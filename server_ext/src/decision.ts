/**
 * What to do with a cell before it runs (pure). The executor asks `beforeRun` first; when
 * it says `classify`, it asks the server's classifier and then `afterClassify`.
 */
import { TranslationBundle } from './i18n';
import { PodKind } from './podKind';
import { rulePhrase } from './rulePhrases';
import { IClassification, IClassifyReason } from './types';

export interface IUserSettings {
  /** Check cells on a CPU pod and offer a GPU (false: never ask, never move by itself). */
  autoMoves: boolean;
  /** Ask before moving (false: move at once, with a notification). */
  askBeforeMoving: boolean;
  /** Idle timeout the user wants, seconds; null: the admin's default. */
  idleTimeoutSeconds: number | null;
}

export const DEFAULT_SETTINGS: IUserSettings = {
  autoMoves: true,
  askBeforeMoving: true,
  idleTimeoutSeconds: null
};

export interface ICellContext {
  pod: PodKind;
  settings: IUserSettings;
  /** A migration is in flight: nothing new may start on this pod. */
  migrating: boolean;
  /** The user chose "don't ask again" for this notebook. */
  quietNotebook: boolean;
  /** The cell is a code cell with something to run. */
  hasCode: boolean;
}

/**
 * - `run`: run it now, nothing to ask.
 * - `classify`: ask the classifier first (CPU pod) and then `afterClassify`.
 * - `track`: run it now and classify alongside, to report GPU activity (GPU pod).
 * - `hold`: a migration is in flight; do not run it on this pod.
 */
export type BeforeRun = 'run' | 'classify' | 'track' | 'hold';

export function beforeRun(ctx: ICellContext): BeforeRun {
  if (!ctx.hasCode) {
    return 'run';
  }
  if (ctx.migrating) {
    return 'hold';
  }
  switch (ctx.pod.kind) {
    case 'gpu':
      return 'track';
    case 'cpu':
      return ctx.settings.autoMoves && !ctx.quietNotebook ? 'classify' : 'run';
    default:
      return 'run'; // optimizer off or server silent: never block the user's work
  }
}

/**
 * Whether the classifier may answer at the cell's first statement that needs a GPU
 * (`first_hit`; the server walks the rest once the answer is sent): where only
 * `needs_gpu` is acted on — the GPU pod's activity report, a move without asking. A run
 * that may ask gets every reason, for the dialog.
 */
export function answerAtFirstHit(ctx: ICellContext, before: BeforeRun): boolean {
  return before === 'track' || (before === 'classify' && !ctx.settings.askBeforeMoving);
}

/** After the classifier answered on a CPU pod: run, ask the user, or move at once. */
export type AfterClassify = 'run' | 'ask' | 'move';

export function afterClassify(
  ctx: ICellContext,
  result: IClassification | null
): AfterClassify {
  if (result === null || !result.needs_gpu) {
    return 'run';
  }
  return ctx.settings.askBeforeMoving ? 'ask' : 'move';
}

/** "line 3: x.cuda() — calls .cuda(), which moves data to a GPU" for the dialog, by line. */
export function formatReasons(
  trans: TranslationBundle,
  reasons: readonly IClassifyReason[]
): string[] {
  return [...reasons]
    .sort((a, b) => a.line - b.line)
    .map(r =>
      r.rule
        ? trans.__('line %1: %2 — %3', r.line, r.text.trim(), rulePhrase(trans, r.rule))
        : trans.__('line %1: %2', r.line, r.text.trim())
    );
}

/** Settings from the registry's composite, with unknown or wrong values replaced. */
export function readSettings(composite: Partial<Record<string, unknown>>): IUserSettings {
  const bool = (key: string, fallback: boolean): boolean =>
    typeof composite[key] === 'boolean' ? (composite[key] as boolean) : fallback;
  const timeout = composite['idleTimeoutSeconds'];
  return {
    autoMoves: bool('autoMoves', DEFAULT_SETTINGS.autoMoves),
    askBeforeMoving: bool('askBeforeMoving', DEFAULT_SETTINGS.askBeforeMoving),
    idleTimeoutSeconds:
      typeof timeout === 'number' && Number.isFinite(timeout) && timeout > 0 ? timeout : null
  };
}

/** Which moves make sense now (commands are enabled only for these). */
export function canMove(pod: PodKind, migrating: boolean): { toGpu: boolean; toCpu: boolean } {
  if (migrating) {
    return { toGpu: false, toCpu: false };
  }
  return { toGpu: pod.kind === 'cpu', toCpu: pod.kind === 'gpu' };
}

/** "Move to GPU…" can open: no move in flight, and a profile to go to (from a GPU pod,
 * one other than its own). `profiles`: the admin's profile names. */
export function canPickProfile(pod: PodKind, migrating: boolean, profiles: readonly string[]): boolean {
  if (migrating) {
    return false;
  }
  return (pod.kind === 'cpu' && profiles.length > 0) || (pod.kind === 'gpu' && profiles.length > 1);
}
