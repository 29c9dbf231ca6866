/**
 * On a CPU pod (real sidecar, no Kubernetes API): the notebook server "away" while a move
 * is in flight, as when the pod is replaced. The browser's requests are cut with
 * Playwright's routing (the move request is held open, session or save requests fail);
 * JupyterLab and gpushift run unchanged.
 */
import { expect, test } from '@jupyterlab/galata';
import { Route } from '@playwright/test';

import { notificationMessages, podStatus, toast } from './helpers';
import {
  closeConnectionLost,
  holdMoveRequest,
  pollSessions,
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
    const cut = (route: Route) => route.abort('connectionrefused');
    await page.route('**/api/sessions**', cut);

    // No move: JupyterLab's dialog, as without gpushift.
    await pollSessions(page);
    const dialog = page.locator('.jp-Dialog').filter({ hasText: CONNECTION_LOST });
    await expect(dialog).toBeVisible();
    await closeConnectionLost(dialog);
    await expect(dialog).toHaveCount(0);
    expect(skipped).toHaveLength(0);
    // The server is back before the move (JupyterLab's own polling, still cut, could
    // show the dialog again before the move starts: a race of the test, not a user's).
    await page.unroute('**/api/sessions**', cut);

    // A move in flight: the move's progress explains the outage, no dialog.
    const release = await holdMoveRequest(page);
    await startMove(page);
    await expect(podStatus(page)).toHaveText('Moving to GPU…');
    // The move's first step is announced (CI once saw the page's first toast never
    // rendered by JupyterLab's lazily mounted toast container: the notification is the
    // precondition here, its toast is checked in cpu-pod.spec.ts).
    await expect
      .poll(() => notificationMessages(page))
      .toContain('Moving to a GPU pod: saving your variables… (1/3)');
    await page.route('**/api/sessions**', cut);
    await pollSessions(page);
    await expect.poll(() => skipped.length).toBeGreaterThan(0);
    await page.waitForTimeout(1000);
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);

    await page.unroute('**/api/sessions**', cut);
    await release();
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
    const cut = (route: Route) => route.abort('connectionrefused');
    await page.route('**/api/sessions**', cut);

    // No move: JupyterLab's own dialog, in German.
    await pollSessions(page);
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toBeVisible();
    await expect(dialog).toContainText('Server-Verbindungsfehler');
    await expect(dialog).not.toContainText(CONNECTION_LOST);
    await closeConnectionLost(dialog);
    await expect(dialog).toHaveCount(0);
    await page.unroute('**/api/sessions**', cut); // back before the move, as above

    // A move in flight: no dialog in any language.
    const release = await holdMoveRequest(page);
    await startMove(page);
    await expect(podStatus(page)).toHaveText('Moving to GPU…');
    await page.route('**/api/sessions**', cut);
    await pollSessions(page);
    await page.waitForTimeout(1500);
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    await page.unroute('**/api/sessions**', cut);
    await release();
    await expect(toast(page, 'The move to a GPU pod failed')).toBeVisible({ timeout: 60000 });
  });

  test('autosave during a move waits for it: no "File Save Error", saved after', async ({ page }) => {
    await page.notebook.createNew();
    await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 60000 });
    await page.notebook.save();
    const release = await holdMoveRequest(page);
    await startMove(page);
    await expect(podStatus(page)).toHaveText('Moving to GPU…');
    // Saves reach no server while the pod is replaced: the route in front answers 503.
    let refusedSaves = 0;
    const unavailable = async (route: Route) => {
      if (route.request().method() !== 'PUT') {
        return route.continue();
      }
      refusedSaves += 1;
      return route.fulfill({ status: 503, body: 'Service Unavailable' });
    };
    await page.route('**/api/contents/**', unavailable);
    await setAutosaveInterval(page, 1);

    await page.notebook.setCell(0, 'code', 'edited_during_the_move = 1');
    const dirty = () =>
      page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.context.model.dirty);
    expect(await dirty()).toBe(true);
    await page.waitForTimeout(3500); // three autosave intervals
    expect(refusedSaves).toBe(0);
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);

    await page.unroute('**/api/contents/**', unavailable);
    await release();
    await expect(toast(page, 'The move to a GPU pod failed')).toBeVisible({ timeout: 60000 });
    // The move is over: the change is saved (the autosave it held back).
    await expect.poll(dirty, { timeout: 15000 }).toBe(false);
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    await setAutosaveInterval(page, 120);
  });
});
