/**
 * What a move stops without saving (pure): consoles and other kernels without a
 * notebook, notebooks whose kernel is not Python, terminals. The server lists them
 * (`GET api_extension/pod`); the user reads them before confirming a move and in the
 * idle warning, so nothing ends without a word.
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
