import { trans } from './trans';
import { describeMigration, podWasReplaced } from '../src/phases';
import {
  describeRecovery,
  failureReason,
  NOTICE_MAX_CHARS,
  restoreKindOf,
  retryRequest,
  shorten
} from '../src/recovery';
import { IMigration, IRestoreResult } from '../src/types';

const SCHEDULER = '0/3 nodes are available: 3 Insufficient nvidia.com/gpu.';

const rolledBack: IMigration = {
  id: 'm7',
  phase: 'rolled_back',
  target: 'gpu',
  reason: 'auto',
  error: SCHEDULER,
  recoverable: true,
  history: [{ phase: 'requested' }, { phase: 'patching' }, { phase: 'recreating' }, { phase: 'rolled_back' }],
  checkpoint: { commit_id: 'c1', path: 'e2e/Untitled.ipynb' },
  pending_cell: { cell_id: 'cell-2', code: 'device = "cuda"', path: 'e2e/Untitled.ipynb' }
};

const restored: IRestoreResult = {
  ok: true,
  restored: ['big', 'frame', 'point'],
  not_restored: [],
  pending_cell: null,
  recovered: true
};

describe('restoreKindOf', () => {
  const none = new Set<string>();
  it('restores a move in phase restoring, recovers a recoverable one', () => {
    expect(restoreKindOf({ ...rolledBack, phase: 'restoring', recoverable: false }, false, none)).toBe(
      'restore'
    );
    expect(restoreKindOf(rolledBack, false, none)).toBe('recover');
    expect(restoreKindOf({ ...rolledBack, phase: 'failed' }, false, none)).toBe('recover');
  });
  it('does nothing while the server is away, twice, or without the server saying so', () => {
    expect(restoreKindOf(rolledBack, true, none)).toBeNull();
    expect(restoreKindOf(rolledBack, false, new Set(['m7']))).toBeNull();
    expect(restoreKindOf({ ...rolledBack, recoverable: false }, false, none)).toBeNull();
    expect(restoreKindOf({ ...rolledBack, recoverable: undefined }, false, none)).toBeNull();
    // `recoverable` on a phase that is not an unfinished end is not trusted.
    expect(restoreKindOf({ ...rolledBack, phase: 'done' }, false, none)).toBeNull();
    expect(restoreKindOf({ ...rolledBack, phase: 'recreating' }, false, none)).toBeNull();
    expect(restoreKindOf(null, false, none)).toBeNull();
  });
  it('collects a move the server restored by itself, whatever its phase, once', () => {
    const onServer = { ...rolledBack, phase: 'done' as const, recoverable: false, restored_on_server: true };
    expect(restoreKindOf(onServer, false, none)).toBe('restore');
    expect(restoreKindOf({ ...onServer, phase: 'failed' }, false, none)).toBe('restore');
    expect(restoreKindOf(onServer, false, new Set(['m7']))).toBeNull();
    expect(restoreKindOf({ ...onServer, restored_on_server: false }, false, none)).toBeNull();
  });
  it('collects a restore another tab collected first when this page watched the move', () => {
    const collected = {
      ...rolledBack,
      phase: 'done' as const,
      recoverable: false,
      restored_on_server: false,
      restore_report: { ok: true }
    };
    const watched = new Set(['m7']);
    expect(restoreKindOf(collected, false, none, watched)).toBe('restore');
    expect(restoreKindOf({ ...collected, phase: 'failed' }, false, none, watched)).toBe('restore');
    // A page that did not watch it (opened after the move), or handled it already.
    expect(restoreKindOf(collected, false, none, none)).toBeNull();
    expect(restoreKindOf(collected, false, watched, watched)).toBeNull();
    expect(restoreKindOf(collected, true, none, watched)).toBeNull();
    // No restore on a new pod (the Notebook already was as the move wanted it): the
    // kernel is still there.
    expect(restoreKindOf({ ...collected, restore_report: null }, false, none, watched)).toBeNull();
    expect(restoreKindOf({ ...collected, phase: 'recreating' }, false, none, watched)).toBeNull();
    // Recoverable stays a recovery (the state was not restored on this pod).
    expect(restoreKindOf({ ...rolledBack, restore_report: { ok: false } }, false, none, watched)).toBe(
      'recover'
    );
  });
});

