/**
 * Translations: every user-facing string goes through JupyterLab's translator, so a
 * language pack for the domain below translates gpushift too. Plugins load the bundle
 * from the (optional) ITranslator; pure modules take it as an argument so that they stay
 * testable without JupyterLab running.
 */
import { ITranslator, nullTranslator, TranslationBundle } from '@jupyterlab/translation';

export type { TranslationBundle };

/** The gettext domain of gpushift's strings (the Python package's name, as language
 * packs expect it). */
export const DOMAIN = 'gpushift_jupyter';

/** The bundle of gpushift's strings; English when JupyterLab has no translator. */
export function loadBundle(translator: ITranslator | null | undefined): TranslationBundle {
  return (translator ?? nullTranslator).load(DOMAIN);
}
