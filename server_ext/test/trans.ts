/**
 * The bundle the pure modules get in the tests: JupyterLab's null translator, so the
 * strings read as the English source (and `%1` placeholders are filled in).
 */
import { nullTranslator } from '@jupyterlab/translation';

export const trans = nullTranslator.load('gpushift_jupyter');
