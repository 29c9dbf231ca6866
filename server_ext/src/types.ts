/**
 * Shapes of the server extension's REST answers (`<base_url>api_extension`), as the
 * front end reads them. Only the fields the front end uses are typed; the rest is kept.
 */

/** A migration's phase, as the sidecar's state machine names it. */
export type MigrationPhase =
  | 'requested'
  | 'checkpointing'
  | 'checkpointed'
  | 'patching'
  | 'recreating'
  | 'restoring'
  | 'done'
  | 'rolled_back'
  | 'failed'
  | 'cancelled';

export type Target = 'gpu' | 'cpu';

/** Something a move stops without saving (`GET api_extension/pod`). */
export interface IWillStop {
  kind: 'console' | 'kernel' | 'notebook' | 'terminal';
  name: string;
  why: string;
}

/** A variable a move would not bring back (`GET api_extension/pod?variables=1`). */
export interface IUnsavedVariable {
  notebook: string;
  name: string;
  why: string;
}

/** `GET api_extension/pod`: the notebooks a move saves, and what it stops; with
 * `?variables=1` also the variables it would not bring back (`unsaved`) and the
 * notebooks whose variables could not be looked at now (`unchecked`). */
export interface IPodSessions {
  notebooks: string[];
  will_stop: IWillStop[];
  unsaved?: IUnsavedVariable[];
  unchecked?: { notebook: string; why: string }[];
}

export interface IPendingCell {
  cell_id: string;
  code: string;
  path?: string | null;
}

export interface IMigration {
  id: string;
  phase: MigrationPhase;
  target: Target;
  reason?: string | null;
  profile?: string | null;
  error?: string | null;
  active?: boolean;
  updatedAt?: string | null;
  pending_cell?: IPendingCell | null;
  checkpoint?: { commit_id?: string; path?: string } | null;
  /** The checkpoints of the pod's other notebooks (restored too, each its own kernel). */
  other_checkpoints?: { commit_id?: string; path?: string; notebook_path?: string }[];
  /** GET /migration: rolled back or failed after the pod was replaced, state not yet
   * restored on this pod (POST /restore recovers it). */
  recoverable?: boolean;
  /** GET /migration: the new pod's server restored the move by itself, and no browser
   * has collected what it did yet (POST /restore answers it). */
  restored_on_server?: boolean;
  /** What the restore on the new pod did (the sidecar keeps it once the restore ended;
   * absent when the move needed no new pod). */
  restore_report?: { ok?: boolean } | null;
  [key: string]: unknown;
}

export interface IIdleBounds {
  min_seconds: number;
  max_seconds: number;
  timeout_seconds: number;
  warning_seconds: number;
}

/** GET /idle: the sidecar's idle snapshot. */
export interface IIdleSnapshot {
  state: string;
  idle_for?: number;
  timeout?: number;
  timeout_source?: string;
  warning_seconds?: number;
  /** Epoch seconds at which the idle move happens (warning only). */
  warning_until?: number | null;
  reason?: string | null;
  /** The sidecar's clock (epoch seconds) when it answered. */
  at?: number;
  [key: string]: unknown;
}

/** GET api_extension: the runtime config plus the optimizer's state. */
export interface IRuntimeConfig {
  usingGPU?: boolean;
  PodName?: string;
  PodNamespace?: string;
  notebook?: string;
  gpu?: { resource: string; count: number; name?: string } | null;
  node?: string;
  profile?: string | null;
  migration?: IMigration | null;
  idle?: IIdleSnapshot | null;
  idleBounds?: IIdleBounds | null;
  profiles?: string[];
  optimizer?: { state: 'on' | 'off'; reason: string | null };
  [key: string]: unknown;
}

export interface IClassifyReason {
  line: number;
  rule: string;
  text: string;
}

export interface IClassification {
  needs_gpu: boolean;
  reasons: IClassifyReason[];
  elapsed_ms?: number;
}

export interface IRestoreResult {
  ok: boolean;
  restored: string[];
  not_restored: { name: string; reason: string }[];
  detail?: string;
  commit_id?: string;
  pending_cell?: IPendingCell | null;
  migration?: IMigration | null;
  /** The state of a move that did not complete (its held cell is not run). */
  recovered?: boolean;
  /** The server restored the move by itself, into `kernel_id`, at `restored_at`. */
  restored_on_server?: boolean;
  kernel_id?: string | null;
  /** Epoch seconds. */
  restored_at?: number;
}
