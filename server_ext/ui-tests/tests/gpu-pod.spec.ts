/**
 * On a GPU pod (fake_gpu: the sidecar is told it has nvidia.com/gpu x1; this machine has
 * no GPU) with a short idle timer: 10 s active, then a 30 s warning.
 */
import { expect, test } from '@jupyterlab/galata';

import {
  PAST_A_PREVIEW_MS,
  podStatus,
  previewsSent,
  restartIdleTimer,
  shot,
  startCell,
  toast
} from './helpers';

/** Flagged as GPU work by the classifier (`.cuda()`), and runs without torch. */
const GPU_WORK = 't = type("T", (), {"cuda": lambda self: self})().cuda()';
/** The fake GPU's name comes from the server extension's probe (GPUSHIFT_FAKE_GPU). */
const GPU_TEXT = /^GPU · \S+ ×1$/;

test.describe('GPU pod (fake_gpu)', () => {
  test('fake_gpu: the status bar shows the GPU type and count', async ({ page }) => {
    // Short in the status bar; the GPU's full name and the idle bounds in the tooltip.
    // The pod's timer has run since the pod started (and earlier tests): start it over,
    // so the status bar is looked at in the 10 s before the warning, not by chance.
    await restartIdleTimer(page);
    await expect(podStatus(page)).toHaveText(GPU_TEXT);
    await expect(podStatus(page)).toHaveAttribute('title', /runs on a GPU pod: NVIDIA .*×1/);
    await expect(podStatus(page)).toHaveAttribute('title', /your admin allows 40 s to 10 min/);
    await shot(page, 'status-gpu');
  });

  test('fake_gpu: no cell is previewed; a run is classified as it starts', async ({ page }) => {
    // On a GPU pod a cell never waits for the classifier (it only tells whether the cell
    // is GPU work, for the idle timer), so there is nothing to classify ahead.
    const previews = previewsSent(page);
    const tracked = page.waitForResponse(
      r => r.url().includes('/api_extension/classify') && r.request().postDataJSON()?.code === GPU_WORK
    );
    await page.notebook.createNew();
    await page.notebook.setCell(0, 'code', GPU_WORK);
    await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 60000 });
    await page.waitForTimeout(PAST_A_PREVIEW_MS);
    await startCell(page, 0);
    const answer = await tracked;
    expect((await answer.json()).needs_gpu).toBe(true);
    // Only `needs_gpu` matters here: the classifier may stop at the first GPU statement.
    expect(answer.request().postDataJSON().first_hit).toBe(true);
    expect(previews).toEqual([]);
  });

  test('fake_gpu: idle countdown, and "Stay on GPU" keeps the GPU', async ({ page }) => {
    await page.notebook.createNew();
    // A GPU cell restarts the idle timer: the warning comes 10 s after it finished.
    await page.notebook.setCell(0, 'code', GPU_WORK);
    await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 60000 });
    await startCell(page, 0);
    // Ran (not necessarily as [1]: a warning left running by earlier tests may have
    // checkpointed this kernel first, and kishu's checkpoint takes an execution count).
    await expect(page.locator('.jp-Notebook .jp-Cell').nth(0).locator('.jp-InputPrompt')).toHaveText(
      /^\[\d+\]:$/
    );
    await expect(podStatus(page)).toHaveText(GPU_TEXT);

    // A terminal cannot move with the pod: the warning names it.
    const terminal = await page.evaluate(async () => {
      const session = await (window as any).jupyterapp.serviceManager.terminals.startNew();
      return session.name as string;
    });
    const warning = toast(page, /to a CPU pod in \d:\d\d/);
    try {
      await expect(warning).toBeVisible({ timeout: 30000 });
      await expect(podStatus(page)).toContainText(/· CPU in 0:[0-3]\d/);
      await expect(warning).toContainText(`Not saved: terminal ${terminal}.`);
    } finally {
      await page.evaluate(
        name => (window as any).jupyterapp.serviceManager.terminals.shutdown(name),
        terminal
      );
    }
    // Closed meanwhile: no longer named (asked again every few seconds).
    await expect(warning).toContainText('your variables are saved and restored', { timeout: 10000 });
    const first = await warning.textContent();
    await page.waitForTimeout(2100);
    expect(await warning.textContent()).not.toEqual(first); // it counts down

    await shot(page, 'idle-warning');
    await warning.getByRole('button', { name: 'Stay on GPU' }).click();
    await expect(toast(page, 'Staying on the GPU')).toBeVisible();
    await expect(warning).toHaveCount(0);
    await expect(podStatus(page)).toHaveText(GPU_TEXT);
    // The idle timer's state, in words, in the status item's tooltip.
    await expect(podStatus(page)).toHaveAttribute('title', /Idle timer: the user chose to stay on the GPU/);
    const idle = await page.request.get('/api_extension/idle');
    expect((await idle.json()).state).toBe('active');
  });
});
