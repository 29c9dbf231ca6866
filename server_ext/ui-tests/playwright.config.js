/**
 * Browser tests of the gpushift plugins: Galata's defaults, Debian's chromium, and four
 * "pods" (each a real sidecar + a real JupyterLab with the server extension, see
 * pod_server.py): a CPU pod, a GPU pod (fake GPU), a pod without the optimizer, and a
 * CPU pod under JupyterHub.
 */
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');
const path = require('path');

const PYTHON = process.env.GPUSHIFT_PYTHON || path.resolve(__dirname, '../../.venv/bin/python');
// Four ports from GPUSHIFT_UI_PORT_BASE (8888): the lowest JupyterLab's suite, which runs
// at the same time (server_ext/hack/test-browsers.sh), takes four others.
const BASE_PORT = Number(process.env.GPUSHIFT_UI_PORT_BASE || 8888);
const PODS = { cpu: BASE_PORT, gpu: BASE_PORT + 1, off: BASE_PORT + 2, hub: BASE_PORT + 3 };

module.exports = {
  ...baseConfig,
  reporter: [[process.env.CI ? 'list' : 'list'], ['html', { open: 'never' }]],
  workers: 1, // one browser per suite: the machine has two cores (and runs two suites)
  retries: 0,
  timeout: 120000,
  expect: { timeout: 15000 },
  use: {
    ...baseConfig.use,
    launchOptions: { executablePath: process.env.GPUSHIFT_CHROMIUM || '/usr/bin/chromium' },
    video: 'off',
    trace: 'off',
    screenshot: 'only-on-failure'
  },
  projects: Object.entries(PODS).map(([kind, port]) => ({
    name: `${kind}-pod`,
    testMatch: `${kind}-pod*.spec.ts`,
    use: { baseURL: `http://127.0.0.1:${port}` }
  })),
  webServer: Object.entries(PODS).map(([kind, port]) => ({
    command: `${PYTHON} pod_server.py ${kind} ${port}`,
    url: `http://127.0.0.1:${port}/lab`,
    timeout: 120000,
    reuseExistingServer: false,
    stdout: 'ignore',
    stderr: 'pipe'
  }))
};
