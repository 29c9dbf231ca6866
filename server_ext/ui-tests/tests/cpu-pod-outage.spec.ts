/**
 * On a CPU pod (real sidecar, no Kubernetes API): the notebook server "away" while a move
 * is in flight, as when the pod is replaced. The browser's requests are cut with
 * Playwright's routing (the move request is held open, session or save requests fail);
 * JupyterLab and gpushift run unchanged.
 */
import { expect, test } from '@jupyterlab/galata';

import { notificationMessages, podStatus, toast } from './helpers';
import {
  closeConnectionLost,
  closeUntilGone,
  cutSessions,
  holdMoveRequest,
  pollSessions,
  refuseSaves,
  reloadPlain,
  setAutosaveInterval,
  setLocale,
  startMove
} from './outage';

const CONNECTION_LOST = 'Server Connection Error';

test.describe('CPU pod: the server away during a move', () => {
  test('no connection-lost dialog during a move; JupyterLab\'s own one otherwise', async ({ page }) => {
    const skipped: string[] = [];
    page.on('console', message => {
      if (message.text().includes('connection lost during a move; no dialog')) {
        skipped.push(message.text());
      }
    });
    await expect(podStatus(page)).toHaveText('CPU');
    const cut = await cutSessions(page);
    const move = await holdMoveRequest(page);
    cut.on();

    // No move: JupyterLab's dialog, as without gpushift.
    await pollSessions(page);
    const dialog = page.locator('.jp-Dialog').filter({ hasText: CONNECTION_LOST });
    await expect(dialog).toBeVisible();
    expect(skipped).toHaveLength(0);
    // The server is back before the move.
    cut.off();
    await closeUntilGone(dialog, () => closeConnectionLost(dialog));

    // A move in flight: the move's progress explains the outage, no dialog.
    await startMove(page);
    await expect(podStatus(page)).toHaveText('Moving to GPU…');
    // The move's first step is announced (CI once saw the page's first toast never
    // rendered by JupyterLab's lazily mounted toast container: the notification is the
    // precondition here, its toast is checked in cpu-pod.spec.ts).
    await expect
      .poll(() => notificationMessages(page))
      .toContain('Moving to a GPU pod: saving your variables… (1/3)');
    cut.on();
    await pollSessions(page);
    await expect.poll(() => skipped.length).toBeGreaterThan(0);
    await page.waitForTimeout(1000);
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    expect(move.held()).toBe(1); // still in flight: the page waits for the server

    cut.off();
    move.release();
    // No Kubernetes API here: the move fails at the patch step and says so.
    await expect(toast(page, 'The move to a GPU pod failed')).toBeVisible({ timeout: 60000 });
  });

  test('under a non-English locale (de_DE) too: the dialog is found without its title', async ({
    page
  }) => {
    // JupyterLab's German language pack (installed by hack/test-frontend.sh).
    await setLocale(page, 'de_DE');
    await reloadPlain(page);
    await expect(page.locator('.lm-MenuBar').first()).toContainText('Datei'); // German now
    await expect(podStatus(page)).toHaveText('CPU');
    const cut = await cutSessions(page);
    const move = await holdMoveRequest(page);
    cut.on();

    // No move: JupyterLab's own dialog, in German.
    await pollSessions(page);
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toBeVisible();
    await expect(dialog).toContainText('Server-Verbindungsfehler');
    await expect(dialog).not.toContainText(CONNECTION_LOST);
    cut.off(); // back before the move, as above
    await closeUntilGone(dialog, () => closeConnectionLost(dialog));

    // A move in flight: no dialog in any language.
    await startMove(page);
    await expect(podStatus(page)).toHaveText('Moving to GPU…');
    cut.on();
    await pollSessions(page);
    await page.waitForTimeout(1500);
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    expect(move.held()).toBe(1);
    cut.off();
    move.release();
    await expect(toast(page, 'The move to a GPU pod failed')).toBeVisible({ timeout: 60000 });
  });

  test('autosave during a move waits for it: no "File Save Error", saved after', async ({ page }) => {
    await page.notebook.createNew();
    await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 60000 });
    await page.notebook.save();
    const move = await holdMoveRequest(page);
    const saves = await refuseSaves(page);
    await startMove(page);
    await expect(podStatus(page)).toHaveText('Moving to GPU…');
    // Saves reach no server while the pod is replaced: the route in front answers 503.
    saves.on();
    await setAutosaveInterval(page, 1);

    await page.notebook.setCell(0, 'code', 'edited_during_the_move = 1');
    const dirty = () =>
      page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.context.model.dirty);
    expect(await dirty()).toBe(true);
    await page.waitForTimeout(3500); // three autosave intervals
    expect(saves.refused()).toBe(0);
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    expect(move.held()).toBe(1);

    saves.off();
    move.release();
    await expect(toast(page, 'The move to a GPU pod failed')).toBeVisible({ timeout: 60000 });
    // The move is over: the change is saved (the autosave it held back).
    await expect.poll(dirty, { timeout: 15000 }).toBe(false);
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    await setAutosaveInterval(page, 120);
  });
});
