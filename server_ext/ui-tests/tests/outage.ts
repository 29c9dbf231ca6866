/**
 * Steps of the outage tests: the browser's requests cut or held with Playwright's routing,
 * JupyterLab and gpushift unchanged.
 */
import { IJupyterLabPageFixture } from '@jupyterlab/galata';
import { expect, Locator, Route } from '@playwright/test';

/** The move request (JupyterLab adds a cache-busting query). */
const MIGRATE = /\/api_extension\/migrate(\?|$)/;

/** The sessions JupyterLab polls: cut, its ServiceManager reports the connection lost. */
const SESSIONS = '**/api/sessions**';

/**
 * A route that is turned on and off, never removed. With Playwright 1.65 under Galata, a
 * route added after `page.unroute` is never called (seen 2026-12-06: the move request of
 * these tests went through unheld), so each test adds its routes once and switches them.
 */
export interface IRouteSwitch {
  on(): void;
  off(): void;
}

async function switchedRoute(
  page: IJupyterLabPageFixture,
  url: string,
  handle: (route: Route) => Promise<void>
): Promise<IRouteSwitch> {
  let active = false;
  await page.route(url, route => (active ? handle(route) : route.fallback()));
  return {
    on: () => (active = true),
    off: () => (active = false)
  };
}

/** The server away for JupyterLab's session requests while on (connection refused). */
export function cutSessions(page: IJupyterLabPageFixture): Promise<IRouteSwitch> {
  return switchedRoute(page, SESSIONS, route => route.abort('connectionrefused'));
}

/** Saves (PUT /api/contents) answered 503 while on, as by a route whose pod is gone;
 * `refused()` counts them. */
export async function refuseSaves(
  page: IJupyterLabPageFixture
): Promise<IRouteSwitch & { refused(): number }> {
  let refused = 0;
  const saves = await switchedRoute(page, '**/api/contents/**', async route => {
    if (route.request().method() !== 'PUT') {
      return route.fallback();
    }
    refused += 1;
    return route.fulfill({ status: 503, body: 'Service Unavailable' });
  });
  return { ...saves, refused: () => refused };
}

/** The move request held open: the page waits for the server to save the variables, a
 * move in flight for gpushift. */
export interface IHeldMove {
  /** Move requests waiting now (a test checks the hold took). */
  held(): number;
  /** Let them (and any later one) through. */
  release(): void;
}

/** Hold POST /api_extension/migrate open until `release()`. */
export async function holdMoveRequest(page: IJupyterLabPageFixture): Promise<IHeldMove> {
  let release!: () => void;
  const released = new Promise<void>(resolve => (release = resolve));
  let held = 0;
  await page.route(MIGRATE, async route => {
    held += 1;
    await released;
    held -= 1;
    await route.continue();
  });
  return { held: () => held, release };
}

/**
 * Close JupyterLab's (or JupyterHub's) dialog until none comes back: a poll of
 * JupyterLab's own that failed while the server was away may show it once more after the
 * first is closed, as without gpushift.
 */
export async function closeUntilGone(dialog: Locator, close: () => Promise<void>): Promise<void> {
  await expect(async () => {
    if ((await dialog.count()) > 0) {
      await close();
    }
    await expect(dialog).toHaveCount(0, { timeout: 1500 });
  }).toPass({ timeout: 20000 });
}

/** Close JupyterLab's own connection-lost dialog by its one button, whatever its label
 * (JupyterLab 4.2: "Dismiss", later releases: "Close"; any language). */
export async function closeConnectionLost(dialog: Locator): Promise<void> {
  const buttons = dialog.locator('.jp-Dialog-footer button');
  await expect(buttons).toHaveCount(1);
  await buttons.click();
}

/** Start "Move to GPU" (the palette's command) without waiting for it. */
export async function startMove(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(() => {
    void (window as any).jupyterapp.commands.execute('gpushift:move-to-gpu');
  });
}

/** JupyterLab asks the server for its sessions (as its own poll does); with the request
 * cut, its ServiceManager reports the connection as lost. */
export async function pollSessions(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(async () => {
    await (window as any).jupyterapp.serviceManager.sessions.refreshRunning().catch(() => undefined);
  });
}

export async function setAutosaveInterval(page: IJupyterLabPageFixture, seconds: number): Promise<void> {
  await page.evaluate(async interval => {
    const registry: any = await (window as any).galata.getPlugin(
      '@jupyterlab/apputils-extension:settings'
    );
    await registry.set('@jupyterlab/docmanager-extension:plugin', 'autosaveInterval', interval);
  }, seconds);
}


/** JupyterLab's display language (read at the next page load). Galata keeps the settings
 * of each test to itself, so no other test sees this one. */
export async function setLocale(page: IJupyterLabPageFixture, locale: string): Promise<void> {
  await page.evaluate(async value => {
    const registry: any = await (window as any).galata.getPlugin(
      '@jupyterlab/apputils-extension:settings'
    );
    await registry.set('@jupyterlab/translation-extension:plugin', 'locale', value);
  }, locale);
}

/** Reload without Galata's wait (it waits for English words): until gpushift is up. */
export async function reloadPlain(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(() => window.location.reload());
  await page.waitForFunction(
    () => (window as any).jupyterapp?.commands.hasCommand('gpushift:move-to-gpu'),
    null,
    { timeout: 60000 }
  );
}
