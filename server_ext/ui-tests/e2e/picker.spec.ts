/**
 * "Move to GPU…" on the demo's cluster (fake_gpu: kwok nodes, one A100 and one T4 pool
 * behind its own taint, testing/gpushift_testing/demo_gpus.py), with the GPU capacity
 * the webhook publishes every 2 s. The picker shows both profiles with what is free; the
 * T4, its only GPU taken by a plain pod, is greyed with the reason and a move there is
 * refused at once. Then A100 -> T4 (a GPU -> GPU move between profiles) -> CPU, and the
 * Notebook's pod spec is exactly what it was before the first move.
 *
 * Runs after move.spec.ts on the same demo (the notebook is on CPU then).
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';

import { podStatus } from '../tests/helpers';
import { deletePod, notebookNode, notebookPodSpec, publishedFree, takeGpu } from './cluster';
import { shot } from './steps';

test.use({ tmpPath: 'e2e', kernels: null, sessions: null, terminals: null } as any);

/** A move here: the old pod's end, the new one's JupyterLab, the restore (2 cores). */
const MOVE_TIMEOUT = 200000;
const HOG = 'gpu-hog-t4-e2e';
const T4_TOLERATIONS: Record<string, string>[] = [
  { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' },
  { key: 'gpushift.io/gpu-pool', operator: 'Equal', value: 't4', effect: 'NoSchedule' }
];

function picker(page: IJupyterLabPageFixture) {
  return page.locator('.jp-Dialog').filter({ has: page.getByTestId('gpushift-profile-picker') });
}

async function openPicker(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(() => {
    void (window as any).jupyterapp.commands.execute('gpushift:move-to-gpu-profile');
  });
  await expect(picker(page)).toBeVisible({ timeout: 30000 });
}

/** Accept the confirmation a move asks for when it would stop something or leave
 * variables behind (none here, but a leftover of an earlier test must not hang this). */
async function acceptConfirmation(page: IJupyterLabPageFixture, title: string, button: string): Promise<void> {
  const confirm = page.locator('.jp-Dialog').filter({ hasText: title });
  await confirm
    .waitFor({ timeout: 3000 })
    .then(() => confirm.getByRole('button', { name: button, exact: true }).click())
    .catch(() => undefined);
}

/** Pick `profile` and move; waits until the pod is a GPU pod on `node`. */
async function moveTo(page: IJupyterLabPageFixture, profile: string, node: string): Promise<void> {
  await openPicker(page);
  const dialog = picker(page);
  await dialog.locator(`.gpushift-profile[data-profile="${profile}"] input`).check();
  await dialog.getByRole('button', { name: 'Move', exact: true }).click();
  await acceptConfirmation(page, 'Move to a GPU pod?', 'Move to GPU');
  await expect.poll(() => notebookNode(), { timeout: MOVE_TIMEOUT }).toBe(node);
  await expect(podStatus(page)).toHaveText(/^GPU/, { timeout: MOVE_TIMEOUT });
}

test.describe('"Move to GPU…" between GPU profiles (fake_gpu)', () => {
  test.afterAll(() => deletePod(HOG));

  test('fake_gpu: the picker shows what is free; A100 -> T4 -> CPU ends with the original CPU spec', async ({
    page
  }) => {
    await expect(podStatus(page)).toHaveText('CPU', { timeout: 60000 });
    const original = notebookPodSpec();
    takeGpu(HOG, T4_TOLERATIONS, { 'nvidia.com/gpu.product': 'Tesla-T4' });
    await expect.poll(() => publishedFree('nvidia-t4'), { timeout: 30000 }).toBe(0);
    await expect.poll(() => publishedFree('nvidia-1'), { timeout: 30000 }).toBe(1);

    await openPicker(page);
    const dialog = picker(page);
    const a100 = dialog.locator('.gpushift-profile[data-profile="nvidia-1"]');
    const t4 = dialog.locator('.gpushift-profile[data-profile="nvidia-t4"]');
    await expect(a100).toContainText('nvidia-1: NVIDIA-A100-SXM4-40GB ×1 (default)');
    await expect(a100).toContainText('1 free on 1 node');
    await expect(a100.locator('input')).toBeEnabled();
    await expect(a100.locator('input')).toBeChecked();
    await expect(t4).toContainText('nvidia-t4: NVIDIA Tesla-T4 ×1');
    await expect(t4).toContainText('0 free on 1 node');
    await expect(t4).toHaveClass(/gpushift-profile-unavailable/);
    await expect(t4.locator('input')).toBeDisabled();
    await expect(dialog.locator('.gpushift-profile-note')).toContainText('Free GPUs as counted at');
    await shot(page, 'e2e-profile-picker');
    await dialog.getByRole('button', { name: 'Cancel' }).click();

    // Asked for anyway (an older page, another client): refused at once, nothing moved.
    const base = test.info().project.use.baseURL;
    const refused = await page.request.post(`${base}/api_extension/migrate`, {
      data: { target: 'gpu', reason: 'manual', profile: 'nvidia-t4', kernel_id: null, path: null }
    });
    expect(refused.status()).toBe(409);
    expect((await refused.json()).error).toBe('no_free_gpu');
    expect(notebookPodSpec()).toEqual(original);
    await expect(podStatus(page)).toHaveText('CPU');

    await moveTo(page, 'nvidia-1', 'kwok-gpu-0');
    deletePod(HOG);
    await expect.poll(() => publishedFree('nvidia-t4'), { timeout: 30000 }).toBe(1);
    await openPicker(page);
    await expect(picker(page).locator('.gpushift-profile[data-profile="nvidia-1"]')).toContainText(
      'This notebook runs on it now.'
    );
    await picker(page).getByRole('button', { name: 'Cancel' }).click();
    await moveTo(page, 'nvidia-t4', 'kwok-gpu-t4-0');

    await page.evaluate(() => {
      void (window as any).jupyterapp.commands.execute('gpushift:move-to-cpu');
    });
    await acceptConfirmation(page, 'Move to a CPU pod?', 'Move to CPU');
    await expect.poll(() => notebookNode(), { timeout: MOVE_TIMEOUT }).toMatch(/^kwok-cpu-/);
    await expect(podStatus(page)).toHaveText('CPU', { timeout: MOVE_TIMEOUT });
    // The CPU settings the notebook had before the first move, exactly.
    expect(notebookPodSpec()).toEqual(original);
  });
});
