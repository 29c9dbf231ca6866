/**
 * On a CPU pod: a notebook deleted in JupyterLab's file browser keeps its checkpoints
 * until the user says otherwise; gpushift offers to delete them too.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { Locator } from '@playwright/test';

import { gpushiftApi, shot } from './helpers';

/** `GET api_extension/checkpoints?path=`: what the server keeps for `path`. */
async function kept(page: IJupyterLabPageFixture, path: string): Promise<any> {
  const answer = await gpushiftApi(page, 'GET', `checkpoints?path=${encodeURIComponent(path)}`);
  expect(answer.status).toBe(200);
  return answer.json;
}

/**
 * A new notebook (in the test's folder) that ran `x = 41`, closed, with a checkpoint of
 * its kernel saved through the extension's API. Returns its path.
 */
async function notebookWithCheckpoint(page: IJupyterLabPageFixture, folder: string): Promise<string> {
  const name = await page.notebook.createNew(); // no rename: the session keeps its path
  expect(name).toBeTruthy();
  const path = `${folder}/${name}`;
  await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 60000 });
  await page.notebook.setCell(0, 'code', 'x = 41');
  await page.notebook.runCell(0, { inplace: true });
  const kernelId: string = await page.evaluate(
    () => (window as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel.id
  );
  const saved = await gpushiftApi(page, 'POST', 'checkpoint', { kernel_id: kernelId, path });
  expect(saved, JSON.stringify(saved.json)).toMatchObject({ status: 200, json: { path } });
  expect(await kept(page, path)).toMatchObject({ path, exists: true, databases: 1 });
  await page.notebook.save();
  await page.notebook.close(true);
  return path;
}

/**
 * Delete `name` the way a user does: the file browser's context menu ("Move to Trash"
 * where the server deletes to the trash, else "Delete"), then confirm.
 */
async function deleteInFileBrowser(page: IJupyterLabPageFixture, name: string): Promise<void> {
  await page.filebrowser.refresh();
  const item = page.locator('.jp-DirListing-item').filter({
    has: page.locator('.jp-DirListing-itemText', { hasText: new RegExp(`^${name.replace('.', '\\.')}$`) })
  });
  await item.click({ button: 'right' });
  await page
    .locator('.lm-Menu-item')
    .filter({ has: page.locator('.lm-Menu-itemLabel', { hasText: /^(Move to Trash|Delete)$/ }) })
    .click();
  const confirm = page
    .locator('.jp-Dialog')
    .filter({ hasText: /Are you sure you want to (move to trash|permanently delete)/ });
  await confirm.locator('.jp-Dialog-button.jp-mod-warn').click();
  await expect(item).toHaveCount(0);
}

function cleanupDialog(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-Dialog').filter({ hasText: /Delete the checkpoints of .* too\?/ });
}

test.describe('CPU pod: a deleted notebook\'s checkpoints', () => {
  test('deleting a notebook offers to delete its checkpoints; "Delete them" deletes them', async ({
    page,
    tmpPath
  }) => {
    const path = await notebookWithCheckpoint(page, tmpPath);
    const name = path.split('/').pop() as string;
    await deleteInFileBrowser(page, name);
    const dialog = cleanupDialog(page);
    await expect(dialog).toBeVisible();
    await expect(dialog).toContainText(`Delete the checkpoints of ${name} too?`);
    await expect(dialog).toContainText(
      new RegExp(`gpushift kept 1 saved kernel state \\(.*MiB\\) of the deleted notebook ${name.replace('.', '\\.')}\\.`)
    );
    await expect(dialog).toContainText('could bring its variables back');
    await expect(dialog.getByRole('button', { name: 'Keep them' })).toBeVisible();
    await shot(page, 'checkpoint-cleanup');
    await dialog.getByRole('button', { name: 'Delete them' }).click();
    await expect(dialog).toBeHidden();
    await expect.poll(async () => (await kept(page, path)).databases).toBe(0);
    expect(await kept(page, path)).toMatchObject({ exists: false, databases: 0, bytes: 0 });
  });

  test('"Keep them" keeps a deleted notebook\'s checkpoints, and asks once', async ({ page, tmpPath }) => {
    const path = await notebookWithCheckpoint(page, tmpPath);
    const name = path.split('/').pop() as string;
    await deleteInFileBrowser(page, name);
    const dialog = cleanupDialog(page);
    await expect(dialog).toBeVisible();
    await dialog.getByRole('button', { name: 'Keep them' }).click();
    await expect(dialog).toBeHidden();
    // Not asked again for the same deletion.
    await page.waitForTimeout(1500);
    await expect(cleanupDialog(page)).toHaveCount(0);
    expect(await kept(page, path)).toMatchObject({ exists: false, databases: 1 });
    // The extension's API deletes them when asked (no checkpoint files left behind).
    const deleted = await gpushiftApi(page, 'DELETE', `checkpoints?path=${encodeURIComponent(path)}`);
    expect(deleted).toMatchObject({ status: 200, json: { deleted: 1 } });
  });
});
