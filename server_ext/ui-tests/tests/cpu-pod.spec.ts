/**
 * On a CPU pod (real sidecar, no Kubernetes API): a GPU cell waits for the user's choice.
 */
import { expect, test } from '@jupyterlab/galata';

import {
  captureNotices,
  GPU_CELL,
  gpuDialog,
  notebookWithGpuCell,
  notices,
  PAST_A_PREVIEW_MS,
  podStatus,
  previewsSent,
  prompt,
  quietNotebooks,
  setSetting,
  shot,
  startCell,
  toast
} from './helpers';

test.describe('CPU pod', () => {
  test('the status bar says CPU', async ({ page }) => {
    await expect(podStatus(page)).toHaveText('CPU');
    await expect(podStatus(page)).toHaveAttribute('title', /CPU pod/);
    await shot(page, 'status-cpu');
  });

  test('a GPU cell asks before it runs, and has not run', async ({ page }) => {
    await notebookWithGpuCell(page, 'asks.ipynb');
    await startCell(page, 0);
    const dialog = gpuDialog(page);
    await expect(dialog).toBeVisible();
    await expect(dialog).toContainText('line 2: y = [1].cuda()');
    // Why, in words: not the classifier's rule id.
    await expect(dialog).toContainText('calls .cuda(), which moves data to a GPU');
    await expect(dialog).not.toContainText('torch.cuda_method');
    await expect(dialog.getByRole('button', { name: 'Move to GPU now' })).toBeVisible();
    await expect(dialog.getByRole('button', { name: 'Run on CPU anyway' })).toBeVisible();
    await expect(dialog.getByRole('button', { name: "Don't ask again for this notebook" })).toBeVisible();
    await expect(prompt(page, 0)).toHaveText('[ ]:');
    await shot(page, 'gpu-cell-dialog');

    await page.keyboard.press('Escape'); // neither: the cell does not run
    await expect(dialog).toBeHidden();
    await page.notebook.runCell(1, { inplace: true });
    expect(await page.notebook.getCellTextOutput(1)).toEqual(['False\n']);
    await expect(prompt(page, 0)).toHaveText('[ ]:');
  });

  test('the cell a user pauses on is classified before it runs: the run is a lookup', async ({
    page
  }) => {
    // The cell binds `cp`: the kernel's memory after its run is not the one before.
    const cell = 'import cupy as cp\nx = cp.ones(3)';
    const classified = (preview: boolean) =>
      page.waitForResponse(r => {
        const body = r.request().postDataJSON();
        return r.url().includes('/api_extension/classify') && body?.code === cell &&
          !!body.preview === preview;
      });
    await page.notebook.createNew();
    // Typed while the kernel starts: the preview goes once the kernel is up.
    const previewed = classified(true);
    await page.notebook.setCell(0, 'code', cell);
    const ahead = await (await previewed).json();
    expect(ahead.needs_gpu).toBe(true);
    expect(ahead.cached).toBe(false);

    const ran = classified(false);
    const previewedAgain = classified(true);
    await startCell(page, 0);
    const verdict = await (await ran).json();
    expect(verdict.cached).toBe(true); // walked during the pause, not after Ctrl+Enter
    expect(verdict.reasons).toEqual(ahead.reasons);
    await expect(gpuDialog(page)).toContainText('line 1: import cupy as cp');
    await page.keyboard.press('Escape');
    await expect(prompt(page, 0)).toHaveText('[ ]:');

    // Asked to run, the cell bound `cp` in the classifier's memory: it is previewed again
    // in the memory after it, and running it again is a lookup too.
    expect((await (await previewedAgain).json()).cached).toBe(false);
    const ranAgain = classified(false);
    await startCell(page, 0);
    expect((await (await ranAgain).json()).cached).toBe(true);
    await expect(gpuDialog(page)).toBeVisible();
    await page.keyboard.press('Escape');
  });

  test('"Run on CPU anyway" runs the cell on the CPU', async ({ page }) => {
    await notebookWithGpuCell(page, 'anyway.ipynb');
    await startCell(page, 0);
    await gpuDialog(page).getByRole('button', { name: 'Run on CPU anyway' }).click();
    await expect(prompt(page, 0)).toHaveText('[1]:');
    await page.notebook.runCell(1, { inplace: true });
    expect(await page.notebook.getCellTextOutput(1)).toEqual(['True\n']);
  });

  test('"Don\'t ask again" runs it and stops asking for this notebook', async ({ page }) => {
    await notebookWithGpuCell(page, 'quiet.ipynb');
    await startCell(page, 0);
    await gpuDialog(page).getByRole('button', { name: "Don't ask again for this notebook" }).click();
    await expect(prompt(page, 0)).toHaveText('[1]:');
    // Its cells are no longer classified before they run, so none is previewed either:
    // not the cell the user edits, nor the one they come back to.
    const previews = previewsSent(page);
    await page.notebook.setCell(1, 'code', 'quiet_edit = 1');
    await page.waitForTimeout(PAST_A_PREVIEW_MS);
    await page.notebook.selectCells(0);
    await page.waitForTimeout(PAST_A_PREVIEW_MS);
    expect(previews).toEqual([]);
    await startCell(page, 0);
    await expect(prompt(page, 0)).toHaveText('[2]:');
    await expect(gpuDialog(page)).toHaveCount(0);
    // Kept in JupyterLab's settings (not the browser's storage): it survives a reload.
    expect((await quietNotebooks(page)).some(path => path.endsWith('.ipynb'))).toBe(true);
  });

  test('"Don\'t ask again" choices of earlier versions move from localStorage to the settings', async ({
    page
  }) => {
    await page.evaluate(() =>
      window.localStorage.setItem('gpushift-jupyter:quiet-notebooks', JSON.stringify(['old.ipynb']))
    );
    await page.reload();
    await expect(podStatus(page)).toHaveText('CPU');
    await expect.poll(() => quietNotebooks(page)).toContain('old.ipynb');
    expect(
      await page.evaluate(() => window.localStorage.getItem('gpushift-jupyter:quiet-notebooks'))
    ).toBeNull();
  });

  test('"Move to GPU now" starts a move, shows its progress, and a failure clearly', async ({ page }) => {
    await notebookWithGpuCell(page, 'move.ipynb');
    await captureNotices(page);
    await startCell(page, 0);
    await gpuDialog(page).getByRole('button', { name: 'Move to GPU now' }).click();
    // The cell shows that it waits for the move.
    await expect(prompt(page, 0)).toHaveText('[⏳]:');
    // No Kubernetes API on this machine: the sidecar's patch step fails, and says why.
    const failed = toast(page, 'The move to a GPU pod failed');
    await expect(failed).toBeVisible({ timeout: 60000 });
    await expect(failed).toContainText(/Kubernetes|kubeconfig|configuration/i);
    await shot(page, 'move-failed');
    const seen = await notices(page);
    expect(seen.some(m => m.startsWith('Moving to a GPU pod: saving your variables… (1/3)'))).toBe(true);
    expect(seen[seen.length - 1]).toMatch(/^The move to a GPU pod failed/);
    await failed.getByRole('button', { name: 'Details' }).click();
    await expect(page.locator('.jp-Dialog')).toContainText('did not complete');
    await page.locator('.jp-Dialog').getByRole('button').last().click();
    // The cell did not run on the CPU, and the pod is still a CPU pod.
    await expect(prompt(page, 0)).toHaveText('[ ]:');
    await expect(podStatus(page)).toHaveText('CPU');
  });

  test('the Move commands are enabled only where they make sense', async ({ page }) => {
    await page.notebook.createNew();
    await page.menu.open('Kernel');
    const menu = page.locator('.lm-Menu').last();
    const item = (label: string) =>
      menu.locator('.lm-Menu-item').filter({
        has: page.locator('.lm-Menu-itemLabel', { hasText: new RegExp(`^${label}$`) })
      });
    await expect(item('Move to GPU')).not.toHaveClass(/lm-mod-disabled/);
    await expect(item('Move to GPU…')).not.toHaveClass(/lm-mod-disabled/);
    await expect(item('Move to CPU')).toHaveClass(/lm-mod-disabled/);
    await shot(page, 'kernel-menu');
    await page.keyboard.press('Escape');
    const button = page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="gpushift-move"]');
    await expect(button).toBeVisible();
    await expect(button).toContainText('Move to GPU');
  });

  test('"Move to GPU…" lists the admin\'s profiles; the chosen one goes with the move', async ({ page }) => {
    await page.notebook.createNew('picker.ipynb');
    await captureNotices(page);
    // The status bar item opens it too.
    await podStatus(page).click();
    const picker = page.locator('.jp-Dialog').filter({ has: page.getByTestId('gpushift-profile-picker') });
    await expect(picker).toBeVisible();
    const row = picker.locator('.gpushift-profile[data-profile="nvidia-1"]');
    await expect(row).toContainText('nvidia-1: NVIDIA ×1 (default)');
    // No Kubernetes API on this pod: what is free is not known, and the dialog says so.
    await expect(row).toContainText('free GPUs not known');
    await expect(picker.locator('.gpushift-profile-note')).not.toBeEmpty();
    await expect(row.locator('input[type="radio"]')).toBeChecked();
    await shot(page, 'profile-picker');
    await picker.getByRole('button', { name: 'Cancel' }).click();
    await expect(podStatus(page)).toHaveText('CPU');
    expect(await notices(page)).toEqual([]);

    await page.evaluate(() => {
      void (window as any).jupyterapp.commands.execute('gpushift:move-to-gpu-profile');
    });
    await expect(picker).toBeVisible();
    const sent = page.waitForRequest(request => request.url().includes('api_extension/migrate'));
    await picker.getByRole('button', { name: 'Move' }).click();
    expect((await sent).postDataJSON()).toMatchObject({ target: 'gpu', reason: 'manual', profile: 'nvidia-1' });
    // Then as any move on this machine: the patch step fails, and says why.
    await expect(toast(page, 'The move to a GPU pod failed')).toBeVisible({ timeout: 60000 });
  });

  test('settings: with automatic moves off, a GPU cell runs without asking', async ({ page }) => {
    await notebookWithGpuCell(page, 'settings.ipynb');
    await setSetting(page, 'autoMoves', false);
    await startCell(page, 0);
    await expect(prompt(page, 0)).toHaveText('[1]:');
    await expect(gpuDialog(page)).toHaveCount(0);
    await setSetting(page, 'autoMoves', true);
    await startCell(page, 0);
    await expect(gpuDialog(page)).toBeVisible();
    await page.keyboard.press('Escape');
  });

  test('settings: with "ask before moving" off, a GPU cell moves at once', async ({ page }) => {
    await notebookWithGpuCell(page, 'no-asking.ipynb');
    await setSetting(page, 'askBeforeMoving', false);
    try {
      const classified = page.waitForResponse(
        r => r.url().includes('/api_extension/classify') && r.request().postDataJSON()?.code === GPU_CELL
      );
      const sent = page.waitForRequest(request => request.url().includes('api_extension/migrate'));
      await startCell(page, 0);
      const answer = await classified;
      // Only the verdict decides here: the classifier may answer at the first GPU statement.
      expect(answer.request().postDataJSON().first_hit).toBe(true);
      expect((await answer.json()).needs_gpu).toBe(true);
      expect((await sent).postDataJSON()).toMatchObject({
        target: 'gpu',
        reason: 'auto',
        pending_cell: { code: GPU_CELL }
      });
      await expect(gpuDialog(page)).toHaveCount(0);
      // Then as any move on this machine: the patch step fails, and says why.
      await expect(toast(page, 'The move to a GPU pod failed')).toBeVisible({ timeout: 60000 });
    } finally {
      await setSetting(page, 'askBeforeMoving', true);
    }
  });

  test('a CUDA error in an output on a CPU pod offers the move', async ({ page }) => {
    await page.notebook.createNew();
    await page.notebook.setCell(
      0,
      'code',
      'raise RuntimeError("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver")'
    );
    await page.notebook.runCell(0, { inplace: true });
    const offer = toast(page, 'This cell needs a GPU: no NVIDIA driver on this pod');
    await expect(offer).toBeVisible();
    await expect(offer.getByRole('button', { name: 'Move to GPU and run it there' })).toBeVisible();
    await shot(page, 'cuda-error-offer');
  });

  test('a move that would stop a terminal or lose a variable names them first; Cancel does not move', async ({
    page
  }) => {
    // A terminal cannot be saved, nor a generator: the GPU cell's dialog and the Move
    // command say so, before anything is saved.
    const terminal = await page.evaluate(async () => {
      const session = await (window as any).jupyterapp.serviceManager.terminals.startNew();
      return session.name as string;
    });
    try {
      await notebookWithGpuCell(page, 'stops.ipynb');
      await page.notebook.addCell('code', 'gen = (i for i in range(3))');
      await page.notebook.runCell(2);
      await startCell(page, 0);
      const stops = `These stop with the pod and are not saved: terminal ${terminal}.`;
      // The notebook keeps JupyterLab's new name (Untitled<N>.ipynb).
      const lost = 'These variables cannot be saved and will not come back: gen \\(Untitled\\d*\\.ipynb\\)\\.';
      await expect(gpuDialog(page).locator('.gpushift-will-stop')).toHaveText(stops);
      await expect(gpuDialog(page).locator('.gpushift-unsaved')).toHaveText(new RegExp(`^${lost}$`));
      await page.keyboard.press('Escape');
      await expect(gpuDialog(page)).toBeHidden();

      // Not awaited in the page: the command resolves only once the dialog is answered.
      await page.evaluate(() => {
        void (window as any).jupyterapp.commands.execute('gpushift:move-to-gpu');
      });
      const confirm = page.locator('.jp-Dialog').filter({ hasText: 'Move to a GPU pod?' });
      await expect(confirm.locator('.gpushift-will-stop')).toHaveText(
        new RegExp(`^${stops.replace(/[.]/g, '\\.')} ${lost}$`)
      );
      await shot(page, 'move-will-stop');
      await confirm.locator('.jp-Dialog-footer').getByRole('button', { name: 'Cancel' }).click();
      await expect(confirm).toBeHidden();
      await expect(toast(page, 'Moving to a GPU pod')).toHaveCount(0);
      await expect(podStatus(page)).toHaveText('CPU');
    } finally {
      await page.evaluate(
        name => (window as any).jupyterapp.serviceManager.terminals.shutdown(name),
        terminal
      );
    }
  });
});
