/**
 * `gpushift-jupyter:auto` (the seed's fe-extension-01): the migration service, the
 * progress of moves, the idle warning, the restore after a move and kishu attach.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { INotebookTracker } from '@jupyterlab/notebook';

import { ApiClient } from '../api';
import { AttachWatcher } from '../attach';
import { ConnectionLostGuard } from '../connectionGuard';
import { IdleWarning } from '../idleWarning';
import { MigrationProgress } from '../progress';
import { RestoreFlow } from '../restore';
import { MigrationService } from '../service';
import { IMigrationService } from '../tokens';

export const autoPlugin: JupyterFrontEndPlugin<IMigrationService> = {
  id: 'gpushift-jupyter:auto',
  description:
    'Asks before a GPU cell runs on a CPU pod, follows moves between CPU and GPU pods and restores the state afterwards.',
  autoStart: true,
  provides: IMigrationService,
  activate: (app: JupyterFrontEnd): IMigrationService => {
    const api = new ApiClient(app.serviceManager.serverSettings);
    const service = new MigrationService(api);
    new MigrationProgress(service);
    new IdleWarning(service);
    new ConnectionLostGuard(service);
    void service.start();
    // The notebook tracker depends (through the widget factory) on the cell executor,
    // which depends on this service: take the tracker once the app is up, not as a
    // requirement, or the plugins would form a cycle.
    void app.restored.then(async () => {
      const [tracker, docs] = await Promise.all([
        app.resolveOptionalService(INotebookTracker),
        app.resolveOptionalService(IDocumentManager)
      ]);
      const restore = docs ? new RestoreFlow(service, api, docs) : null;
      if (tracker) {
        new AttachWatcher(service, tracker, () => restore?.busyPaths ?? new Set<string>());
      }
      void service.refresh();
    });
    return service;
  }
};
