/**
 * On a CPU pod: a notebook whose kernel is a fresh process (here: restarted from the
 * Kernel menu) while a checkpoint of its earlier kernel is kept is offered to "Resume
 * where you left off"; "Resume" brings the variables back, "Start fresh" does not.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { Locator } from '@playwright/test';

import { gpushiftApi, restartKernel, resumeDialog, runNewCell, shot, toast } from './helpers';

/**
 * A new notebook (in the test's folder) that ran `x = 41; names = ['a', 'b']`, with a
 * checkpoint of its kernel saved through the extension's API, and no resume offered for
 * its first kernel (it had no checkpoint). Returns its path.
 */
async function notebookWithCheckpoint(page: IJupyterLabPageFixture, folder: string): Promise<string> {
  const name = await page.notebook.createNew(); // no rename: the session keeps its path
  expect(name).toBeTruthy();
  const path = `${folder}/${name}`;
  await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 60000 });
  await page.notebook.setCell(0, 'code', "x = 41; names = ['a', 'b']");
  await page.notebook.runCell(0, { inplace: true });
  const kernelId: string = await page.evaluate(
    () => (window as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel.id
  );
  // This kernel has run a cell: no offer, whatever the checkpoints.
  const before = await gpushiftApi(page, 'GET', `resume?kernel_id=${kernelId}&path=${encodeURIComponent(path)}`);
  expect(before, JSON.stringify(before.json)).toMatchObject({ status: 200, json: { offer: false } });
  const saved = await gpushiftApi(page, 'POST', 'checkpoint', { kernel_id: kernelId, path });
  expect(saved, JSON.stringify(saved.json)).toMatchObject({ status: 200, json: { path } });
  await page.notebook.save();
  await expect(resumeDialog(page)).toHaveCount(0);
  return path;
}

function output(page: IJupyterLabPageFixture, index: number): Locator {
  return page.locator('.jp-Notebook .jp-Cell').nth(index).locator('.jp-OutputArea-output');
}

test.describe('CPU pod: resume where you left off', () => {
  // Galata's tracking of the kernels API answers every POST under /api/kernels with 201,
  // the restart's too (JupyterLab expects 200, and never reconnects to the restarted
  // kernel): the kernels are not tracked here; the sessions' tracking still shuts them
  // down after each test.
  test.use({ kernels: null });

  test('a restarted kernel is offered its checkpoint; "Resume" brings the variables back', async ({
    page,
    tmpPath
  }) => {
    const path = await notebookWithCheckpoint(page, tmpPath);
    const name = path.split('/').pop() as string;
    await restartKernel(page);

    const dialog = resumeDialog(page);
    await expect(dialog).toBeVisible({ timeout: 60000 });
    const escaped = name.replace('.', '\\.');
    await expect(dialog).toContainText(
      new RegExp(`${escaped} has a checkpoint from an earlier kernel: 2 variables from \\d\\d:\\d\\d\\.`)
    );
    await expect(dialog.locator('.gpushift-resume-variables')).toContainText('x');
    await expect(dialog.locator('.gpushift-resume-variables')).toContainText('names');
    await expect(dialog.getByRole('button', { name: 'Start fresh' })).toBeVisible();
    await shot(page, 'resume-dialog');
    await dialog.getByRole('button', { name: 'Resume', exact: true }).click();
    await expect(dialog).toBeHidden();
    await expect(toast(page, `Restored 2 variables of ${name}`)).toBeVisible({ timeout: 60000 });

    const index = await runNewCell(page, 'print(x + 1, names)');
    expect(await page.notebook.getCellTextOutput(index)).toEqual(["42 ['a', 'b']\n"]);
    // Asked once for this kernel process.
    await page.waitForTimeout(1500);
    await expect(resumeDialog(page)).toHaveCount(0);
  });

  test('"Start fresh" leaves the restarted kernel empty, and is not asked again', async ({
    page,
    tmpPath
  }) => {
    await notebookWithCheckpoint(page, tmpPath);
    await restartKernel(page);

    const dialog = resumeDialog(page);
    await expect(dialog).toBeVisible({ timeout: 60000 });
    await dialog.getByRole('button', { name: 'Start fresh' }).click();
    await expect(dialog).toBeHidden();

    const index = await runNewCell(page, 'print(x + 1, names)');
    await expect(output(page, index)).toContainText("NameError: name 'x' is not defined");
    await page.waitForTimeout(1500);
    await expect(resumeDialog(page)).toHaveCount(0);
    await expect(toast(page, /Restored \d+ variable/)).toHaveCount(0);
  });
});
