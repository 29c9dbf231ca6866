import { trans } from './trans';
import {
  formatSavedAt,
  IResumeOffer,
  KernelProcesses,
  resumeOutcome,
  resumeQuestion,
  resumeRefused,
  shouldOffer,
  worthAskingAgain
} from '../src/resumeText';

/** Epoch seconds of a local time (the tests hold in any time zone). */
function local(y: number, mo: number, d: number, h: number, mi: number): number {
  return new Date(y, mo - 1, d, h, mi).getTime() / 1000;
}

const NOW = new Date(2024, 2, 5, 16, 30); // 2024-03-05 16:30 local

const offer: IResumeOffer = {
  offer: true,
  why: '',
  path: 'work/analysis.ipynb',
  commit_id: 'c1',
  saved_at: local(2024, 3, 5, 9, 7),
  variables: ['x', 'names'],
  not_saved: []
};

describe('shouldOffer', () => {
  it('offers a checkpoint with variables', () => {
    expect(shouldOffer(offer)).toBe(true);
  });
  it('not when the server says no, or there is nothing to bring back', () => {
    expect(shouldOffer({ ...offer, offer: false, why: 'the kernel has run cells' })).toBe(false);
    expect(shouldOffer({ ...offer, commit_id: null })).toBe(false);
    expect(shouldOffer({ ...offer, variables: [] })).toBe(false);
    expect(shouldOffer(null)).toBe(false);
    expect(shouldOffer(undefined)).toBe(false);
  });
});

describe('worthAskingAgain', () => {
  it('asks again when the server was busy with the kernel or it was not ready', () => {
    const busy = 'gpushift is working in this kernel (a checkpoint or a restore); ask again when it is done';
    expect(worthAskingAgain({ ...offer, offer: false, why: busy })).toBe(true);
    expect(worthAskingAgain({ ...offer, offer: false, why: 'the kernel is not ready: timeout' })).toBe(true);
  });
  it('not for a final no, nor for an offer', () => {
    expect(worthAskingAgain({ ...offer, offer: false, why: 'the kernel has run cells' })).toBe(false);
    expect(worthAskingAgain({ ...offer, offer: false, why: 'this notebook has no checkpoint' })).toBe(false);
    expect(worthAskingAgain(offer)).toBe(false);
    expect(worthAskingAgain(null)).toBe(false);
  });
});

describe('formatSavedAt', () => {
  it('is HH:MM in local time today', () => {
    expect(formatSavedAt(trans, local(2024, 3, 5, 9, 7), NOW)).toBe('09:07');
    expect(formatSavedAt(trans, local(2024, 3, 5, 0, 0), NOW)).toBe('00:00');
    expect(formatSavedAt(trans, local(2024, 3, 5, 23, 59), NOW)).toBe('23:59');
  });
  it('carries the date on another day', () => {
    expect(formatSavedAt(trans, local(2024, 3, 4, 23, 59), NOW)).toBe('2024-03-04 23:59');
    expect(formatSavedAt(trans, local(2023, 3, 5, 16, 30), NOW)).toBe('2023-03-05 16:30');
  });
  it('is empty when the server did not say', () => {
    expect(formatSavedAt(trans, null, NOW)).toBe('');
    expect(formatSavedAt(trans, undefined, NOW)).toBe('');
    expect(formatSavedAt(trans, NaN, NOW)).toBe('');
  });
});

describe('resumeQuestion', () => {
  it('says how many variables, from when, and names them', () => {
    const q = resumeQuestion(trans, offer, 'ignored.ipynb', NOW);
    expect(q.title).toBe('Resume where you left off?');
    expect(q.summary).toBe('analysis.ipynb has a checkpoint from an earlier kernel: 2 variables from 09:07.');
    expect(q.variables).toBe('x, names');
    expect(q.notSaved).toEqual([]);
    expect(q.resume).toBe('Resume');
    expect(q.fresh).toBe('Start fresh');
    expect(q.choice).toContain('the checkpoint is kept');
  });
  it('singular, another day, and the notebook path when the server gives none', () => {
    const q = resumeQuestion(
      trans,
      { ...offer, path: '', variables: ['df'], saved_at: local(2024, 3, 1, 8, 0) },
      'sub/b.ipynb',
      NOW
    );
    expect(q.summary).toBe('b.ipynb has a checkpoint from an earlier kernel: 1 variable from 2024-03-01 08:00.');
  });
  it('without a time when the server did not say', () => {
    const q = resumeQuestion(trans, { ...offer, saved_at: null }, 'a.ipynb', NOW);
    expect(q.summary).toBe('analysis.ipynb has a checkpoint from an earlier kernel: 2 variables.');
  });
  it('lists the first 8 names, then how many more', () => {
    const variables = Array.from({ length: 11 }, (_, i) => `v${i}`);
    const q = resumeQuestion(trans, { ...offer, variables }, 'a.ipynb', NOW);
    expect(q.variables).toBe('v0, v1, v2, v3, v4, v5, v6, v7 and 3 more');
    expect(q.summary).toContain('11 variables from 09:07');
  });
  it('says what will not come back, and why', () => {
    const q = resumeQuestion(
      trans,
      {
        ...offer,
        not_saved: [
          { name: 'conn', reason: 'a socket cannot be saved' },
          { name: 'gen', reason: '' }
        ]
      },
      'a.ipynb',
      NOW
    );
    expect(q.notSaved).toEqual([
      'Will not come back (they were not saved):',
      'conn — a socket cannot be saved',
      'gen'
    ]);
    const one = resumeQuestion(trans, { ...offer, not_saved: [{ name: 'conn', reason: 'r' }] }, 'a', NOW);
    expect(one.notSaved[0]).toBe('Will not come back (it was not saved):');
  });
});

