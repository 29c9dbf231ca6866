/**
 * On a CPU pod: background checkpoints. After a cell, with the kernel idle, the server
 * saves the variables on its own (here every 2 s, 0.5 s after a cell; skipped above
 * 8 MiB: see pod_server.py) and the status bar item says so in its tooltip; a restarted
 * kernel is offered that checkpoint, with no checkpoint asked for. A state over the bound
 * is not saved in the background, and the item says so (a mark, and why in the tooltip).
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';

import { gpushiftApi, podStatus, restartKernel, resumeDialog, runNewCell, toast } from './helpers';

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
});
