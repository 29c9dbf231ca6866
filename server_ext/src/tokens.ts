/**
 * The migration service that the `auto` plugin provides and the `manual` plugin (or any
 * other extension) builds on.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { Token } from '@lumino/coreutils';
import { ISignal } from '@lumino/signaling';

import { IUserSettings } from './decision';
import { PodKind } from './podKind';
import { IProfilesAnswer } from './profiles';
import {
  IClassification,
  IIdleSnapshot,
  IMigration,
  IPendingCell,
  IPodSessions,
  IRuntimeConfig,
  Target
} from './types';

export interface IMoveOptions {
  /** Why: "auto" (a GPU cell asked), "manual" (the user), "cuda-error". */
  reason: 'auto' | 'manual';
  /** The notebook whose kernel state is saved and restored (the current one). */
  panel?: NotebookPanel | null;
  /** The cell to run on the new pod. */
  pendingCell?: IPendingCell | null;
  /** The GPU profile to move to (a move to GPU); absent or null: the admin's default. */
  profile?: string | null;
}

export interface IMigrationService {
  /** What kind of pod this is (updates: `changed`). */
  readonly pod: PodKind;
  /** The last GET api_extension answer; null until the first one or while unreachable. */
  readonly config: IRuntimeConfig | null;
  /** The current or last migration (null: none known). */
  readonly migration: IMigration | null;
  /** A migration is in flight (or the server went away during one), or this page asked
   * for one and waits for the answer. */
  readonly migrating: boolean;
  /** The target of the move this page asked for, until the server answers (the server
   * saves the variables meanwhile); null otherwise. */
  readonly starting: Target | null;
  /** When (ms epoch) a move was last seen in flight (now, while one is); null: never. */
  readonly lastMoveAt: number | null;
  /** Since when (ms epoch) the server has not answered; null while it answers. */
  readonly serverDownSince: number | null;
  /** The idle timer on a GPU pod (null on CPU). */
  readonly idle: IIdleSnapshot | null;
  /** Seconds before the idle move; null when no warning shows. */
  idleSecondsLeft(): number | null;
  /** The user's settings (the `manual` plugin writes them from the settings registry). */
  settings: IUserSettings;
  /** Anything above changed. */
  readonly changed: ISignal<IMigrationService, void>;
  /** Poll the server now. */
  refresh(): Promise<void>;
  /** The admin's GPU profiles with what is free now (GET api_extension/profiles);
   * rejects with the server's reason (`ApiError`). */
  profiles(): Promise<IProfilesAnswer>;
  /** Start a move; resolves true when the server accepted it (errors are notified). */
  move(target: Target, options: IMoveOptions): Promise<boolean>;
  /** The notebook path this page asked migration `id` to move (null: not this page's). */
  movedPath(id: string): string | null;
  /** "Stay on GPU": cancel the idle move that is being counted down. */
  stayOnGpu(): Promise<boolean>;
  /** Send the idle timeout (seconds; null: the admin's default) to the sidecar. */
  setIdleTimeout(seconds: number | null): Promise<IIdleSnapshot | null>;
  /** What a move would save and stop now; `variables`: also the variables it would
   * not bring back (a pickling in each kernel: slower). Null: no answer; never throws. */
  podSessions(variables?: boolean): Promise<IPodSessions | null>;
  /** The classifier's answer for a cell's code (null: no answer; never throws).
   * `firstHit`: the reasons may stop at the first statement that needs a GPU. */
  classify(
    code: string,
    kernelId: string | null,
    firstHit?: boolean
  ): Promise<IClassification | null>;
  /** A cell about to run was classified in this kernel (its id): the classifier's memory
   * of that kernel may have changed. */
  readonly classified: ISignal<IMigrationService, string>;
  /** Ask the classifier about a cell the user is on but has not run, so that its run is
   * a lookup (null: no answer; never throws). Binds nothing in the kernel's memory. */
  preview(code: string, kernelId: string): Promise<IClassification | null>;
  /** Tell the idle timer a GPU cell started or finished (fire and forget). */
  reportActivity(kernelId: string, gpuCellRunning: boolean): void;
  /** Attach kishu to a notebook's kernel (idempotent; fire and forget). */
  attach(kernelId: string, path: string): Promise<void>;
}

export const IMigrationService = new Token<IMigrationService>(
  'gpushift-jupyter:IMigrationService',
  'Moves the notebook between CPU and GPU pods and says which kind of pod it runs on.'
);
