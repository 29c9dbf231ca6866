import { trans } from './trans';
import {
  baseName,
  cleanupQuestion,
  deletedText,
  formatMiB,
  RecentKeys,
  shouldOffer
} from '../src/checkpointText';

const MiB = 1024 * 1024;

describe('shouldOffer', () => {
  it('offers only for a path that is gone and has checkpoints kept', () => {
    expect(shouldOffer({ path: 'a.ipynb', exists: false, databases: 1, bytes: 10 })).toBe(true);
    expect(shouldOffer({ path: 'a.ipynb', exists: true, databases: 1, bytes: 10 })).toBe(false);
    expect(shouldOffer({ path: 'a.ipynb', exists: false, databases: 0, bytes: 0 })).toBe(false);
    expect(shouldOffer(null)).toBe(false);
  });
});

describe('formatMiB', () => {
  it('writes MiB with one decimal below 10, whole above', () => {
    expect(formatMiB(trans, 0.4 * MiB)).toBe('0.4 MiB');
    expect(formatMiB(trans, 1.25 * MiB)).toBe('1.3 MiB');
    expect(formatMiB(trans, 12.6 * MiB)).toBe('13 MiB');
  });
  it('says "less than 0.1 MiB" for a few bytes (never "0.0 MiB")', () => {
    expect(formatMiB(trans, 12288)).toBe('less than 0.1 MiB');
    expect(formatMiB(trans, 0)).toBe('less than 0.1 MiB');
  });
});

describe('baseName', () => {
  it('is the last part of the path', () => {
    expect(baseName('work/sub/a.ipynb')).toBe('a.ipynb');
    expect(baseName('a.ipynb')).toBe('a.ipynb');
    expect(baseName('work/sub/')).toBe('sub');
  });
});

describe('cleanupQuestion', () => {
  it('names the notebook, the count and the size', () => {
    const q = cleanupQuestion(trans, { path: 'work/a.ipynb', exists: false, databases: 1, bytes: 2 * MiB });
    expect(q.name).toBe('a.ipynb');
    expect(q.title).toBe('Delete the checkpoints of a.ipynb too?');
    expect(q.message).toBe(
      'gpushift kept 1 saved kernel state (2.0 MiB) of the deleted notebook a.ipynb. ' +
        'It could bring its variables back if the notebook is restored.'
    );
    expect(q.consequence).toBe('Deleting them frees the space; it cannot be undone.');
  });
  it('speaks of the notebooks of a deleted folder, in the plural', () => {
    const q = cleanupQuestion(trans, { path: 'work', exists: false, databases: 3, bytes: 30 * MiB });
    expect(q.title).toBe('Delete the checkpoints of work too?');
    expect(q.message).toBe(
      'gpushift kept 3 saved kernel states (30 MiB) of the notebooks in the deleted folder work. ' +
        'They could bring their variables back if the notebooks are restored.'
    );
  });
});

describe('deletedText', () => {
  it('says what was freed', () => {
    expect(deletedText(trans, { path: 'w/a.ipynb', deleted: 1, bytes: 0.5 * MiB })).toBe(
      'Deleted 1 saved kernel state of a.ipynb (0.5 MiB freed).'
    );
    expect(deletedText(trans, { path: 'w', deleted: 2, bytes: 3 * MiB })).toBe(
      'Deleted 2 saved kernel states of w (3.0 MiB freed).'
    );
  });
});

describe('RecentKeys', () => {
  it('answers true once per key within the window, and again after it', () => {
    let now = 1000;
    const recent = new RecentKeys(5000, () => now);
    expect(recent.firstTime('a.ipynb')).toBe(true);
    expect(recent.firstTime('a.ipynb')).toBe(false);
    expect(recent.firstTime('b.ipynb')).toBe(true);
    now += 4999;
    expect(recent.firstTime('a.ipynb')).toBe(false);
    now += 1;
    expect(recent.firstTime('a.ipynb')).toBe(true);
  });
  it('forgets old keys (does not grow)', () => {
    let now = 0;
    const recent = new RecentKeys(1000, () => now);
    for (let i = 0; i < 50; i++) {
      recent.firstTime(`n${i}.ipynb`);
      now += 600;
    }
    expect(recent.size).toBeLessThanOrEqual(2);
  });
});
