/**
 * Shared steps of the browser tests: the notebook cells used, notification capture,
 * screenshots for the user guide, the status bar item.
 */
import { IJupyterLabPageFixture } from '@jupyterlab/galata';
import { expect, Locator } from '@playwright/test';
import * as path from 'path';

/** A cell the classifier flags (line 2: `.cuda()`); it sets `marker` when it runs. */
export const GPU_CELL = 'marker = "ran"\ny = [1].cuda()';
/** Asks the kernel whether the GPU cell ran. */
export const PROBE_CELL = 'print("marker" in globals())';

/**
 * Where screenshots go: an ignored folder on every test run, so that a run leaves the
 * clone clean; `make screenshots` points GPUSHIFT_SCREENSHOTS at the README's committed
 * pictures (ui-tests/screenshots/) to regenerate them on purpose.
 */
export const SCREENSHOTS =
  process.env.GPUSHIFT_SCREENSHOTS || path.resolve(__dirname, '..', 'screenshots-latest');

/** Save a screenshot for the README's user guide (SCREENSHOTS/NAME.png). */
export async function shot(page: IJupyterLabPageFixture, name: string): Promise<void> {
  // The test pods have no Kubernetes API: toasts saying so are the rig's, not what a user
  // sees; they are hidden while the picture is taken (unless the picture is about them).
  const hidden = await page.evaluate(rig => {
    const toasts = Array.from(document.querySelectorAll<HTMLElement>('.Toastify__toast'));
    const noise = toasts.filter(t => t.textContent?.includes(rig) && !t.textContent?.includes('The move to'));
    noise.forEach(t => (t.style.visibility = 'hidden'));
    return noise.length;
  }, RIG_NOISE);
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
  if (hidden) {
    await page.evaluate(() =>
      document
        .querySelectorAll<HTMLElement>('.Toastify__toast')
        .forEach(t => (t.style.visibility = ''))
    );
  }
}

/** What the test pods' sidecars say about the Kubernetes API they do not have. */
const RIG_NOISE = 'no Kubernetes API configuration';

/** The gpushift status bar item. */
export function podStatus(page: IJupyterLabPageFixture): Locator {
  return page.locator('[data-testid="gpushift-status"]');
}

/** The toasts on screen that contain `text`. */
export function toast(page: IJupyterLabPageFixture, text: string | RegExp): Locator {
  return page.locator('.Toastify__toast').filter({ hasText: text });
}

/** The messages of JupyterLab's notifications now (the notification center's list): what
 * gpushift asked JupyterLab to show, whether or not its toast is on screen yet (JupyterLab
 * renders toasts in a container it mounts at the page's first notification). */
export async function notificationMessages(page: IJupyterLabPageFixture): Promise<string[]> {
  return page.evaluate(async () => {
    const helpers: any = await (window as any).galata.getPlugin(
      '@jupyterlab/galata-extension:helpers'
    );
    return helpers.notifications.notifications.map((n: { message: string }) => n.message);
  });
}

/** Record every notification created or updated from now on (in-page). */
export async function captureNotices(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(async () => {
    const helpers: any = await (window as any).galata.getPlugin(
      '@jupyterlab/galata-extension:helpers'
    );
    const seen: { change: string; type: string; message: string }[] = [];
    (window as any).gpushiftNotices = seen;
    helpers.notifications.changed.connect((_: unknown, change: any) => {
      seen.push({
        change: change.type,
        type: change.notification.type,
        message: change.notification.message
      });
    });
  });
}

/** The notification messages recorded since `captureNotices`. */
export async function notices(page: IJupyterLabPageFixture): Promise<string[]> {
  return page.evaluate(() =>
    ((window as any).gpushiftNotices ?? []).map((n: { message: string }) => n.message)
  );
}

/** A new notebook with the GPU cell (0) and the probe cell (1), kernel ready. */
export async function notebookWithGpuCell(page: IJupyterLabPageFixture, name: string): Promise<void> {
  await page.notebook.createNew(); // no rename: the session keeps its path
  await page.notebook.setCell(0, 'code', GPU_CELL);
  await page.notebook.addCell('code', PROBE_CELL);
  // The kernel is up (and kishu attached) before the first run.
  await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: 60000 });
}

/** Start cell `index` without waiting for it (it may be held by the GPU dialog). */
export async function startCell(page: IJupyterLabPageFixture, index: number): Promise<void> {
  await page.notebook.selectCells(index);
  await page.keyboard.press('Control+Enter');
}

/** The cell's input prompt, e.g. "[ ]:" or "[1]:". */
export function prompt(page: IJupyterLabPageFixture, index: number): Locator {
  return page.locator('.jp-Notebook .jp-Cell').nth(index).locator('.jp-InputPrompt');
}