describe('resumeOutcome', () => {
  const base = { ok: true, restored: ['x', 'names'], not_restored: [], detail: '', commit_id: 'c1' };
  it('counts and names what came back', () => {
    const detail = '2 variable(s) restored from checkpoint c1';
    expect(resumeOutcome(trans, { ...base, detail }, 'work/a.ipynb')).toEqual({
      message: 'Restored 2 variables of a.ipynb: x, names.',
      type: 'success',
      details: null
    });
    expect(resumeOutcome(trans, { ...base, restored: ['x'] }, 'a.ipynb').message).toBe(
      'Restored 1 variable of a.ipynb: x.'
    );
  });
  it('warns with the names not restored, the reasons in the details', () => {
    const text = resumeOutcome(
      trans,
      { ...base, not_restored: [{ name: 'model', reason: "No module named 'torch'" }] },
      'a.ipynb'
    );
    expect(text.type).toBe('warning');
    expect(text.message).toBe('Restored 2 variables of a.ipynb; not restored: model.');
    expect(text.details).toBe("Not restored: model — No module named 'torch'");
  });
  it('warns when nothing came back', () => {
    expect(resumeOutcome(trans, { ...base, restored: [] }, 'a.ipynb')).toMatchObject({
      type: 'warning',
      message: 'Nothing was restored in a.ipynb.'
    });
  });
  it('is an error when the restore failed', () => {
    const text = resumeOutcome(trans, { ...base, ok: false, restored: [], detail: 'kishu failed' }, 'a.ipynb');
    expect(text).toEqual({
      message: 'The variables of a.ipynb were not restored: kishu failed',
      type: 'error',
      details: 'kishu failed'
    });
    expect(resumeOutcome(trans, { ...base, ok: false, detail: '' }, 'a.ipynb').message).toBe(
      'The variables of a.ipynb were not restored: the restore failed'
    );
  });
});

describe('resumeRefused', () => {
  it('says a cell ran meanwhile, and that the checkpoint is kept', () => {
    const text = resumeRefused(trans, 'kernel_ran_cells', 'nothing was restored: ...', 'w/a.ipynb');
    expect(text.type).toBe('warning');
    expect(text.message).toBe(
      'Nothing was restored in a.ipynb: a cell ran in the new kernel meanwhile. The checkpoint is kept.'
    );
  });
  it('names a move under way and a checkpoint gone', () => {
    expect(resumeRefused(trans, 'move_in_progress', '', 'a.ipynb').message).toContain('a move is under way');
    expect(resumeRefused(trans, 'no_checkpoint', '', 'a.ipynb').message).toContain('its checkpoint is gone');
  });
  it('gives the server\'s detail otherwise', () => {
    expect(resumeRefused(trans, 'invalid_field', 'commit_id: required', 'a.ipynb')).toEqual({
      message: 'The variables of a.ipynb were not restored: commit_id: required',
      type: 'error',
      details: null
    });
  });
});

describe('KernelProcesses', () => {
  it('asks about a new kernel once it is idle, once', () => {
    const p = new KernelProcesses();
    expect(p.status('k1', 'starting')).toBeNull();
    const key = p.status('k1', 'idle') as string;
    expect(key).toBe('k1#0');
    expect(p.claim(key)).toBe(true);
    p.status('k1', 'busy');
    expect(p.claim(p.status('k1', 'idle') as string)).toBe(false);
  });

  it('asks again after a restart: the same id is a new process', () => {
    const p = new KernelProcesses();
    expect(p.claim(p.status('k1', 'idle') as string)).toBe(true);
    expect(p.status('k1', 'restarting')).toBeNull();
    expect(p.status('k1', 'autorestarting')).toBeNull(); // the same restart, said twice
    expect(p.status('k1', 'starting')).toBeNull();
    const key = p.status('k1', 'idle') as string;
    expect(key).toBe('k1#1');
    expect(p.current('k1')).toBe('k1#1');
    expect(p.claim(key)).toBe(true);
    expect(p.claim(p.status('k1', 'idle') as string)).toBe(false);
    p.status('k1', 'autorestarting'); // the server restarted it (out of memory)
    expect(p.status('k1', 'idle')).toBe('k1#2');
  });

  it('counts one restart once for every notebook that shows the kernel', () => {
    const p = new KernelProcesses();
    p.claim(p.status('k1', 'idle') as string);
    p.status('k1', 'restarting'); // seen by one notebook
    p.status('k1', 'restarting'); // and by another
    const first = p.status('k1', 'idle') as string;
    const second = p.status('k1', 'idle') as string;
    expect(first).toBe('k1#1');
    expect(second).toBe('k1#1');
    expect(p.claim(first)).toBe(true);
    expect(p.claim(second)).toBe(false);
  });

  it('keeps kernels apart', () => {
    const p = new KernelProcesses();
    p.status('k1', 'restarting');
    expect(p.status('k2', 'idle')).toBe('k2#0');
    expect(p.status('k1', 'idle')).toBe('k1#1');
  });
});
