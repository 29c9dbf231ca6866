import { trans } from './trans';
import {
  asSeenByThePage,
  describeMigration,
  isTerminal,
  phaseMessage,
  serverGoneMessage,
  STEP_COUNT,
  stepNumber,
  stepOf
} from '../src/phases';
import { describeRestore } from '../src/restoreText';
import { IMigration, MigrationPhase } from '../src/types';

const ALL: MigrationPhase[] = [
  'requested',
  'checkpointing',
  'checkpointed',
  'patching',
  'recreating',
  'restoring',
  'done',
  'rolled_back',
  'failed',
  'cancelled'
];

function migration(phase: MigrationPhase, error: string | null = null): IMigration {
  return { id: 'm1', phase, target: 'gpu', error };
}

describe('phases', () => {
  it('has a sentence for every phase, short enough for a notification', () => {
    for (const phase of ALL) {
      const { message } = describeMigration(trans, migration(phase, 'no GPU node is free'));
      expect(message.length).toBeGreaterThan(10);
      expect(message.length).toBeLessThanOrEqual(140); // Notification truncates longer text
    }
  });
  it('says what happens in the user\'s words', () => {
    expect(phaseMessage(trans, 'checkpointing', 'gpu')).toContain('saving your variables');
    expect(phaseMessage(trans, 'recreating', 'gpu')).toContain('starting the new pod');
    expect(phaseMessage(trans, 'restoring', 'cpu')).toContain('restoring your variables');
    expect(phaseMessage(trans, 'done', 'cpu')).toBe('Now on a CPU pod.');
  });
  it('shows the reason of a failure or rollback', () => {
    expect(describeMigration(trans, migration('failed', 'no Kubernetes API'))).toEqual({
      message: 'The move to a GPU pod failed: no Kubernetes API.',
      type: 'error'
    });
    expect(describeMigration(trans, migration('rolled_back', 'no GPU free')).type).toBe('warning');
    expect(describeMigration(trans, migration('rolled_back', 'no GPU free')).message).toContain('no GPU free');
  });
  it('says a move on a stopped notebook was cancelled, and that it is over', () => {
    const stopped = 'the notebook was stopped (kubeflow-resource-stopped) during the move';
    expect(describeMigration(trans, migration('cancelled', stopped))).toEqual({
      message: `The move to a GPU pod was cancelled: ${stopped}.`,
      type: 'info'
    });
    expect(isTerminal('cancelled')).toBe(true);
  });
  it('numbers the steps and knows the terminal phases', () => {
    expect(stepOf('checkpointing')).toBe('(1/3)');
    expect(stepOf('restoring')).toBe('(3/3)');
    expect(stepOf('done')).toBe('');
    expect(describeMigration(trans, migration('patching')).message).toMatch(/\(2\/3\)$/);
    expect(ALL.filter(isTerminal)).toEqual(['done', 'rolled_back', 'failed', 'cancelled']);
    expect(isTerminal(undefined)).toBe(false);
  });
  it('counts every step of a move, 1/N to N/N, whatever the page sees in between', () => {
    // The phases in order as a page may see them, the server away while the pod is
    // replaced: the numbers never skip and never go back, and the last is N/N.
    const seen: [MigrationPhase, boolean][] = [
      ['requested', false],
      ['checkpointing', false],
      ['checkpointed', false],
      ['checkpointed', true],
      ['patching', false],
      ['recreating', false],
      ['recreating', true],
      ['restoring', false]
    ];
    const numbers = seen.map(([phase, down]) => stepNumber(phase, down));
    for (let i = 1; i < numbers.length; i++) {
      expect(numbers[i] - numbers[i - 1]).toBeGreaterThanOrEqual(0);
      expect(numbers[i] - numbers[i - 1]).toBeLessThanOrEqual(1);
    }
    expect(numbers[0]).toBe(1);
    expect(numbers[numbers.length - 1]).toBe(STEP_COUNT);
    expect(serverGoneMessage(trans, 'gpu', 3)).toMatch(/\(2\/3\)$/);
  });
  it('tells the user to keep the page open while the server restarts', () => {
    expect(serverGoneMessage(trans, 'gpu', 12.4)).toContain('(12 s)');
  });
});

describe('describeRestore', () => {
  it('lists what came back', () => {
    const text = describeRestore(trans, { ok: true, restored: ['a', 'b'], not_restored: [] });
    expect(text.type).toBe('success');
    expect(text.message).toBe('Moved. Restored 2 variables: a, b.');
  });
  it('warns with the names and reasons of what did not', () => {
    const text = describeRestore(trans, {
      ok: true,
      restored: ['a', 'b', 'c', 'd', 'e', 'f'],
      not_restored: [{ name: 'conn', reason: 'a socket cannot be saved' }]
    });
    expect(text.type).toBe('warning');
    expect(text.message).toContain('conn');
    expect(text.details).toContain('Not restored: conn — a socket cannot be saved');
    expect(text.details).toContain('Restored: a, b, c, d, e, f');
  });
  it('says when the restore failed', () => {
    const text = describeRestore(trans, { ok: false, restored: [], not_restored: [], detail: 'checkout failed' });
    expect(text.type).toBe('error');
    expect(text.message).toContain('checkout failed');
  });
});

describe('reasons inside sentences', () => {
  it('do not end in two full stops', () => {
    expect(phaseMessage(trans, 'failed', 'gpu', 'No configuration found.')).toBe(
      'The move to a GPU pod failed: No configuration found.'
    );
  });
});

describe('asSeenByThePage', () => {
  const done: IMigration = { id: 'm1', phase: 'done', target: 'gpu' };
  it('shows a move restored on the server as restoring until this page has collected it', () => {
    expect(asSeenByThePage({ ...done, restored_on_server: true })?.phase).toBe('restoring');
    expect(asSeenByThePage({ ...done, phase: 'failed', restored_on_server: true })?.phase).toBe('restoring');
  });
  it('leaves every other record as it is', () => {
    expect(asSeenByThePage(done)).toBe(done);
    expect(asSeenByThePage({ ...done, restored_on_server: false })?.phase).toBe('done');
    const restoring: IMigration = { ...done, phase: 'restoring', restored_on_server: true };
    expect(asSeenByThePage(restoring)).toBe(restoring);
    expect(asSeenByThePage(null)).toBeNull();
  });
});