export function gpuDialog(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-Dialog').filter({ hasText: 'This cell needs a GPU' });
}

/**
 * The text of every cell previewed from now on (`POST classify` with `"preview": true`,
 * see src/cellPreview.ts), in the order the page sent them: a live list, filled as the
 * requests go out.
 */
export function previewsSent(page: IJupyterLabPageFixture): string[] {
  const sent: string[] = [];
  page.on('request', request => {
    if (request.method() === 'POST' && request.url().includes('/api_extension/classify')) {
      const body = request.postDataJSON();
      if (body?.preview === true) {
        sent.push(body.code);
      }
    }
  });
  return sent;
}

/** Longer than a preview's pause (PREVIEW_DELAY_MS, 300 ms) three times over: a
 * preview that was going to be sent has been sent by then. */
export const PAST_A_PREVIEW_MS = 1000;

/** Change one of gpushift's settings the way the Settings Editor does. */
export async function setSetting(
  page: IJupyterLabPageFixture,
  key: string,
  value: unknown
): Promise<void> {
  await page.evaluate(
    async ([k, v]) => {
      const registry: any = await (window as any).galata.getPlugin(
        '@jupyterlab/apputils-extension:settings'
      );
      await registry.set('gpushift-jupyter:manual', k, v);
    },
    [key, value] as [string, unknown]
  );
}

/** The notebooks marked "Don't ask again", as gpushift's settings hold them. */
export async function quietNotebooks(page: IJupyterLabPageFixture): Promise<string[]> {
  return page.evaluate(async () => {
    const registry: any = await (window as any).galata.getPlugin(
      '@jupyterlab/apputils-extension:settings'
    );
    const settings = await registry.load('gpushift-jupyter:manual');
    return settings.composite.quietNotebooks as string[];
  });
}

/**
 * A request to the extension's API (`api_extension/<endpoint>`) from the page, with
 * JupyterLab's own token and XSRF cookie: the status and the JSON of the answer (null
 * when empty or not JSON).
 */
export async function gpushiftApi(
  page: IJupyterLabPageFixture,
  method: string,
  endpoint: string,
  body?: unknown
): Promise<{ status: number; json: any }> {
  return page.evaluate(
    async ([m, e, b]) => {
      const settings = (window as any).jupyterapp.serviceManager.serverSettings;
      const xsrf = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/)?.[1];
      const headers: Record<string, string> = { 'Content-Type': 'application/json' };
      if (xsrf) {
        headers['X-XSRFToken'] = xsrf;
      }
      if (settings.token) {
        headers['Authorization'] = `token ${settings.token}`;
      }
      const answer = await fetch(`${settings.baseUrl}api_extension/${e}`, {
        method: m as string,
        headers,
        body: b === undefined ? undefined : JSON.stringify(b),
        credentials: 'same-origin'
      });
      const text = await answer.text();
      let json = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        json = null; // not JSON (a proxy's page): the status tells
      }
      return { status: answer.status, json };
    },
    [method, endpoint, body] as [string, string, unknown]
  );
}

/**
 * Starts the GPU pod's idle timer over, as "Stay on GPU" does, through the extension's
 * API (`gpushiftApi`): a test that looks at the status bar outside the warning does so
 * right after, not at whatever point the timer has reached.
 * "Stay" is only offered during the warning (409 `not_warning` before it), so this waits
 * for the warning to begin (at most the 10 s active period), stays, and waits for the
 * page to take the warning down (it learns of the stay at its next poll).
 */
export async function restartIdleTimer(page: IJupyterLabPageFixture): Promise<void> {
  await expect
    .poll(async () => (await gpushiftApi(page, 'POST', 'idle/stay', {})).status, {
      timeout: 30000,
      intervals: [500]
    })
    .toBe(204);
  await expect(toast(page, /to a CPU pod in/)).toHaveCount(0, { timeout: 15000 });
}

/** gpushift's "Resume where you left off?" dialog. */
export function resumeDialog(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-Dialog').filter({ hasText: 'Resume where you left off?' });
}

/** Kernel → Restart Kernel…, confirmed: the same kernel id, a fresh process. */
export async function restartKernel(page: IJupyterLabPageFixture): Promise<void> {
  await page.menu.clickMenuItem('Kernel>Restart Kernel…');
  const confirm = page.locator('.jp-Dialog').filter({ hasText: 'Restart Kernel?' });
  await confirm.locator('.jp-Dialog-button.jp-mod-accept').click(); // "Restart"
  await expect(confirm).toBeHidden();
}

/** Run `code` in a new cell at the end; the cell's index. */
export async function runNewCell(page: IJupyterLabPageFixture, code: string): Promise<number> {
  await page.notebook.addCell('code', code);
  const index = (await page.notebook.getCellCount()) - 1;
  await page.notebook.runCell(index, { inplace: true });
  return index;
}
