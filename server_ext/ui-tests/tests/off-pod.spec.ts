/**
 * A pod the webhook did not inject (no sidecar): the UI says the optimizer is off, and
 * GPU cells run as in plain JupyterLab.
 */
import { expect, test } from '@jupyterlab/galata';

import { gpuDialog, notebookWithGpuCell, podStatus, prompt, shot, startCell } from './helpers';

test('optimizer off: status bar says so, cells run without asking, moves are disabled', async ({ page }) => {
  await expect(podStatus(page)).toHaveText('GPU optimizer off');
  await expect(podStatus(page)).toHaveAttribute('title', /not injected/);
  await shot(page, 'status-optimizer-off');
  await notebookWithGpuCell(page, 'off.ipynb');
  await startCell(page, 0);
  await expect(prompt(page, 0)).toHaveText('[1]:');
  await expect(gpuDialog(page)).toHaveCount(0);
  const button = page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="gpushift-move"] button');
  await expect(button).toBeDisabled();
});
