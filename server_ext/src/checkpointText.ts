/**
 * A deleted notebook's checkpoints (pure): whether to offer to delete them, the words of
 * the question, and which deletions were asked about already. The dialog and the signal
 * are in checkpointCleanup.ts.
 */
import { TranslationBundle } from './i18n';

/** `GET api_extension/checkpoints?path=`: the checkpoints kept for a (deleted) path. */
export interface ICheckpointsKept {
  path: string;
  /** The notebook (or folder) itself is still there. */
  exists: boolean;
  /** How many checkpoint databases are kept for it (all of a folder's notebooks'). */
  databases: number;
  bytes: number;
}

/** `DELETE api_extension/checkpoints?path=`. */
export interface ICheckpointsDeleted {
  path: string;
  deleted: number;
  bytes: number;
}

/** The question to ask: only for a path that is gone and has checkpoints kept. */
export function shouldOffer(kept: ICheckpointsKept | null): boolean {
  return (
    kept !== null &&
    kept.exists === false &&
    typeof kept.databases === 'number' &&
    kept.databases > 0
  );
}

/** The last part of a contents path: `work/a.ipynb` → `a.ipynb`. */
export function baseName(path: string): string {
  const parts = path.split('/').filter(part => part !== '');
  return parts.length ? parts[parts.length - 1] : path;
}

/** Bytes in MiB: "0.4 MiB", "12 MiB", and for a few bytes "less than 0.1 MiB". */
export function formatMiB(trans: TranslationBundle, bytes: number): string {
  const mib = Math.max(0, bytes || 0) / (1024 * 1024);
  if (mib < 0.05) {
    return trans.__('less than 0.1 MiB');
  }
  return trans.__('%1 MiB', mib < 10 ? mib.toFixed(1) : Math.round(mib).toString());
}

export interface ICleanupQuestion {
  /** The deleted notebook's (or folder's) name. */
  name: string;
  title: string;
  /** What is kept and what it is good for. */
  message: string;
  /** What deleting does. */
  consequence: string;
}

/** The dialog's words. A path ending in `.ipynb` is a notebook; any other, a folder. */
export function cleanupQuestion(trans: TranslationBundle, kept: ICheckpointsKept): ICleanupQuestion {
  const name = baseName(kept.path);
  const size = formatMiB(trans, kept.bytes);
  const notebook = kept.path.toLowerCase().endsWith('.ipynb');
  return {
    name,
    title: trans.__('Delete the checkpoints of %1 too?', name),
    message: notebook
      ? trans._n(
          'gpushift kept %1 saved kernel state (%2) of the deleted notebook %3. It could bring its variables back if the notebook is restored.',
          'gpushift kept %1 saved kernel states (%2) of the deleted notebook %3. They could bring its variables back if the notebook is restored.',
          kept.databases,
          size,
          name
        )
      : trans._n(
          'gpushift kept %1 saved kernel state (%2) of the notebooks in the deleted folder %3. It could bring their variables back if the notebooks are restored.',
          'gpushift kept %1 saved kernel states (%2) of the notebooks in the deleted folder %3. They could bring their variables back if the notebooks are restored.',
          kept.databases,
          size,
          name
        ),
    consequence: trans.__('Deleting them frees the space; it cannot be undone.')
  };
}

/** After "Delete them": what was freed. */
export function deletedText(trans: TranslationBundle, deleted: ICheckpointsDeleted): string {
  return trans._n(
    'Deleted %1 saved kernel state of %2 (%3 freed).',
    'Deleted %1 saved kernel states of %2 (%3 freed).',
    deleted.deleted,
    baseName(deleted.path),
    formatMiB(trans, deleted.bytes)
  );
}

/**
 * Keys seen within the last `windowMs`: JupyterLab may announce one deletion more than
 * once, and the user is asked once.
 */
export class RecentKeys {
  private _seen = new Map<string, number>();

  constructor(
    readonly windowMs = 5000,
    private readonly _now: () => number = () => Date.now()
  ) {}

  /** True the first time `key` comes within the window (and remembers it). */
  firstTime(key: string): boolean {
    const now = this._now();
    for (const [seen, at] of this._seen) {
      if (now - at >= this.windowMs) {
        this._seen.delete(seen);
      }
    }
    if (this._seen.has(key)) {
      return false;
    }
    this._seen.set(key, now);
    return true;
  }

  /** How many keys are remembered (for tests). */
  get size(): number {
    return this._seen.size;
  }
}
