/**
 * The browser tests of ../tests against the lowest JupyterLab gpushift supports (the floor
 * of server_ext/pyproject.toml, JupyterLab 4.2), run by server_ext/hack/test-lowest-jupyterlab.sh.
 *
 * The same pods and projects as ../playwright.config.js, served by a second virtual
 * environment with that JupyterLab (GPUSHIFT_PYTHON), and driven by the Galata of the same
 * minor (this folder's package.json): Galata's page helpers live in JupyterLab itself, so
 * Galata and JupyterLab must match. The spec files are copied into ./tests by the script
 * so that they load this folder's Galata, not the newer one of ../node_modules.
 */
const path = require('path');
const galataDefaults = require('@jupyterlab/galata/lib/playwright-config');
const suite = require('../playwright.config.js');

module.exports = {
  ...suite,
  testDir: './tests',
  reporter: [['list']],
  // Galata 5.2's defaults, with the suite's own browser settings (Debian's chromium, ...).
  use: {
    ...galataDefaults.use,
    ...Object.fromEntries(
      ['launchOptions', 'video', 'trace', 'screenshot'].map(key => [key, suite.use[key]])
    )
  },
  // pod_server.py and the Jupyter config it names live in ui-tests/.
  webServer: suite.webServer.map(server => ({ ...server, cwd: path.resolve(__dirname, '..') }))
};
