/**
 * A CPU pod whose JupyterLab runs as under JupyterHub (the page carries the hub's prefix):
 * when the server is away and no move is in flight, the user gets JupyterHub's "restart
 * your server" dialog, as without gpushift; during a move, no dialog — in English and
 * under JupyterLab's German language pack.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { Route } from '@playwright/test';

import { podStatus, toast } from './helpers';
import { holdMoveRequest, pollSessions, reloadPlain, setLocale, startMove } from './outage';

const cut = (route: Route) => route.abort('connectionrefused');

/** The server away: JupyterHub's dialog (its `title`), dismissed with `dismiss`; then a
 * move in flight: no dialog at all. */
async function hubThenMove(
  page: IJupyterLabPageFixture,
  title: string,
  dismiss: string
): Promise<void> {
  await page.route('**/api/sessions**', cut);
  await pollSessions(page);
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText(title);
  // The server is back before the user dismisses it. A poll of JupyterLab's own that
  // failed meanwhile may show the dialog once more (JupyterHub's plugin, as without
  // gpushift): dismissed too, until none comes back.
  await page.unroute('**/api/sessions**', cut);
  await expect(async () => {
    if ((await dialog.count()) > 0) {
      await dialog.getByRole('button', { name: dismiss }).click();
    }
    await expect(dialog).toHaveCount(0, { timeout: 1500 });
  }).toPass({ timeout: 20000 });

  const release = await holdMoveRequest(page);
  await startMove(page);
  await expect(podStatus(page)).toHaveText('Moving to GPU…');
  // The server away again, now during a move: no dialog at all.
  await page.route('**/api/sessions**', cut);
  await pollSessions(page);
  await page.waitForTimeout(1500);
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  await page.unroute('**/api/sessions**', cut);
  await release();
  await expect(toast(page, 'The move to a GPU pod failed')).toBeVisible({ timeout: 60000 });
}

test.describe('CPU pod under JupyterHub', () => {
  test("JupyterHub's dialog when the server is away, none during a move", async ({ page }) => {
    await expect(podStatus(page)).toHaveText('CPU');
    await hubThenMove(page, 'Server unavailable or unreachable', 'Dismiss');
  });

  test('the same under a non-English locale (de_DE)', async ({ page }) => {
    await setLocale(page, 'de_DE');
    await reloadPlain(page);
    await expect(page.locator('.lm-MenuBar').first()).toContainText('Datei');
    await expect(podStatus(page)).toHaveText('CPU');
    // JupyterHub's strings are JupyterLab's, translated by its language pack.
    await hubThenMove(page, 'Server nicht verfügbar', 'Verwerfen');
  });
});
