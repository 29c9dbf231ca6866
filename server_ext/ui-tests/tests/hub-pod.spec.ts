/**
 * A CPU pod whose JupyterLab runs as under JupyterHub (the page carries the hub's prefix):
 * when the server is away and no move is in flight, the user gets JupyterHub's "restart
 * your server" dialog, as without gpushift; during a move, no dialog — in English and
 * under JupyterLab's German language pack.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';

import { podStatus, toast } from './helpers';
import {
  closeUntilGone,
  cutSessions,
  holdMoveRequest,
  pollSessions,
  reloadPlain,
  setLocale,
  startMove
} from './outage';

/** The server away: JupyterHub's dialog (its `title`), dismissed with `dismiss`; then a
 * move in flight: no dialog at all. */
async function hubThenMove(
  page: IJupyterLabPageFixture,
  title: string,
  dismiss: string
): Promise<void> {
  const cut = await cutSessions(page);
  const move = await holdMoveRequest(page);
  cut.on();
  await pollSessions(page);
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText(title);
  // The server is back before the user dismisses it.
  cut.off();
  await closeUntilGone(dialog, () => dialog.getByRole('button', { name: dismiss }).click());

  await startMove(page);
  await expect(podStatus(page)).toHaveText('Moving to GPU…');
  // The server away again, now during a move: no dialog at all.
  cut.on();
  await pollSessions(page);
  await page.waitForTimeout(1500);
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  expect(move.held()).toBe(1); // still in flight
  cut.off();
  move.release();
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
