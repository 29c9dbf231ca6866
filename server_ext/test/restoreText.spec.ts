import { heldCellToRun } from '../src/restoreText';
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
