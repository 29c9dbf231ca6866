/**
 * `gpushift-jupyter:auto` (the seed's fe-extension-01): the migration service, the
 * progress of moves, the idle warning, the restore after a move, kishu attach, saves
 * held during a move, the offer to delete a deleted notebook's checkpoints, and the
 * offer to resume where a notebook's earlier kernel left off.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ITranslator } from '@jupyterlab/translation';

import { ApiClient } from '../api';
import { AttachWatcher } from '../attach';
import { CheckpointCleanup } from '../checkpointCleanup';
import { loadBundle } from '../i18n';
import { IdleWarning } from '../idleWarning';
import { MigrationProgress } from '../progress';
import { RestoreFlow } from '../restore';
import { ResumeOffer } from '../resumeOffer';
import { SaveHold } from '../saveHold';
import { MigrationService } from '../service';
import { IMigrationService } from '../tokens';

export const autoPlugin: JupyterFrontEndPlugin<IMigrationService> = {
  id: 'gpushift-jupyter:auto',
  description:
    'Asks before a GPU cell runs on a CPU pod, follows moves between CPU and GPU pods and restores the state afterwards.',
  autoStart: true,
  provides: IMigrationService,
  optional: [ITranslator],
  activate: (app: JupyterFrontEnd, translator: ITranslator | null): IMigrationService => {
    const trans = loadBundle(translator);
    const api = new ApiClient(app.serviceManager.serverSettings, trans);
    const service = new MigrationService(api, trans);
    new MigrationProgress(service, trans);
    new IdleWarning(service, trans);
    void service.start();
    // A notebook deleted keeps its checkpoints: offer to delete them too.
    new CheckpointCleanup(app.serviceManager.contents, api, trans);
    // The notebook tracker depends (through the widget factory) on the cell executor,
    // which depends on this service: take the tracker once the app is up, not as a
    // requirement, or the plugins would form a cycle.
    void app.restored.then(async () => {
      const [tracker, docs] = await Promise.all([
        app.resolveOptionalService(INotebookTracker),
        app.resolveOptionalService(IDocumentManager)
      ]);
      const restore = docs ? new RestoreFlow(service, api, docs, trans) : null;
      if (docs) {
        new SaveHold(app, service, docs);
      }
      if (tracker) {
        new AttachWatcher(service, tracker, () => restore?.busyPaths ?? new Set<string>());
        // A fresh kernel of a notebook with a checkpoint: offer to bring the variables back.
        new ResumeOffer(tracker, api, trans, () => restore?.busyPaths ?? new Set<string>());
      }
      void service.refresh();
    });
    return service;
  }
};
