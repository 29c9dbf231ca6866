import { HELD_CELL_FRESH_SECONDS, heldCellIsStale, heldCellToRun } from '../src/restoreText';
import { IRestoreResult } from '../src/types';

const cell = { cell_id: 'cell-2', code: 'df.to_csv(open("out.csv", "w"))', path: 'a.ipynb' };

describe('heldCellToRun', () => {
  it('runs the held cell after a restore that succeeded', () => {
    const result: IRestoreResult = { ok: true, restored: ['df'], not_restored: [], pending_cell: cell };
    expect(heldCellToRun(result)).toBe(cell);
  });

  it('keeps it held when the restore failed, whatever the migration said', () => {
    const failed: IRestoreResult = {
      ok: false,
      restored: [],
      not_restored: [],
      detail: "No module named 'polars'",
      pending_cell: cell
    };
    expect(heldCellToRun(failed)).toBeNull();
  });

  it('never runs it for a recovered move (it asked for a GPU this pod lacks)', () => {
    const recovered: IRestoreResult = {
      ok: true,
      restored: ['df'],
      not_restored: [],
      pending_cell: cell,
      recovered: true
    };
    expect(heldCellToRun(recovered)).toBeNull();
  });

  it('runs nothing when the move held no cell', () => {
    expect(heldCellToRun({ ok: true, restored: [], not_restored: [] })).toBeNull();
  });
});

describe('heldCellIsStale', () => {
  const base: IRestoreResult = { ok: true, restored: ['df'], not_restored: [], pending_cell: cell };
  it('runs a cell restored just now by the browser or the server', () => {
    expect(heldCellIsStale(base, 1000)).toBe(false);
    expect(heldCellIsStale({ ...base, restored_on_server: true, restored_at: 990 }, 1000)).toBe(false);
  });
  it('offers one the server restored long before the notebook was opened', () => {
    const old = { ...base, restored_on_server: true, restored_at: 1000 - HELD_CELL_FRESH_SECONDS - 1 };
    expect(heldCellIsStale(old, 1000)).toBe(true);
  });
});
