/**
 * Steps of the outage tests: the browser's requests cut or held with Playwright's routing,
 * JupyterLab and gpushift unchanged.
 */
import { IJupyterLabPageFixture } from '@jupyterlab/galata';
import { expect, Locator, Route } from '@playwright/test';

/** The move request (JupyterLab adds a cache-busting query). */
const MIGRATE = /\/api_extension\/migrate(\?|$)/;

/** Hold POST /api_extension/migrate open until the returned function is called: the page
 * waits for the server to save the variables, a move in flight for gpushift. */
export async function holdMoveRequest(page: IJupyterLabPageFixture): Promise<() => Promise<void>> {
  let release!: () => void;
  const released = new Promise<void>(resolve => (release = resolve));
  const handler = async (route: Route) => {
    await released;
    await route.continue();
  };
  await page.route(MIGRATE, handler);
  return async () => {
    release();
    await page.unroute(MIGRATE, handler);
  };
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
