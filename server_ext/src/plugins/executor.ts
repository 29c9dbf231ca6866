/**
 * `gpushift-jupyter:cell-executor`: replaces JupyterLab's notebook cell executor
 * (`@jupyterlab/notebook-extension:cell-executor`, disabled in package.json) with one
 * that asks before a GPU cell runs on a CPU pod.
 */
import { JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Cell } from '@jupyterlab/cells';
import { INotebookCellExecutor, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { CellPreview } from '../cellPreview';
import { GpuAwareCellExecutor } from '../executor';
import { loadBundle } from '../i18n';
import { QuietNotebooks } from '../quietNotebooks';
import { IMigrationService } from '../tokens';
import { PLUGIN_ID } from './manual';

/** The notebook panel a cell sits in (its widget ancestors). */
export function panelOf(cell: Cell): NotebookPanel | null {
  let widget: Widget | null = cell.parent;
  while (widget && !(widget instanceof NotebookPanel)) {
    widget = widget.parent;
  }
  return widget;
}

export const executorPlugin: JupyterFrontEndPlugin<INotebookCellExecutor> = {
  id: 'gpushift-jupyter:cell-executor',
  description: 'Runs notebook cells, asking first when a cell needs a GPU on a CPU pod.',
  autoStart: true,
  provides: INotebookCellExecutor,
  requires: [IMigrationService],
  optional: [ITranslator, ISettingRegistry],
  activate: (
    app,
    service: IMigrationService,
    translator: ITranslator | null,
    registry: ISettingRegistry | null
  ): INotebookCellExecutor => {
    const quiet = new QuietNotebooks();
    if (registry) {
      // "Don't ask again" lives in gpushift's settings (the manual plugin's schema).
      void registry
        .load(PLUGIN_ID)
        .then(settings => quiet.attach(settings))
        .catch(error => console.warn('gpushift: settings not loaded', error));
    }
    // The tracker depends on this executor (through the notebook widget factory): take it
    // once the app is up. The cell a user is on is classified before it runs.
    void app.restored
      .then(() => app.resolveOptionalService(INotebookTracker))
      .then(tracker => tracker && new CellPreview(tracker, service, quiet));
    return new GpuAwareCellExecutor({
      service,
      quiet,
      trans: loadBundle(translator),
      findPanel: panelOf
    });
  }
};
