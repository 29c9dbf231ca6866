/**
 * The dialog shown before a GPU cell runs on a CPU pod.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { formatReasons } from './decision';
import { IClassifyReason } from './types';

export type GpuChoice = 'move' | 'cpu' | 'quiet' | 'cancel';

export const CHOICE_LABELS = {
  move: 'Move to GPU now',
  cpu: 'Run on CPU anyway',
  quiet: "Don't ask again for this notebook"
};

function body(reasons: readonly IClassifyReason[]): Widget {
  const node = document.createElement('div');
  node.className = 'gpushift-gpu-dialog';
  const intro = document.createElement('p');
  intro.textContent =
    'This cell looks like it needs a GPU, and this notebook runs on a CPU pod. It has not run yet.';
  node.appendChild(intro);
  const list = document.createElement('ul');
  list.className = 'gpushift-gpu-reasons';
  for (const line of formatReasons(reasons)) {
    const item = document.createElement('li');
    item.textContent = line;
    list.appendChild(item);
  }
  node.appendChild(list);
  const outro = document.createElement('p');
  outro.textContent =
    'Moving saves your variables, restarts the notebook on a GPU pod (same address), ' +
    'restores them and runs this cell there.';
  node.appendChild(outro);
  return new Widget({ node });
}

/** Ask the user; the cell waits for the answer. */
export async function askAboutGpuCell(reasons: readonly IClassifyReason[]): Promise<GpuChoice> {
  const result = await showDialog({
    title: 'This cell needs a GPU',
    body: body(reasons),
    buttons: [
      Dialog.cancelButton({ label: CHOICE_LABELS.quiet, className: 'gpushift-choice-quiet' }),
      Dialog.cancelButton({ label: CHOICE_LABELS.cpu, className: 'gpushift-choice-cpu' }),
      Dialog.okButton({ label: CHOICE_LABELS.move, className: 'gpushift-choice-move' })
    ],
    defaultButton: 2,
    hasClose: true
  });
  switch (result.button.label) {
    case CHOICE_LABELS.move:
      return result.button.accept ? 'move' : 'cancel';
    case CHOICE_LABELS.cpu:
      return 'cpu';
    case CHOICE_LABELS.quiet:
      return 'quiet';
    default:
      return 'cancel'; // Escape or the close button: the cell does not run
  }
}
