/**
 * What kind of pod the notebook runs on, and how the status bar says it (pure).
 */
import { IIdleBounds, IRuntimeConfig } from './types';

export type PodKind =
  | { kind: 'unknown'; reason: string }
  | { kind: 'off'; reason: string }
  | { kind: 'cpu' }
  | { kind: 'gpu'; resource: string; count: number; name: string | null };

/** The pod kind from GET api_extension (null: the server did not answer). */
export function podKindOf(config: IRuntimeConfig | null): PodKind {
  if (config === null) {
    return { kind: 'unknown', reason: 'the server is not answering' };
  }
  const optimizer = config.optimizer;
  if (!optimizer || optimizer.state !== 'on') {
    return {
      kind: 'off',
      reason: optimizer?.reason || 'this pod was started without the gpushift sidecar'
    };
  }
  const gpu = config.gpu;
  if (config.usingGPU && gpu && gpu.count > 0) {
    return {
      kind: 'gpu',
      resource: gpu.resource,
      count: gpu.count,
      name: gpu.name ?? null
    };
  }
  return { kind: 'cpu' };
}

const VENDORS: Record<string, string> = {
  'nvidia.com/gpu': 'NVIDIA',
  'amd.com/gpu': 'AMD',
  'habana.ai/gaudi': 'Gaudi'
};

/** "NVIDIA A100 ×2", "AMD ×1", "example.com/gpu ×1". */
export function gpuLabel(resource: string, count: number, name: string | null): string {
  const vendor = VENDORS[resource] ?? resource;
  let what = vendor;
  if (name) {
    // "NVIDIA A100", not "NVIDIA NVIDIA A100" when the name carries the vendor already.
    what = name.toLowerCase().includes(vendor.toLowerCase()) ? name : `${vendor} ${name}`;
  }
  return `${what} ×${count}`;
}

/** The status bar's short text. */
export function podKindText(pod: PodKind): string {
  switch (pod.kind) {
    case 'unknown':
      return 'Pod: ?';
    case 'off':
      return 'GPU optimizer off';
    case 'cpu':
      return 'CPU';
    case 'gpu':
      return `GPU ${gpuLabel(pod.resource, pod.count, pod.name)}`;
  }
}

/** "1 min", "90 s", "1 h 30 min". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60 || (s < 600 && s % 60 !== 0)) {
    return `${s} s`;
  }
  const hours = Math.floor(s / 3600);
  const minutes = Math.round((s % 3600) / 60);
  if (hours === 0) {
    return `${minutes} min`;
  }
  return minutes === 0 ? `${hours} h` : `${hours} h ${minutes} min`;
}

/** The admin's idle bounds as a sentence (for the settings and the tooltip). */
export function describeBounds(bounds: IIdleBounds | null | undefined): string {
  if (!bounds) {
    return 'No idle timer on this pod (the optimizer is off).';
  }
  return (
    `Idle timeout: your admin allows ${formatDuration(bounds.min_seconds)} to ` +
    `${formatDuration(bounds.max_seconds)} (default ${formatDuration(
      bounds.timeout_seconds
    )}); the warning shows for the last ${formatDuration(bounds.warning_seconds)}.`
  );
}

/**
 * The idle timeout the user asked for, clamped into the admin's bounds; `null` keeps the
 * admin's default. `note` says what changed, for a notification.
 */
export function clampIdleTimeout(
  wanted: number | null,
  bounds: IIdleBounds | null | undefined
): { seconds: number | null; note: string | null } {
  if (wanted === null || wanted === undefined || !Number.isFinite(wanted)) {
    return { seconds: null, note: null };
  }
  const asked = Math.round(wanted);
  if (!bounds) {
    return { seconds: asked, note: null };
  }
  if (asked < bounds.min_seconds) {
    return {
      seconds: bounds.min_seconds,
      note: `${formatDuration(asked)} is below the minimum your admin set; using ${formatDuration(
        bounds.min_seconds
      )}.`
    };
  }
  if (asked > bounds.max_seconds) {
    return {
      seconds: bounds.max_seconds,
      note: `${formatDuration(asked)} is above the maximum your admin set; using ${formatDuration(
        bounds.max_seconds
      )}.`
    };
  }
  return { seconds: asked, note: null };
}