describe('describeRecovery', () => {
  it('says the move was rolled back and why, what came back, and that the cell did not run', () => {
    const text = describeRecovery(trans, rolledBack, restored);
    expect(text.message).toBe(
      'Move to GPU rolled back: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu. ' +
        'Restored 3 variables on CPU. Held cell NOT run.'
    );
    expect(text.message.length).toBeLessThanOrEqual(NOTICE_MAX_CHARS);
    expect(text.type).toBe('warning');
    expect(text.canRetry).toBe(true);
    expect(text.details).toContain(`rolled back: ${SCHEDULER}`);
    expect(text.details).toContain('restored on this CPU pod');
    expect(text.details).toContain('Restored: big, frame, point');
    expect(text.details).toContain('was NOT run: it needs a GPU');
  });
  it('names what did not come back', () => {
    const text = describeRecovery(trans, rolledBack, {
      ...restored,
      restored: ['big'],
      not_restored: [{ name: 'handle', reason: 'an open file' }]
    });
    expect(text.message).toContain('Restored 1 variable on CPU, 1 not.');
    expect(text.details).toContain('Not restored: handle — an open file');
  });
  it('says when the restore itself failed', () => {
    const text = describeRecovery(trans, rolledBack, {
      ok: false,
      restored: [],
      not_restored: [],
      detail: 'the kishu database is busy'
    });
    expect(text.type).toBe('error');
    expect(text.message).toContain('Variables NOT restored on CPU.');
    expect(text.details).toContain('could not be restored: the kishu database is busy');
    expect(text.details).not.toContain('Nothing was restored');
  });
  it('keeps a long reason inside the notification, whole in the details', () => {
    const long = `${SCHEDULER} preemption: ${'x '.repeat(200)}`;
    const text = describeRecovery(trans, { ...rolledBack, error: long }, restored);
    expect(text.message.length).toBeLessThanOrEqual(NOTICE_MAX_CHARS);
    expect(text.message).toContain('Insufficient nvidia.com/gpu. Restored 3 variables');
    expect(text.details).toContain('preemption: x x');
    const word = describeRecovery(trans, { ...rolledBack, error: 'y'.repeat(300) }, restored);
    expect(word.message.length).toBeLessThanOrEqual(NOTICE_MAX_CHARS);
    expect(word.message).toContain('yyy…. Restored');
  });
  it('leaves the cell out when there was none, and words a failed move', () => {
    const text = describeRecovery(trans, 
      { ...rolledBack, phase: 'failed', pending_cell: null, error: null },
      restored
    );
    expect(text.message).toBe('Move to GPU failed: no reason given. Restored 3 variables on CPU.');
    expect(text.details).not.toContain('NOT run');
  });
});

describe('helpers', () => {
  it('shortens with an ellipsis, without a final full stop', () => {
    expect(shorten('abc.', 10)).toBe('abc');
    expect(shorten('abcdefghij', 5)).toBe('abcd…');
    expect(shorten('One two. Three four. Five six.', 22)).toBe('One two. Three four');
    expect(failureReason(trans, { ...rolledBack, error: '' })).toBe('the new pod did not start');
  });
  it('tries the same move again with the same held cell', () => {
    expect(retryRequest(rolledBack)).toEqual({
      target: 'gpu',
      reason: 'auto',
      pendingCell: { cell_id: 'cell-2', code: 'device = "cuda"' }
    });
    expect(retryRequest({ ...rolledBack, reason: 'idle', pending_cell: null })).toEqual({
      target: 'gpu',
      reason: 'manual',
      pendingCell: null
    });
  });
  it('knows when the pod was replaced', () => {
    expect(podWasReplaced(rolledBack)).toBe(true);
    expect(podWasReplaced({ ...rolledBack, recoverable: false })).toBe(true);
    expect(podWasReplaced({ id: 'a', phase: 'rolled_back', target: 'gpu', history: [{ phase: 'patching' }] })).toBe(
      false
    );
    const progress = describeMigration(trans, { ...rolledBack, recoverable: false });
    expect(progress.message).toBe(
      'The move to a GPU pod was rolled back: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu. Back on a CPU pod.'
    );
    const long = describeMigration(trans, { ...rolledBack, error: `${SCHEDULER} preemption: ${'z '.repeat(80)}` });
    expect(long.message.length).toBeLessThanOrEqual(NOTICE_MAX_CHARS);
    expect(long.message).toContain('Insufficient nvidia.com/gpu. Back on a CPU pod.');
    expect(describeMigration(trans, { ...rolledBack, history: [], recoverable: false }).message).toContain(
      'You are back where you were'
    );
  });
});
