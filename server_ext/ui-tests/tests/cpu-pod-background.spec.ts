/**
 * On a CPU pod: background checkpoints. After a cell, with the kernel idle, the server
 * saves the variables on its own (here every 2 s, 0.5 s after a cell; skipped above
 * 8 MiB: see pod_server.py) and the status bar item says so in its tooltip; a restarted
 * kernel is offered that checkpoint, with no checkpoint asked for. A state over the bound
 * is not saved in the background, and the item says so (a mark, and why in the tooltip).
 * The user's setting "Save variables in the background" turns them off (and on) for them.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';

import {
  gpushiftApi,
  podStatus,
  restartKernel,
  resumeDialog,
  runNewCell,
  setSetting,
  toast
} from './helpers';
import { reloadPlain } from './outage';

/** A new notebook (in the test's folder), its kernel up; its name. */
async function newNotebook(page: IJupyterLabPageFixture): Promise<string> {
  const name = await page.notebook.createNew(); // no rename: the session keeps its path
  expect(name).toBeTruthy();
  await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 60000 });
  return name as string;
}

async function currentKernelId(page: IJupyterLabPageFixture): Promise<string> {
  return page.evaluate(
    () => (window as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel.id
  );
}

test.describe('CPU pod: background checkpoints', () => {
  // Galata's tracking of the kernels API answers every POST under /api/kernels with 201,
  // the restart's too (JupyterLab expects 200, and never reconnects to the restarted
  // kernel): the kernels are not tracked here (see cpu-pod-resume.spec.ts).
  test.use({ kernels: null });

  test.afterEach(async ({ page }) => {
    // The server keeps the user's interval for every later page: back to the default.
    await page.evaluate(() => typeof (window as any).galata?.app).catch(() => undefined);
    await setSetting(page, 'backgroundCheckpoints', true).catch(() => undefined);
    await gpushiftApi(page, 'PUT', 'background', { interval_seconds: null }).catch(() => undefined);
  });

  test('the variables are saved in the background, and a restarted kernel resumes them', async ({
    page
  }) => {
    const name = await newNotebook(page);
    await page.notebook.setCell(0, 'code', 'x = 41');
    await page.notebook.runCell(0, { inplace: true });
    await page.notebook.save();

    // No checkpoint asked for: the server saves on its own, the item says when.
    await expect(podStatus(page)).toHaveAttribute(
      'title',
      /\n1 variable saved \d\d:\d\d \(background\)\.$/,
      { timeout: 30000 }
    );
    await expect(podStatus(page)).toHaveText('CPU');
    await expect(podStatus(page)).not.toHaveAttribute('data-background', /./);
    const kernelId = await currentKernelId(page);
    const report = await gpushiftApi(page, 'GET', `background?kernel_id=${kernelId}`);
    expect(report, JSON.stringify(report.json)).toMatchObject({
      status: 200,
      json: { state: 'saved', variables: 1 }
    });

    await restartKernel(page);
    const dialog = resumeDialog(page);
    await expect(dialog).toBeVisible({ timeout: 60000 });
    await expect(dialog).toContainText(/1 variable from \d\d:\d\d\./);
    await dialog.getByRole('button', { name: 'Resume', exact: true }).click();
    await expect(dialog).toBeHidden();
    await expect(toast(page, `Restored 1 variable of ${name}`)).toBeVisible({ timeout: 60000 });

    const index = await runNewCell(page, 'print(x)');
    expect(await page.notebook.getCellTextOutput(index)).toEqual(['41\n']);
  });

  test('a state over the bound is not saved in the background, and the item says so', async ({
    page
  }) => {
    await newNotebook(page);
    await page.notebook.setCell(0, 'code', 'big = bytes(16 * 2**20)');
    await page.notebook.runCell(0, { inplace: true });

    await expect(podStatus(page)).toHaveAttribute('data-background', 'skipped', { timeout: 30000 });
    await expect(podStatus(page)).toHaveAttribute(
      'title',
      /\nNot saved in the background: the variables take about 16 MiB, more than the 8 MiB background checkpoints are made for: they are saved on a move or on demand\.$/
    );
    await expect(podStatus(page)).toHaveText('CPU');

    // Small again: saved in the background, the mark gone.
    await runNewCell(page, 'del big; y = 1');
    await expect(podStatus(page)).toHaveAttribute('title', /\n1 variable saved \d\d:\d\d \(background\)\.$/, {
      timeout: 30000
    });
    await expect(podStatus(page)).not.toHaveAttribute('data-background', /./);
  });

  test('the setting turns them off for the user, and the page sends it again when it starts', async ({
    page
  }) => {
    await newNotebook(page);
    const isPut = (request: { url(): string; method(): string }) =>
      request.url().includes('api_extension/background') && request.method() === 'PUT';

    let sent = page.waitForRequest(isPut);
    await setSetting(page, 'backgroundCheckpoints', false);
    expect((await sent).postDataJSON()).toEqual({ interval_seconds: 0 });
    await page.notebook.setCell(0, 'code', 'x = 1');
    await page.notebook.runCell(0, { inplace: true });
    await expect(podStatus(page)).toHaveAttribute(
      'title',
      /\nYou turned background checkpoints off \(setting "Save variables in the background"\)\.$/,
      { timeout: 30000 }
    );
    await expect(podStatus(page)).not.toHaveAttribute('data-background', /./);
    const kernelId = await currentKernelId(page);
    const report = await gpushiftApi(page, 'GET', `background?kernel_id=${kernelId}`);
    expect(report, JSON.stringify(report.json)).toMatchObject({
      status: 200,
      json: { state: 'off', why: 'you turned background checkpoints off', user_interval_s: 0 }
    });

    // A restarted server forgets it: the page sends it again when it starts.
    await page.notebook.save(); // nothing unsaved to hold the reload
    await gpushiftApi(page, 'PUT', 'background', { interval_seconds: null });
    const answer = page.waitForResponse(response => isPut(response.request()));
    await reloadPlain(page); // Galata's own reload waits for a Launcher
    expect(await (await answer).json()).toMatchObject({ interval_s: 0, user_interval_s: 0 });
    // Galata's in-page helpers take the app when first asked for it (its reload asks).
    await page.evaluate(() => typeof (window as any).galata.app);

    // On again, with the command: saved in the background after the next cell.
    const toggle = 'gpushift:toggle-background-checkpoints';
    const label = () => page.evaluate(id => (window as any).jupyterapp.commands.label(id), toggle);
    await expect.poll(label).toBe('Turn background checkpoints on');
    sent = page.waitForRequest(isPut);
    await page.evaluate(id => (window as any).jupyterapp.commands.execute(id), toggle);
    expect((await sent).postDataJSON()).toEqual({ interval_seconds: null });
    expect(await label()).toBe('Turn background checkpoints off');
    // The notebook is back (the layout restored), its kernel too.
    await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 60000 });
    expect(await page.notebook.isAnyActive()).toBe(true);
    await runNewCell(page, 'y = 2');
    await expect(podStatus(page)).toHaveAttribute('title', /\n\d variables? saved \d\d:\d\d \(background\)\.$/, {
      timeout: 30000
    });
  });
});
