/**
 * What kind of pod the notebook runs on, and how the status bar says it (pure).
 */
import { TranslationBundle } from './i18n';
import { IIdleBounds, IRuntimeConfig } from './types';

export type PodKind =
  | { kind: 'unknown'; reason: string }
  | { kind: 'off'; reason: string }
  | { kind: 'cpu' }
  | { kind: 'gpu'; resource: string; count: number; name: string | null };

/** The pod kind from GET api_extension (null: the server did not answer). */
export function podKindOf(trans: TranslationBundle, config: IRuntimeConfig | null): PodKind {
  if (config === null) {
    return { kind: 'unknown', reason: trans.__('the server is not answering') };
  }
  const optimizer = config.optimizer;
  if (!optimizer || optimizer.state !== 'on') {
    return {
      kind: 'off',
      reason: optimizer?.reason || trans.__('this pod was started without the gpushift sidecar')
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

/** Words of a GPU's product name that say nothing about the model. */
const NOISE_WORDS = new Set(['nvidia', 'tesla', 'geforce', 'amd', 'instinct', 'radeon', 'intel', 'habana']);

/**
 * The model of a GPU in a few characters, for the status bar: "A100" from
 * "NVIDIA A100-SXM4-80GB", "RTX 4090" from "NVIDIA GeForce RTX 4090", the vendor when the
 * name carries no model number (the full name is in the tooltip).
 */
export function shortGpuName(resource: string, name: string | null): string {
  const vendor = VENDORS[resource] ?? resource.split('/')[0];
  if (!name) {
    return vendor;
  }
  const words = name
    .replace(/\([^)]*\)/g, ' ')
    .split(/[\s_]+/)
    .map(word => word.split('-')[0])
    .filter(word => word && !NOISE_WORDS.has(word.toLowerCase()));
  const at = words.findIndex(word => /\d/.test(word));
  if (at < 0) {
    return vendor;
  }
  const before = at > 0 ? words[at - 1] : '';
  const model = /^[A-Z]{2,4}$/.test(before) ? `${before} ${words[at]}` : words[at];
  return model.length > 16 ? `${model.slice(0, 15)}…` : model;
}

/** The status bar's short text ("CPU", "GPU · A100 ×1"); details go in the tooltip. */
export function podKindText(trans: TranslationBundle, pod: PodKind): string {
  switch (pod.kind) {
    case 'unknown':
      return trans.__('Pod: ?');
    case 'off':
      return trans.__('GPU optimizer off');
    case 'cpu':
      return trans.__('CPU');
    case 'gpu':
      return trans.__('GPU · %1 ×%2', shortGpuName(pod.resource, pod.name), pod.count);
  }
}

/** "1 min", "90 s", "1 h 30 min". */
export function formatDuration(trans: TranslationBundle, seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60 || (s < 600 && s % 60 !== 0)) {
    return trans.__('%1 s', s);
  }
  const hours = Math.floor(s / 3600);
  const minutes = Math.round((s % 3600) / 60);
  if (hours === 0) {
    return trans.__('%1 min', minutes);
  }
  return minutes === 0 ? trans.__('%1 h', hours) : trans.__('%1 h %2 min', hours, minutes);
}

/** The admin's idle bounds as a sentence (for the settings and the tooltip). */
export function describeBounds(
  trans: TranslationBundle,
  bounds: IIdleBounds | null | undefined
): string {
  if (!bounds) {
    return trans.__('No idle timer on this pod (the optimizer is off).');
  }
  const d = (seconds: number) => formatDuration(trans, seconds);
  return trans.__(
    'Idle timeout: your admin allows %1 to %2 (default %3); the warning shows for the last %4.',
    d(bounds.min_seconds),
    d(bounds.max_seconds),
    d(bounds.timeout_seconds),
    d(bounds.warning_seconds)
  );
}

/**
 * The idle timeout the user asked for, clamped into the admin's bounds; `null` keeps the
 * admin's default. `note` says what changed, for a notification.
 */
export function clampIdleTimeout(
  trans: TranslationBundle,
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
  const d = (seconds: number) => formatDuration(trans, seconds);
  if (asked < bounds.min_seconds) {
    return {
      seconds: bounds.min_seconds,
      note: trans.__('%1 is below the minimum your admin set; using %2.', d(asked), d(bounds.min_seconds))
    };
  }
  if (asked > bounds.max_seconds) {
    return {
      seconds: bounds.max_seconds,
      note: trans.__('%1 is above the maximum your admin set; using %2.', d(asked), d(bounds.max_seconds))
    };
  }
  return { seconds: asked, note: null };
}
