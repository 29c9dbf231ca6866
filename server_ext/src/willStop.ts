/**
 * What a move stops without saving (pure): consoles and other kernels without a
 * notebook, notebooks whose kernel is not Python, terminals. The server lists them
 * (`GET api_extension/pod`); the user reads them before confirming a move and in the
 * idle warning, so nothing ends without a word. Asked with `variables`, the server also
 * names the variables a checkpoint would not bring back (open files, generators…).
 */
import { TranslationBundle } from './i18n';
import { IPodSessions, IWillStop } from './types';

function itemText(trans: TranslationBundle, item: IWillStop): string {
  switch (item.kind) {
    case 'console':
      return trans.__('console %1', item.name);
    case 'terminal':
      return trans.__('terminal %1', item.name);
    case 'notebook':
      return trans.__('notebook %1 (%2)', item.name, item.why);
    default:
      return trans.__('kernel %1', item.name);
  }
}

/** What stops, as a list ("console console-1, terminal 1"), or null: nothing. */
export function willStopNames(trans: TranslationBundle, pod: IPodSessions | null): string | null {
  const items = pod?.will_stop ?? [];
  return items.length === 0 ? null : items.map(item => itemText(trans, item)).join(', ');
}

/** One sentence naming what stops, or null when the move saves everything. */
export function willStopText(trans: TranslationBundle, pod: IPodSessions | null): string | null {
  const names = willStopNames(trans, pod);
  return names === null ? null : trans.__('These stop with the pod and are not saved: %1.', names);
}

function basename(path: string): string {
  return path.split('/').pop() || path;
}

/** The variables that would not come back, as a list ("gen (eval.ipynb), log
 * (train.ipynb)"), or null: none known. */
export function unsavedNames(trans: TranslationBundle, pod: IPodSessions | null): string | null {
  const items = pod?.unsaved ?? [];
  return items.length === 0
    ? null
    : items.map(item => trans.__('%1 (%2)', item.name, basename(item.notebook))).join(', ');
}

/** What the user reads about variables before a move, or null: every variable comes
 * back (or nothing could be said). */
export function unsavedText(trans: TranslationBundle, pod: IPodSessions | null): string | null {
  const parts: string[] = [];
  const names = unsavedNames(trans, pod);
  if (names !== null) {
    parts.push(trans.__('These variables cannot be saved and will not come back: %1.', names));
  }
  const unchecked = pod?.unchecked ?? [];
  if (unchecked.length > 0) {
    const which = unchecked.map(item => trans.__('%1 (%2)', basename(item.notebook), item.why)).join(', ');
    parts.push(trans.__('Not checked for variables that cannot be saved: %1.', which));
  }
  return parts.length === 0 ? null : parts.join(' ');
}

/** Everything the move loses, for a confirmation: what stops, then the variables; null
 * when nothing is known to be lost (notebooks only not checked ask no question: the
 * move's checkpoints name what they could not save). */
export function moveLossText(trans: TranslationBundle, pod: IPodSessions | null): string | null {
  if ((pod?.will_stop ?? []).length === 0 && (pod?.unsaved ?? []).length === 0) {
    return null;
  }
  const parts = [willStopText(trans, pod), unsavedText(trans, pod)].filter(
    (part): part is string => part !== null
  );
  return parts.join(' ');
}

/** For the idle countdown's short sentence: what stops and the variables left behind. */
export function notSavedNames(trans: TranslationBundle, pod: IPodSessions | null): string | null {
  const parts = [willStopNames(trans, pod), unsavedNames(trans, pod)].filter(
    (part): part is string => part !== null
  );
  return parts.length === 0 ? null : parts.join(', ');
}
