/**
 * The gpushift labextension: `auto` (the migration service), the cell executor that
 * asks before a GPU cell runs on a CPU pod, and `manual` (status bar, commands,
 * settings).
 */
import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { autoPlugin } from './plugins/auto';
import { executorPlugin } from './plugins/executor';
import { manualPlugin } from './plugins/manual';

export { IMigrationService } from './tokens';
export type { IMoveOptions } from './tokens';

const plugins: JupyterFrontEndPlugin<any>[] = [autoPlugin, executorPlugin, manualPlugin];
export default plugins;
