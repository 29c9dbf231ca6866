/**
 * `gpushift-jupyter:cell-executor`: replaces JupyterLab's notebook cell executor
 * (`@jupyterlab/notebook-extension:cell-executor`, disabled in package.json) with one
 * that asks before a GPU cell runs on a CPU pod.
 */
import { JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Cell } from '@jupyterlab/cells';
import { INotebookCellExecutor, NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { GpuAwareCellExecutor, QuietNotebooks } from '../executor';
import { IMigrationService } from '../tokens';

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
  activate: (_app, service: IMigrationService): INotebookCellExecutor =>
    new GpuAwareCellExecutor({ service, quiet: new QuietNotebooks(), findPanel: panelOf })
};
