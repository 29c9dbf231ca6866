/**
 * Which notebook a migration saved (pure): the path the restore reopens, relative to the
 * server's root as JupyterLab's contents API has it.
 *
 * The server extension's answers name it `path` (relative) in /migrate and /restore, but
 * GET /migration passes the sidecar's record on, which has only `notebook_path` (the
 * absolute path on the pod). The root is the same folder on every pod of a notebook (the
 * workspace volume), so the absolute path is made relative to JupyterLab's `serverRoot`.
 */
import { IMigration } from './types';

/** `absolute` relative to `root` ('' when not inside it). Both POSIX paths. */
export function relativeTo(absolute: string, root: string): string {
  const base = root.replace(/\/+$/, '');
  if (!base || !absolute.startsWith(`${base}/`)) {
    return '';
  }
  const rest = absolute.slice(base.length + 1).replace(/^\/+/, '');
  return rest.split('/').some(part => part === '..') ? '' : rest;
}

interface IPathFields {
  path?: unknown;
  notebook_path?: unknown;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

/**
 * The notebook of migration `m` relative to the server root, or null when the record
 * names none. `serverRoot`: JupyterLab's page config option of that name; `remembered`:
 * the path this page asked to move, for the migration it started.
 */
export function notebookPathOf(
  m: IMigration,
  serverRoot: string,
  remembered: string | null = null
): string | null {
  const sources = [m.pending_cell, m.checkpoint] as (IPathFields | null | undefined)[];
  for (const source of sources) {
    const relative = text(source?.path);
    if (relative) {
      return relative;
    }
  }
  for (const source of sources) {
    const absolute = text(source?.notebook_path);
    const relative = absolute ? relativeTo(absolute, serverRoot) : '';
    if (relative) {
      return relative;
    }
  }
  return remembered || null;
}

/**
 * The move's other notebooks (every notebook of the pod is saved and restored, not only
 * the one that asked), relative to the server root; those without a usable path are
 * left out.
 */
export function otherNotebookPathsOf(m: IMigration, serverRoot: string): string[] {
  const paths: string[] = [];
  for (const source of (m.other_checkpoints ?? []) as IPathFields[]) {
    const relative = text(source?.path) || relativeTo(text(source?.notebook_path), serverRoot);
    if (relative && !paths.includes(relative)) {
      paths.push(relative);
    }
  }
  return paths;
}
