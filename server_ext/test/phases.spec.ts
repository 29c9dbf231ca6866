import { describeMigration, isTerminal, phaseMessage, serverGoneMessage, stepOf } from '../src/phases';
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
      const { message } = describeMigration(migration(phase, 'no GPU node is free'));
      expect(message.length).toBeGreaterThan(10);
      expect(message.length).toBeLessThanOrEqual(140); // Notification truncates longer text
    }
  });
  it('says what happens in the user\'s words', () => {
    expect(phaseMessage('checkpointing', 'gpu')).toContain('saving your variables');
    expect(phaseMessage('recreating', 'gpu')).toContain('waiting for a GPU pod to start');
    expect(phaseMessage('restoring', 'cpu')).toContain('restoring your variables');
    expect(phaseMessage('done', 'cpu')).toBe('Now on a CPU pod.');
  });
  it('shows the reason of a failure or rollback', () => {
    expect(describeMigration(migration('failed', 'no Kubernetes API'))).toEqual({
      message: 'The move to a GPU pod failed: no Kubernetes API.',
      type: 'error'
    });
    expect(describeMigration(migration('rolled_back', 'no GPU free')).type).toBe('warning');
    expect(describeMigration(migration('rolled_back', 'no GPU free')).message).toContain('no GPU free');
  });
  it('says a move on a stopped notebook was cancelled, and that it is over', () => {
    const stopped = 'the notebook was stopped (kubeflow-resource-stopped) during the move';
    expect(describeMigration(migration('cancelled', stopped))).toEqual({
      message: `The move to a GPU pod was cancelled: ${stopped}.`,
      type: 'info'
    });
    expect(isTerminal('cancelled')).toBe(true);
  });
  it('numbers the steps and knows the terminal phases', () => {
    expect(stepOf('checkpointing')).toBe('(1/5)');
    expect(stepOf('restoring')).toBe('(4/5)');
    expect(describeMigration(migration('patching')).message).toMatch(/\(2\/5\)$/);
    expect(ALL.filter(isTerminal)).toEqual(['done', 'rolled_back', 'failed', 'cancelled']);
    expect(isTerminal(undefined)).toBe(false);
  });
  it('tells the user to keep the page open while the server restarts', () => {
    expect(serverGoneMessage('gpu', 12.4)).toContain('(12 s)');
  });
});

describe('describeRestore', () => {
  it('lists what came back', () => {
    const text = describeRestore({ ok: true, restored: ['a', 'b'], not_restored: [] });
    expect(text.type).toBe('success');
    expect(text.message).toBe('Moved. Restored 2 variable(s): a, b.');
  });
  it('warns with the names and reasons of what did not', () => {
    const text = describeRestore({
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
    const text = describeRestore({ ok: false, restored: [], not_restored: [], detail: 'checkout failed' });
    expect(text.type).toBe('error');
    expect(text.message).toContain('checkout failed');
  });
});

describe('reasons inside sentences', () => {
  it('do not end in two full stops', () => {
    expect(phaseMessage('failed', 'gpu', 'No configuration found.')).toBe(
      'The move to a GPU pod failed: No configuration found.'
    );
  });
});
