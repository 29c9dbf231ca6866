/**
 * A REAL move, end to end (fake_gpu: the GPU node is a kwok node and the local pod runner
 * marks the pod on it with GPUSHIFT_FAKE_GPU; this machine has no GPU). The browser drives
 * the real JupyterLab behind the notebook proxy; Kubernetes (local control plane, notebook
 * controller stand-in, gpushift's webhook and sidecar) recreates pod demo-0 under the
 * same URL; the page waits for it, restores the variables into a fresh kernel and runs
 * the held cell there.
 *
 * The tests run in order: the second moves back from the GPU pod the first moved to.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { Page } from '@playwright/test';

import { captureNotices, gpuDialog, notices, podStatus, prompt, startCell, toast } from '../tests/helpers';
import {
  CHECKSUM_CELL,
  checksumOf,
  GPU_CELL,
  NOTEBOOK,
  podFacts,
  restoreDetails,
  SECOND_CHECK_CELL,
  SECOND_STATE_CELL,
  setSources,
  shot,
  STATE_CELL,
  textOutput
} from './steps';

/** Record the title of every dialog that opens from now on (in-page). */
async function recordDialogs(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(() => {
    // A dialog's content is rendered just after its node is added (and emptied when it
    // closes): its text is read a moment later.
    const seen: string[] = [];
    (window as any).gpushiftDialogs = seen;
    new MutationObserver(records => {
      for (const record of records) {
        record.addedNodes.forEach(node => {
          if (node instanceof HTMLElement && node.classList.contains('jp-Dialog')) {
            setTimeout(() => seen.push(node.textContent?.trim() || '(empty dialog)'), 200);
          }
        });
      }
    }).observe(document.body, { childList: true });
  });
}

/** Record the text of every toast shown from now on (in-page; they close by themselves). */
async function recordToasts(page: Page): Promise<void> {
  await page.evaluate(() => {
    const seen: string[] = [];
    (window as any).gpushiftToasts = seen;
    new MutationObserver(() => {
      document.querySelectorAll('.Toastify__toast').forEach(node => {
        const text = node.textContent?.trim() ?? '';
        if (text && !seen.includes(text)) {
          seen.push(text);
        }
      });
    }).observe(document.body, { childList: true, subtree: true, characterData: true });
  });
}

async function toastsSeen(page: Page): Promise<string[]> {
  return page.evaluate(() => (window as any).gpushiftToasts ?? []);
}

async function dialogsSeen(page: IJupyterLabPageFixture): Promise<string[]> {
  return page.evaluate(() => (window as any).gpushiftDialogs ?? []);
}

async function setAutosaveInterval(page: IJupyterLabPageFixture, seconds: number): Promise<void> {
  await page.evaluate(async interval => {
    const registry: any = await (window as any).galata.getPlugin(
      '@jupyterlab/apputils-extension:settings'
    );
    await registry.set('@jupyterlab/docmanager-extension:plugin', 'autosaveInterval', interval);
  }, seconds);
}

// Galata's Node-side helpers (the per-test folder, the kernel/session bookkeeping) assume
// a server at the origin's root; here JupyterLab lives under /notebook/<ns>/<name>/ and
// the server itself is replaced mid-test. The folder is made by e2e_launcher.py in the
// workspace, which is fresh on every run.
test.use({ tmpPath: 'e2e', kernels: null, sessions: null, terminals: null } as any);
test.describe.configure({ mode: 'serial' });

/** A move takes 10-30 s here; the restore and the pending cell a few more. */
const MOVE_TIMEOUT = 180000;
const VARIABLES = ['big', 'frame', 'point', 'counter'];

/** The id of the kernel of the notebook in the page's main area (null: none). */
async function kernelOf(page: Page): Promise<string | null> {
  return page.evaluate(
    () => (window as any).jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.id ?? null
  );
}

