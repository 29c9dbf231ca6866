/**
 * The demo's cluster, for the end-to-end tests: kubectl with its kubeconfig, plain pods
 * that take a GPU first, the Notebook's spec and the published GPU capacity.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/** The demo's namespace and Notebook (hack/demo.py's defaults). */
export const NAMESPACE = 'kubeflow-user';
export const NOTEBOOK = 'demo';

/** kubectl of the control plane's binaries (~/.cache/gpushift/bin/kubectl-v<version>). */
function kubectlPath(): string {
  if (process.env.GPUSHIFT_KUBECTL) {
    return process.env.GPUSHIFT_KUBECTL;
  }
  const bin = path.join(os.homedir(), '.cache', 'gpushift', 'bin');
  const found = fs.readdirSync(bin).filter(name => /^kubectl-v[\d.]+$/.test(name));
  if (found.length !== 1) {
    throw new Error(`expected one kubectl-v* in ${bin}, found ${JSON.stringify(found)}`);
  }
  return path.join(bin, found[0]);
}

/** kubectl against the demo's cluster (its kubeconfig is in the state folder). */
export function kubectl(args: string[], input?: string): string {
  const state = process.env.GPUSHIFT_E2E_STATE;
  if (!state) {
    throw new Error('GPUSHIFT_E2E_STATE is not set (playwright.e2e.config.js sets it)');
  }
  const kubeconfig = path.join(state, 'controlplane', 'kubeconfig');
  return execFileSync(kubectlPath(), ['--kubeconfig', kubeconfig, ...args], {
    input,
    encoding: 'utf-8',
    stdio: ['pipe', 'pipe', 'pipe'], // kubectl's warnings stay out of the test report
    timeout: 90000
  });
}

/** A plain pod with this spec, scheduled before this returns. */
export function runPod(name: string, spec: Record<string, unknown>): void {
  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NAMESPACE }, spec };
  kubectl(['apply', '-f', '-'], JSON.stringify(pod));
  kubectl(['wait', '--for=condition=PodScheduled', `pod/${name}`, '-n', NAMESPACE, '--timeout=60s']);
}

/** A plain pod requesting one nvidia.com/gpu with these tolerations (and node selector),
 * scheduled before this returns: the GPU it got is taken. */
export function takeGpu(
  name: string,
  tolerations: Record<string, string>[],
  nodeSelector: Record<string, string> = {}
): void {
  runPod(name, {
    containers: [{ name: 'hog', image: 'busybox', resources: { limits: { 'nvidia.com/gpu': '1' } } }],
    tolerations,
    nodeSelector
  });
}

export function deletePod(name: string): void {
  kubectl(['delete', 'pod', name, '-n', NAMESPACE, '--ignore-not-found', '--grace-period=0', '--force']);
}

/** The Notebook's pod template spec, as the API has it now. */
export function notebookPodSpec(): Record<string, any> {
  const notebook = JSON.parse(kubectl(['get', 'notebook', NOTEBOOK, '-n', NAMESPACE, '-o', 'json']));
  return notebook.spec.template.spec;
}

/** The node the notebook's pod runs on ("" while unscheduled or gone). */
export function notebookNode(): string {
  return kubectl([
    'get', 'pod', `${NOTEBOOK}-0`, '-n', NAMESPACE, '-o', 'jsonpath={.spec.nodeName}', '--ignore-not-found'
  ]).trim();
}

/** What the webhook published as free for `profile` (null: not published yet). */
export function publishedFree(profile: string): number | null {
  const text = kubectl([
    'get', 'configmap', 'gpushift-gpu-capacity', '-n', 'gpushift-system',
    '-o', 'jsonpath={.data.capacity\\.json}', '--ignore-not-found'
  ]);
  if (!text.trim()) {
    return null;
  }
  const free = JSON.parse(text).profiles?.[profile]?.free;
  return typeof free === 'number' ? free : null;
}
