/**
 * The gpushift labextension: `auto` (the migration service), the connection-lost handler
 * that stays quiet during a move, the cell executor that asks before a GPU cell runs on a
 * CPU pod, and `manual` (status bar, commands, settings).
 */
import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { autoPlugin } from './plugins/auto';
import { connectionLostPlugin } from './plugins/connectionLost';
import { executorPlugin } from './plugins/executor';
import { manualPlugin } from './plugins/manual';

export { IMigrationService } from './tokens';
export type { IMoveOptions } from './tokens';

const plugins: JupyterFrontEndPlugin<any>[] = [
  autoPlugin,
  connectionLostPlugin,
  executorPlugin,
  manualPlugin
];
export default plugins;
