import { trans } from './trans';
import { backgroundText, IBackgroundReport, readBackground } from '../src/backgroundText';

/** Epoch seconds of a local time (the tests hold in any time zone). */
function local(y: number, mo: number, d: number, h: number, mi: number): number {
  return new Date(y, mo - 1, d, h, mi).getTime() / 1000;
}

const NOW = new Date(2024, 2, 5, 16, 30); // 2024-03-05 16:30 local
const BASE = { interval_s: 60, max_state_mib: 4096 };

function report(extra: Partial<IBackgroundReport>): IBackgroundReport {
  return { ...BASE, state: 'none', ...extra };
}

describe('readBackground', () => {
  it('takes an answer with a known state', () => {
    const answer = { ...BASE, state: 'saved', at: 1, commit_id: 'c1', variables: 2 };
    expect(readBackground(answer)).toEqual(answer);
  });
  it('refuses anything else', () => {
    expect(readBackground(null)).toBeNull();
    expect(readBackground('saved')).toBeNull();
    expect(readBackground({ ...BASE })).toBeNull();
    expect(readBackground({ ...BASE, state: 'exploded' })).toBeNull();
  });
});

describe('backgroundText', () => {
  it('says when the variables were saved, and how many', () => {
    const saved = report({ state: 'saved', at: local(2024, 3, 5, 12, 3), variables: 3 });
    expect(backgroundText(trans, saved, NOW)).toEqual({
      line: '3 variables saved 12:03 (background).',
      mark: ''
    });
    expect(backgroundText(trans, { ...saved, variables: 1 }, NOW).line).toBe(
      '1 variable saved 12:03 (background).'
    );
  });
  it('gives the date of a save on another day, and does without what is missing', () => {
    const saved = report({ state: 'saved', at: local(2024, 3, 4, 9, 7) });
    expect(backgroundText(trans, saved, NOW).line).toBe('Variables saved 2024-03-04 09:07 (background).');
    expect(backgroundText(trans, report({ state: 'saved' }), NOW).line).toBe(
      'Variables saved (background).'
    );
    expect(backgroundText(trans, report({ state: 'saved', variables: 2 }), NOW).line).toBe(
      '2 variables saved (background).'
    );
  });
  it('says a save is under way (also when another one still runs)', () => {
    expect(backgroundText(trans, report({ state: 'running', at: 1 }), NOW)).toEqual({
      line: 'Saving variables in the background…',
      mark: ''
    });
    expect(backgroundText(trans, report({ state: 'busy' }), NOW).mark).toBe('');
  });
  it('says so, with the mark, when a state too large was skipped', () => {
    const why =
      'the variables take about 5000 MiB, more than the 4096 MiB background checkpoints are made for: they are saved on a move or on demand';
    expect(backgroundText(trans, report({ state: 'skipped', why, state_bytes: 5e9 }), NOW)).toEqual({
      line: `Not saved in the background: ${why}.`,
      mark: 'warn'
    });
    // No reason given: the bound.
    expect(backgroundText(trans, report({ state: 'skipped', max_state_mib: 8 }), NOW).line).toBe(
      'Not saved in the background: the variables are larger than 8 MiB; they are saved on a move or on demand.'
    );
  });
  it('says so, with the mark, when it failed (one full stop)', () => {
    expect(backgroundText(trans, report({ state: 'failed', why: 'the volume is full.' }), NOW)).toEqual({
      line: 'Not saved in the background: the volume is full.',
      mark: 'warn'
    });
    expect(backgroundText(trans, report({ state: 'failed' }), NOW).line).toBe(
      'Not saved in the background: the background checkpoint failed.'
    );
  });
  it('a cancelled one and checkpoints turned off: a line, no mark', () => {
    expect(
      backgroundText(trans, report({ state: 'cancelled', why: "a move's checkpoint came first" }), NOW)
    ).toEqual({ line: "Background checkpoint cancelled: a move's checkpoint came first.", mark: '' });
    expect(backgroundText(trans, report({ state: 'cancelled' }), NOW).line).toBe(
      'Background checkpoint cancelled.'
    );
    expect(
      backgroundText(trans, report({ state: 'off', why: 'background checkpoints are off' }), NOW)
    ).toEqual({ line: 'Background checkpoints are off.', mark: '' });
  });
  it('says when the user turned them off (their setting), not the admin', () => {
    const off = report({ state: 'off', why: 'you turned background checkpoints off', user_interval_s: 0 });
    expect(backgroundText(trans, off, NOW)).toEqual({
      line: 'You turned background checkpoints off (setting "Save variables in the background").',
      mark: ''
    });
    // The admin's 0 with a user's interval (or none): not the user's doing.
    expect(backgroundText(trans, { ...off, why: 'off', user_interval_s: 300 }, NOW).line).toBe(
      'Background checkpoints are off.'
    );
    expect(backgroundText(trans, { ...off, why: 'off', user_interval_s: null }, NOW).line).toBe(
      'Background checkpoints are off.'
    );
  });
  it('nothing for none, or no answer', () => {
    expect(backgroundText(trans, report({ state: 'none' }), NOW)).toEqual({ line: '', mark: '' });
    expect(backgroundText(trans, null, NOW)).toEqual({ line: '', mark: '' });
  });
});
