/**
 * A REAL move to GPU that cannot complete (fake_gpu: the A100 node is a kwok node with one
 * GPU and 8 CPUs): a plain pod takes all of that node's CPU first. Its GPU stays free, so
 * the GPU capacity the webhook publishes (GPUs only) lets the move start, but the
 * notebook's new GPU pod cannot be scheduled and stays Pending; the
 * migration guard (run by the e2e demo with a 10 s ready timeout) rolls the Notebook back
 * to CPU and the pod is recreated there, with an empty kernel. The page waits out the
 * restart, restores the variables from the checkpoint taken before the move, says the move
 * was rolled back and why (the scheduler's reason), and does NOT run the held cell.
 *
 * Runs after move.spec.ts on the same demo (the notebook is on CPU then) but needs
 * nothing from it: its own notebook, its own state.
 */
import { expect, test } from '@jupyterlab/galata';
import { captureNotices, gpuDialog, notices, podStatus, prompt, startCell, toast } from '../tests/helpers';
import {
  CHECKSUM_CELL,
  checksumOf,
  GPU_CELL,
  podFacts,
  restoreDetails,
  setSources,
  shot,
  STATE_CELL,
  textOutput
} from './steps';
import { deletePod, runPod } from './cluster';

test.use({ tmpPath: 'e2e', kernels: null, sessions: null, terminals: null } as any);

/** Guard timeout (10 s) + the CPU pod's JupyterLab start + the restore, on 2 cores. */
const ROLLBACK_TIMEOUT = 200000;
const HOG = 'gpu-hog-e2e';
const VARIABLES = ['big', 'frame', 'point', 'counter'];

/** A plain pod that takes all of the A100 node's CPU (scheduled before this returns). */
function fillTheGpuNode(): void {
  runPod(HOG, {
    containers: [{ name: 'hog', image: 'busybox', resources: { requests: { cpu: '8' }, limits: { cpu: '8' } } }],
    tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }],
    nodeSelector: { 'kubernetes.io/hostname': 'kwok-gpu-0' }
  });
}

function emptyTheGpuNode(): void {
  deletePod(HOG);
}

test.describe('a move to GPU whose pod cannot be scheduled (fake_gpu)', () => {
  test.afterAll(() => emptyTheGpuNode());

  test('fake_gpu: the GPU node full: rolled back to CPU, variables restored there, the held cell not run', async ({
    page
  }) => {
    await expect(podStatus(page)).toHaveText('CPU', { timeout: 60000 });
    const before = await podFacts(page);
    fillTheGpuNode();

    const name = await page.notebook.createNew();
    expect(name).toBeTruthy();
    await setSources(page, [STATE_CELL, GPU_CELL]);
    await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 120000 });
    await page.notebook.save();
    await page.notebook.runCell(0, { inplace: true });
    const checksum = checksumOf(await textOutput(page, 0));
    expect(checksum, `the state cell printed ${await textOutput(page, 0)}`).toBeTruthy();

    await captureNotices(page);
    await startCell(page, 1);
    const dialog = gpuDialog(page);
    await expect(dialog).toBeVisible();
    await dialog.getByRole('button', { name: 'Move to GPU now' }).click();
    await expect(toast(page, /Moving to a GPU pod/)).toBeVisible({ timeout: 60000 });

    // The guard rolls back, the CPU pod starts, the page restores and says so.
    const recovered = toast(page, /Move to GPU rolled back/);
    await expect(recovered).toBeVisible({ timeout: ROLLBACK_TIMEOUT });
    await recovered.hover(); // keeps the toast in place
    await expect(recovered).toContainText('Insufficient'); // the scheduler's reason
    await expect(recovered).toContainText(/Restored \d+ variables? on CPU/);
    await expect(recovered).toContainText('Held cell NOT run');
    await expect(recovered.getByRole('button', { name: 'Try again' })).toBeVisible();
    await expect(podStatus(page)).toHaveText('CPU', { timeout: 60000 });
    await expect(page.locator('.jp-Dialog')).toHaveCount(0); // no connection-lost dialog left
    await shot(page, 'e2e-rolled-back');

    const details = await restoreDetails(page, recovered, 'The move did not complete');
    expect(details).toMatch(/rolled back: .*Insufficient cpu/);
    expect(details).toContain('restored on this CPU pod');
    for (const variable of VARIABLES) {
      expect(details).toMatch(new RegExp(`Restored: .*\\b${variable}\\b`));
    }
    expect(details).toContain('was NOT run: it needs a GPU');

    // The held cell never ran, on either pod.
    await expect(prompt(page, 1)).toHaveText('[ ]:');
    expect(await textOutput(page, 1)).toBe('');
    // The CPU pod's fresh kernel has the state back.
    await setSources(page, [CHECKSUM_CELL], 2);
    await page.notebook.runCell(2, { inplace: true });
    const onCpu = await textOutput(page, 2);
    expect(onCpu).toContain(`checksum ${checksum} frame (1000, 2) point 5.0`);
    expect(onCpu).toContain('restores 1'); // recovered once
    expect(onCpu).toContain('gpu None');

    const after = await podFacts(page);
    expect(after.usingGPU).toBe(false);
    expect(after.PodName).toBe(before.PodName);
    // The server's record: rolled back after the pod was replaced, and recovered already
    // (a second restore would be refused: it is once per pod).
    const answer = await page.request.get(`${test.info().project.use.baseURL}/api_extension/migration`);
    expect(answer.status()).toBe(200);
    const migration = (await answer.json()).migration ?? {};
    expect(migration.phase, JSON.stringify(migration)).toBe('rolled_back');
    expect(migration.error).toContain('nvidia.com/gpu');
    expect(migration.history.map((h: { phase: string }) => h.phase)).toContain('recreating');
    expect(migration.recoverable).toBe(false);
    const seen = await notices(page);
    expect(
      seen.some(m => m.startsWith('The move to a GPU pod was rolled back')),
      JSON.stringify(seen)
    ).toBe(true);
    await page.notebook.save();
  });
});