test.describe('a real move between pods (fake_gpu)', () => {
  test('fake_gpu: CPU -> GPU automatically: the held cell runs on the GPU pod with the state restored', async ({
    page
  }) => {
    const guardLog: string[] = [];
    page.on('console', message => {
      if (message.text().includes('connection lost during a move; no dialog')) {
        guardLog.push(message.text());
      }
    });
    await expect(podStatus(page)).toHaveText('CPU', { timeout: 60000 });
    const before = await podFacts(page);
    expect(before.usingGPU).toBe(false);

    expect(await page.notebook.createNew()).toBe(NOTEBOOK);
    await setSources(page, [STATE_CELL, GPU_CELL]);
    await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 120000 });
    await page.notebook.save();
    await page.notebook.runCell(0, { inplace: true });
    const checksum = checksumOf(await textOutput(page, 0));
    expect(checksum, `the state cell printed ${await textOutput(page, 0)}`).toBeTruthy();
    // A second notebook with its own state, open in another tab of the page: it moves too.
    const second = await page.notebook.createNew();
    await setSources(page, [SECOND_STATE_CELL]);
    await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 120000 });
    await page.notebook.runCell(0, { inplace: true });
    expect(await textOutput(page, 0)).toContain('second 42');
    await page.notebook.save();
    expect(await page.notebook.activate(NOTEBOOK)).toBe(true);

    await captureNotices(page);
    await recordDialogs(page);
    // Autosave due during the move (every 2 s; the cell's outputs make the notebook
    // dirty): it waits for the move instead of failing against the restarting pod.
    await setAutosaveInterval(page, 2);
    await startCell(page, 1);
    const dialog = gpuDialog(page);
    await expect(dialog).toBeVisible();
    await expect(dialog).toContainText('device = "cuda"');
    await expect(prompt(page, 1)).toHaveText('[ ]:'); // held: it has not run
    // Issue 16's figure, printed, not asserted (speed is measured in bench/): from the
    // click to the held cell's output on the new pod, watched in the page every 50 ms.
    const clicked = Date.now();
    const heldCellRan = page
      .waitForFunction(
        () =>
          /\[\d+\]:/.test(
            document.querySelectorAll('.jp-Notebook .jp-Cell')[1]?.querySelector('.jp-InputPrompt')?.textContent ?? ''
          ),
        null,
        { polling: 50, timeout: MOVE_TIMEOUT }
      )
      .then(
        () => Date.now(),
        () => null
      );
    await dialog.getByRole('button', { name: 'Move to GPU now' }).click();
    await expect(prompt(page, 1)).toHaveText('[⏳]:'); // it waits for the move

    // Progress through the phases (a move takes a few seconds here: the page sees some
    // of them, the notification history below has them all).
    const progress = toast(page, /Moving to a GPU pod/);
    await expect(progress).toBeVisible({ timeout: 60000 });
    await expect(podStatus(page)).toContainText('Moving to GPU');
    await shot(page, 'e2e-progress');

    // Back on the new pod: restored, and the status bar says GPU. The other notebook's
    // notice ("<path>: Moved. Restored 1 variable…") can be up at the same time.
    const restored = toast(page, /Restored \d+ variable/).filter({
      hasNotText: /\.ipynb: Moved/
    });
    await expect(restored).toBeVisible({ timeout: MOVE_TIMEOUT });
    await restored.hover(); // keeps the toast from closing by itself
    await expect(podStatus(page)).toHaveText(/^GPU/, { timeout: 60000 });
    // JupyterLab's "Server Connection Error" dialog is not left over from the restart.
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    await shot(page, 'e2e-restored');
    const details = await restoreDetails(page, restored);
    for (const name of VARIABLES) {
      expect(details).toMatch(new RegExp(`Restored: .*\\b${name}\\b`));
    }

    // The held cell ran on the new pod, with the restored state.
    await expect(prompt(page, 1)).toHaveText(/\[\d+\]:/, { timeout: 60000 });
    const output = await textOutput(page, 1);
    expect(output).toContain(`checksum ${checksum} frame (1000, 2) point 5.0`);
    expect(output).toContain('restores 1'); // the state went into the kernel once
    expect(output).toContain('gpu kwok-gpu-0 cuda');
    const ranAt = await heldCellRan;
    console.log(
      ranAt === null
        ? '[issue 16] "Move to GPU now" -> held cell\'s output: not measured (the page was reloaded)'
        : `[issue 16] "Move to GPU now" -> held cell's output: ${((ranAt - clicked) / 1000).toFixed(2)} s ` +
            '(two notebooks, a small state; target 6 s)'
    );
    await shot(page, 'e2e-output');
    await page.notebook.save(); // the next test reopens it

    // The second notebook's tab was switched to the kernel its state went into.
    await expect
      .poll(async () => (await notices(page)).some(m => m.endsWith(`${second}: Moved. Restored 1 variable: second.`)), {
        timeout: 60000
      })
      .toBe(true);
    expect(await page.notebook.activate(second!)).toBe(true);
    await setSources(page, [SECOND_CHECK_CELL], 1);
    await page.notebook.runCell(1, { inplace: true });
    expect(await textOutput(page, 1)).toContain('second 42 gpu kwok-gpu-0');
    await page.notebook.save();
    expect(await page.notebook.activate(NOTEBOOK)).toBe(true);

    const after = await podFacts(page);
    expect(after.usingGPU).toBe(true);
    expect(after.node).toBe('kwok-gpu-0');
    expect(after.PodName).toBe(before.PodName); // the same pod name, the same URL
    const seen = await notices(page);
    // The page follows the phases by polling: which of the quick early ones it sees
    // varies (the checkpoint is taken before /migrate answers), the last ones it sees.
    const at = (text: string) => seen.findIndex(m => m.includes(text));
    expect(at('Moving to a GPU pod'), JSON.stringify(seen)).toBe(0);
    expect(at('restoring your variables'), JSON.stringify(seen)).toBeGreaterThan(0);
    expect(at('Now on a GPU pod'), JSON.stringify(seen)).toBeGreaterThan(at('restoring your variables'));
    // The steps count 1/3, 2/3, 3/3: none skipped, none going back, ending at 3/3.
    const steps = seen
      .map(m => /\((\d)\/3\)$/.exec(m))
      .filter((m): m is RegExpExecArray => m !== null)
      .map(m => Number(m[1]));
    expect(steps[0], JSON.stringify(seen)).toBe(1);
    expect(steps[steps.length - 1], JSON.stringify(seen)).toBe(3);
    for (let i = 1; i < steps.length; i++) {
      expect([0, 1], JSON.stringify(seen)).toContain(steps[i] - steps[i - 1]);
    }
    // No dialog came up during the move: neither JupyterLab's connection-lost one (how
    // often it was asked for depends on when its polls hit the restart: recorded) nor a
    // "File Save Error" from an autosave against the restarting pod.
    // (the other dialog is this test's own look at the restore's details)
    expect(await dialogsSeen(page)).toEqual([
      expect.stringContaining('needs a GPU'),
      expect.stringContaining('Restored:')
    ]);
    test.info().annotations.push({
      type: 'connection-lost dialogs skipped during the move',
      description: String(guardLog.length)
    });
    // The autosave that fell due during the move has happened since.
    await expect
      .poll(() => page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.context.model.dirty), {
        timeout: 30000
      })
      .toBe(false);
    await setAutosaveInterval(page, 120);
  });

  test('fake_gpu: GPU -> CPU by hand with "Move to CPU": the state is back on the CPU pod', async ({
    page
  }) => {
    await expect(podStatus(page)).toHaveText(/^GPU/, { timeout: 60000 });
    expect(await page.notebook.open(NOTEBOOK)).toBe(true);
    await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 120000 });
    // The state of the GPU pod's kernel (restored there by the first test).
    const check = await page.notebook.getCellCount();
    await setSources(page, [CHECKSUM_CELL], check);
    await page.notebook.runCell(check, { inplace: true });
    const onGpu = await textOutput(page, check);
    expect(onGpu).toContain('gpu kwok-gpu-0');
    const checksum = checksumOf(onGpu);
    expect(checksumOf(await textOutput(page, 0)), 'the saved state cell output').toBe(checksum);
    await captureNotices(page);
    // A second tab on the same notebook, as a user with two windows has: the move
    // restores the state once, and both tabs end on the kernel that holds it.
    const base = test.info().project.use.baseURL;
    const other = await page.context().newPage();
    const notebookPath: string = await page.evaluate(
      () => (window as any).jupyterapp.shell.currentWidget.context.path
    );
    await other.goto(`${base}/lab/tree/${notebookPath}`);
    await expect(other.locator('[data-testid="gpushift-status"]')).toHaveText(/^GPU/, {
      timeout: 120000
    });
    await expect.poll(() => kernelOf(other), { timeout: 120000 }).toBe(await kernelOf(page));
    await recordToasts(other);

    // This tab comes back after the other one, as a slower or background tab does: its
    // first look at the new pod's record of the move is held until the other tab has
    // collected the restore, after which the server no longer says
    // `restored_on_server`. It watched the move: it still switches to the kernel that
    // holds the state (it stayed on "No Kernel" once, in CI).
    const otherCollected = async () =>
      (await toastsSeen(other)).some(t => /Restored \d+ variable/.test(t));
    let firstSeenOnTheNewPod: Record<string, unknown> | null = null;
    await page.route(/\/api_extension\/migration(\?|$)/, async route => {
      let response = await route.fetch();
      const phase = (await response.json().catch(() => null))?.migration?.phase;
      if (firstSeenOnTheNewPod === null && (phase === 'restoring' || phase === 'done')) {
        await expect.poll(otherCollected, { timeout: MOVE_TIMEOUT }).toBe(true);
        response = await route.fetch();
        firstSeenOnTheNewPod = (await response.json()).migration;
      }
      // The page gives up on a poll after 5 s (and polls again): nothing to answer then.
      await route.fulfill({ response }).catch(() => undefined);
    });

    await page.menu.clickMenuItem('Kernel>Move to CPU');
    const restored = toast(page, /Restored \d+ variable/).filter({
      hasNotText: /\.ipynb: Moved/
    });
    await expect(restored).toBeVisible({ timeout: MOVE_TIMEOUT });
    await restored.hover();
    expect(firstSeenOnTheNewPod).toMatchObject({ phase: 'done', restored_on_server: false });
    await page.unroute(/\/api_extension\/migration(\?|$)/);
    await expect(podStatus(page)).toHaveText('CPU', { timeout: 60000 });
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    const details = await restoreDetails(page, restored);
    for (const name of VARIABLES) {
      expect(details).toMatch(new RegExp(`Restored: .*\\b${name}\\b`));
    }

    // The same check in the CPU pod's fresh kernel: the same state, no GPU.
    await page.notebook.runCell(check, { inplace: true });
    const onCpu = await textOutput(page, check);
    expect(onCpu).toContain(`checksum ${checksum} frame (1000, 2) point 5.0`);
    expect(onCpu).toContain('restores 1'); // once, though two tabs were open
    expect(onCpu).toContain('gpu None');
    // The other tab is on that kernel too, and was told what came back.
    await expect.poll(() => kernelOf(other), { timeout: 60000 }).toBe(await kernelOf(page));
    await expect
      .poll(async () => (await toastsSeen(other)).some(t => /Restored \d+ variable/.test(t)), {
        timeout: 60000
      })
      .toBe(true);
    await other.close();
    await shot(page, 'e2e-back-on-cpu');

    const facts = await podFacts(page);
    expect(facts.usingGPU).toBe(false);
    expect(facts.node).not.toBe('kwok-gpu-0');
    const seen = await notices(page);
    expect(seen.some(m => m.startsWith('Moving to a CPU pod'))).toBe(true);
  });
});
