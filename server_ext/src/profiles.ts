/**
 * The admin's GPU profiles as the "Move to GPU…" picker shows them (pure): GET
 * api_extension/profiles says, per profile, its GPU type and count, what is free now
 * (from the cluster side's view of the nodes that could take it) and the namespace's
 * quota left; the server decides whether a move there can start now (`available`, and
 * `why` not).
 */
import { TranslationBundle } from './i18n';
import { gpuLabel } from './podKind';

/** One profile in GET api_extension/profiles. */
export interface IProfileChoice {
  name: string;
  resource: string;
  count: number;
  /** The GPU model its nodes carry (a node label), null when not known. */
  gpuType: string | null;
  /** GPUs of its resource free now on the nodes that could take it; null: not known. */
  free: number | null;
  /** The most free on one node (a pod takes its GPUs from one node); null: not known. */
  largestFree: number | null;
  /** Nodes that could take it; null: not known. */
  nodes: number | null;
  /** What the namespace's quota still allows of its resource; null: no quota. */
  quotaLeft: number | null;
  /** This pod runs on it. */
  current: boolean;
  /** A move there can start now. */
  available: boolean;
  /** Why not (or a caveat), in the server's words; null when nothing to say. */
  why: string | null;
}

/** GET api_extension/profiles. */
export interface IProfilesAnswer {
  /** The admin's default profile (the plain "Move to GPU" takes it). */
  default: string;
  /** The profile this pod runs on; null on a CPU pod. */
  current: string | null;
  /** When the cluster side last counted the free GPUs (ISO 8601); null: never. */
  capacityAt: string | null;
  /** Why the free GPUs are not known (not published, too old); null when they are. */
  capacityNote: string | null;
  profiles: IProfileChoice[];
}

/** One line of the picker. */
export interface IProfileRow {
  name: string;
  /** "NVIDIA A100 ×1", and "(default)" for the admin's default. */
  label: string;
  /** What is free and what the quota allows, or why it cannot be chosen. */
  detail: string;
  enabled: boolean;
  isDefault: boolean;
}

/** The picker's rows, in the admin's order. */
export function profileRows(trans: TranslationBundle, answer: IProfilesAnswer): IProfileRow[] {
  return answer.profiles.map(profile => {
    const what = gpuLabel(profile.resource, profile.count, profile.gpuType);
    const isDefault = profile.name === answer.default;
    const label = isDefault
      ? trans.__('%1: %2 (default)', profile.name, what)
      : trans.__('%1: %2', profile.name, what);
    return {
      name: profile.name,
      label,
      detail: profileDetail(trans, profile),
      enabled: profile.available && !profile.current,
      isDefault
    };
  });
}

/** "4 GPUs free on 2 nodes (at most 3 on one) · quota: 2 more", or why not. */
export function profileDetail(trans: TranslationBundle, profile: IProfileChoice): string {
  if (profile.current) {
    return trans.__('This notebook runs on it now.');
  }
  const parts: string[] = [];
  if (profile.free !== null) {
    const nodes = profile.nodes ?? 0;
    parts.push(
      nodes === 0
        ? trans.__('no node can take it')
        : profile.largestFree !== null && profile.largestFree < profile.free
          ? trans._n(
              '%2 free on %1 node (at most %3 on one)',
              '%2 free on %1 nodes (at most %3 on one)',
              nodes,
              profile.free,
              profile.largestFree
            )
          : trans._n('%2 free on %1 node', '%2 free on %1 nodes', nodes, profile.free)
    );
  } else {
    parts.push(trans.__('free GPUs not known'));
  }
  if (profile.quotaLeft !== null) {
    parts.push(trans.__('quota: %1 more', profile.quotaLeft));
  }
  const text = parts.join(' · ');
  return profile.why ? trans.__('%1. %2', text, profile.why) : text;
}

/** The row chosen when the picker opens: the default when it can be chosen, else the
 * first that can; null when none can. */
export function preselected(rows: readonly IProfileRow[]): string | null {
  const usable = rows.filter(row => row.enabled);
  return (usable.find(row => row.isDefault) ?? usable[0])?.name ?? null;
}

/** Read GET api_extension/profiles defensively (an older server answers 404 or less). */
export function readProfiles(data: unknown): IProfilesAnswer | null {
  if (!data || typeof data !== 'object') {
    return null;
  }
  const raw = data as Record<string, unknown>;
  if (!Array.isArray(raw.profiles)) {
    return null;
  }
  const text = (value: unknown) => (typeof value === 'string' && value ? value : null);
  const count = (value: unknown) =>
    typeof value === 'number' && Number.isFinite(value) ? value : null;
  const profiles: IProfileChoice[] = [];
  for (const item of raw.profiles) {
    if (!item || typeof item !== 'object' || typeof (item as { name?: unknown }).name !== 'string') {
      continue;
    }
    const p = item as Record<string, unknown>;
    profiles.push({
      name: p.name as string,
      resource: text(p.resource) ?? 'nvidia.com/gpu',
      count: count(p.count) ?? 1,
      gpuType: text(p.gpuType),
      free: count(p.free),
      largestFree: count(p.largestFree),
      nodes: count(p.nodes),
      quotaLeft: count(p.quotaLeft),
      current: p.current === true,
      available: p.available === true,
      why: text(p.why)
    });
  }
  return {
    default: text(raw.default) ?? '',
    current: text(raw.current),
    capacityAt: text(raw.capacityAt),
    capacityNote: text(raw.capacityNote),
    profiles
  };
}
