import { notebookPathOf, otherNotebookPathsOf, relativeTo } from '../src/migrationPath';
import { IMigration } from '../src/types';

const base: IMigration = { id: 'm1', phase: 'restoring', target: 'gpu' };
const ROOT = '/home/jovyan';

describe('relativeTo', () => {
  it('strips the root', () => {
    expect(relativeTo('/home/jovyan/e2e/Untitled.ipynb', ROOT)).toBe('e2e/Untitled.ipynb');
    expect(relativeTo('/home/jovyan/a.ipynb', '/home/jovyan/')).toBe('a.ipynb');
  });
  it('is empty outside the root or without one', () => {
    expect(relativeTo('/home/jovyanx/a.ipynb', ROOT)).toBe('');
    expect(relativeTo('/tmp/a.ipynb', ROOT)).toBe('');
    expect(relativeTo('/home/jovyan/a.ipynb', '')).toBe('');
    expect(relativeTo('/home/jovyan/../etc/a.ipynb', ROOT)).toBe('');
  });
});

describe('notebookPathOf', () => {
  it('prefers the relative path the server extension gives', () => {
    const m = {
      ...base,
      pending_cell: { cell_id: 'c', code: 'x', path: 'a/b.ipynb' },
      checkpoint: { path: 'other.ipynb' }
    };
    expect(notebookPathOf(m, ROOT)).toBe('a/b.ipynb');
    expect(notebookPathOf({ ...base, checkpoint: { path: 'c.ipynb' } }, ROOT)).toBe('c.ipynb');
  });
  it("makes the sidecar's absolute notebook_path relative to the server root", () => {
    const m = {
      ...base,
      pending_cell: { cell_id: 'c', code: 'x', notebook_path: '/home/jovyan/e2e/U.ipynb' },
      checkpoint: { commit_id: 'k', notebook_path: '/home/jovyan/e2e/U.ipynb' }
    } as IMigration;
    expect(notebookPathOf(m, ROOT)).toBe('e2e/U.ipynb');
    const manual = { ...base, checkpoint: { notebook_path: '/home/jovyan/n.ipynb' } } as IMigration;
    expect(notebookPathOf(manual, ROOT)).toBe('n.ipynb');
  });
  it('falls back to the path this page moved, else null', () => {
    const outside = { ...base, checkpoint: { notebook_path: '/elsewhere/n.ipynb' } } as IMigration;
    expect(notebookPathOf(outside, ROOT, 'mine.ipynb')).toBe('mine.ipynb');
    expect(notebookPathOf(base, ROOT)).toBeNull();
    expect(notebookPathOf({ ...base, pending_cell: null, checkpoint: null }, ROOT, '')).toBeNull();
  });
});

describe('otherNotebookPathsOf', () => {
  it("lists the move's other notebooks, relative to the root", () => {
    const m = {
      ...base,
      other_checkpoints: [
        { path: 'a/eval.ipynb', notebook_path: '/home/jovyan/a/eval.ipynb' },
        { notebook_path: '/home/jovyan/b.ipynb' },
        { notebook_path: '/elsewhere/c.ipynb' },
        { path: 'a/eval.ipynb' }
      ]
    };
    expect(otherNotebookPathsOf(m, ROOT)).toEqual(['a/eval.ipynb', 'b.ipynb']);
  });
  it('is empty for a move of one notebook', () => {
    expect(otherNotebookPathsOf({ ...base }, ROOT)).toEqual([]);
  });
});
