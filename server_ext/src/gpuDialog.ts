/**
 * The dialog shown before a GPU cell runs on a CPU pod.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { formatReasons } from './decision';
import { TranslationBundle } from './i18n';
import { IClassifyReason } from './types';

export type GpuChoice = 'move' | 'cpu' | 'quiet' | 'cancel';

function body(
  trans: TranslationBundle,
  reasons: readonly IClassifyReason[],
  willStop: string | null,
  unsaved: Promise<string | null> | null
): Widget {
  const node = document.createElement('div');
  node.className = 'gpushift-gpu-dialog';
  const intro = document.createElement('p');
  intro.textContent = trans.__(
    'This cell looks like it needs a GPU, and this notebook runs on a CPU pod. It has not run yet.'
  );
  node.appendChild(intro);
  const list = document.createElement('ul');
  list.className = 'gpushift-gpu-reasons';
  for (const line of formatReasons(trans, reasons)) {
    const item = document.createElement('li');
    item.textContent = line;
    list.appendChild(item);
  }
  node.appendChild(list);
  const outro = document.createElement('p');
  outro.textContent = trans.__(
    'Moving saves your variables, restarts the notebook on a GPU pod (same address), restores them and runs this cell there.'
  );
  node.appendChild(outro);
  if (willStop) {
    const stops = document.createElement('p');
    stops.className = 'gpushift-will-stop';
    stops.textContent = willStop;
    node.appendChild(stops);
  }
  if (unsaved) {
    const variables = document.createElement('p');
    variables.className = 'gpushift-unsaved';
    variables.textContent = trans.__('Checking which variables can be saved…');
    node.appendChild(variables);
    void unsaved.then(
      text => {
        if (text === null) {
          variables.remove();
        } else {
          variables.textContent = text;
        }
      },
      () => variables.remove()
    );
  }
  return new Widget({ node });
}

/** Ask the user; the cell waits for the answer. `willStop`: what the move would stop
 * without saving (`willStopText`), shown under the rest; null: nothing. `unsaved`: the
 * variables that would not come back (`unsavedText`), filled in when it resolves. */
export async function askAboutGpuCell(
  trans: TranslationBundle,
  reasons: readonly IClassifyReason[],
  willStop: string | null = null,
  unsaved: Promise<string | null> | null = null
): Promise<GpuChoice> {
  const result = await showDialog({
    title: trans.__('This cell needs a GPU'),
    body: body(trans, reasons, willStop, unsaved),
    buttons: [
      Dialog.cancelButton({
        label: trans.__("Don't ask again for this notebook"),
        className: 'gpushift-choice-quiet',
        actions: ['quiet']
      }),
      Dialog.cancelButton({
        label: trans.__('Run on CPU anyway'),
        className: 'gpushift-choice-cpu',
        actions: ['cpu']
      }),
      Dialog.okButton({
        label: trans.__('Move to GPU now'),
        className: 'gpushift-choice-move',
        actions: ['move']
      })
    ],
    defaultButton: 2,
    hasClose: true
  });
  // The buttons' actions, not their (translated) labels, say which one it was.
  const actions = result.button.actions;
  if (actions.includes('move')) {
    return result.button.accept ? 'move' : 'cancel';
  }
  if (actions.includes('cpu')) {
    return 'cpu';
  }
  if (actions.includes('quiet')) {
    return 'quiet';
  }
  return 'cancel'; // Escape or the close button: the cell does not run
}

/** Before a move the user asked for by command: only when it would stop something
 * or leave variables behind (`moveLossText`), the user confirms; true: move. */
export async function confirmMove(
  trans: TranslationBundle,
  target: 'gpu' | 'cpu',
  willStop: string
): Promise<boolean> {
  const node = document.createElement('p');
  node.className = 'gpushift-will-stop';
  node.textContent = willStop;
  const result = await showDialog({
    title: target === 'gpu' ? trans.__('Move to a GPU pod?') : trans.__('Move to a CPU pod?'),
    body: new Widget({ node }),
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.okButton({
        label: target === 'gpu' ? trans.__('Move to GPU') : trans.__('Move to CPU'),
        className: 'gpushift-choice-move',
        actions: ['move']
      })
    ],
    defaultButton: 1,
    hasClose: true
  });
  return result.button.accept && result.button.actions.includes('move');
}
