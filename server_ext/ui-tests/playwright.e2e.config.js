/**
 * End-to-end browser tests of a REAL move (e2e/): the whole local demo (hack/demo.py:
 * control plane, chart, local webhook, Notebook `demo`, local pod runner and notebook
 * proxy) started by e2e_launcher.py, JupyterLab reached through the notebook proxy under
 * /notebook/kubeflow-user/demo/ as Kubeflow's route gives it, and a move that recreates
 * the pod on the (fake, kwok) GPU node and back.
 *
 * One worker, tests in order (each move continues from the pod the previous one left).
 * The demo's Jupyter token is fixed per run and sent as `Authorization: token ...` with
 * every request, as JupyterLab itself does when opened with `?token=`.
 *
 *   GPUSHIFT_E2E_PORT   notebook proxy port (default 18731)
 *   GPUSHIFT_E2E_STATE  the demo's state folder (default: a folder under the OS temp dir)
 *   GPUSHIFT_E2E_REUSE=1  use a demo already running on that port (with that token)
 */
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');
const crypto = require('crypto');
const os = require('os');
const path = require('path');

const PYTHON = process.env.GPUSHIFT_PYTHON || path.resolve(__dirname, '../../.venv/bin/python');
const PORT = Number(process.env.GPUSHIFT_E2E_PORT || 18731);
const STATE = process.env.GPUSHIFT_E2E_STATE || path.join(os.tmpdir(), `gpushift-e2e-${PORT}`);
// The rollback test reaches the demo's cluster with its kubeconfig under the state folder.
process.env.GPUSHIFT_E2E_STATE = STATE;
// Workers inherit the runner's environment: the token is chosen once per run.
process.env.GPUSHIFT_E2E_TOKEN =
  process.env.GPUSHIFT_E2E_TOKEN || crypto.randomBytes(16).toString('hex');
const TOKEN = process.env.GPUSHIFT_E2E_TOKEN;
const BASE = `http://127.0.0.1:${PORT}/notebook/kubeflow-user/demo`;

module.exports = {
  ...baseConfig,
  testDir: './e2e',
  outputDir: './test-results/e2e',
  reporter: [['list'], ['html', { open: 'never', outputFolder: 'playwright-report/e2e' }]],
  workers: 1,
  fullyParallel: false,
  retries: 0,
  timeout: 300000, // a move is 10-30 s here; a cold JupyterLab on 2 cores much more
  expect: { timeout: 30000 },
  use: {
    ...baseConfig.use,
    baseURL: BASE,
    extraHTTPHeaders: { Authorization: `token ${TOKEN}` },
    launchOptions: { executablePath: process.env.GPUSHIFT_CHROMIUM || '/usr/bin/chromium' },
    video: 'off',
    trace: 'off',
    screenshot: 'only-on-failure',
    navigationTimeout: 120000,
    actionTimeout: 30000
  },
  webServer: {
    command: `${PYTHON} e2e_launcher.py --state ${STATE} --port ${PORT} --token ${TOKEN}`,
    // 403 without the token once JupyterLab answers behind the proxy (503 before).
    url: `${BASE}/api/status`,
    timeout: 600000, // a first run builds the control plane's binaries
    reuseExistingServer: process.env.GPUSHIFT_E2E_REUSE === '1',
    gracefulShutdown: { signal: 'SIGTERM', timeout: 60000 },
    stdout: 'pipe',
    stderr: 'pipe'
  }
};
