import { trans } from './trans';
import {
  afterClassify,
  answerAtFirstHit,
  beforeRun,
  canMove,
  DEFAULT_SETTINGS,
  formatReasons,
  ICellContext,
  readSettings
} from '../src/decision';

const cpu: ICellContext = {
  pod: { kind: 'cpu' },
  settings: DEFAULT_SETTINGS,
  migrating: false,
  quietNotebook: false,
  hasCode: true
};
const gpuPod = { kind: 'gpu' as const, resource: 'nvidia.com/gpu', count: 1, name: null };
const gpuCell = {
  needs_gpu: true,
  reasons: [{ line: 2, rule: 'torch-cuda', text: 'x.cuda()' }]
};

describe('beforeRun', () => {
  it('classifies code on a CPU pod', () => {
    expect(beforeRun(cpu)).toBe('classify');
  });
  it('runs empty cells and markdown at once', () => {
    expect(beforeRun({ ...cpu, hasCode: false })).toBe('run');
  });
  it('runs without asking when automatic moves are off', () => {
    expect(beforeRun({ ...cpu, settings: { ...DEFAULT_SETTINGS, autoMoves: false } })).toBe('run');
  });
  it('runs without asking in a notebook marked "don\'t ask again"', () => {
    expect(beforeRun({ ...cpu, quietNotebook: true })).toBe('run');
  });
  it('holds code while a migration is in flight', () => {
    expect(beforeRun({ ...cpu, migrating: true })).toBe('hold');
  });
  it('tracks GPU activity on a GPU pod without blocking', () => {
    expect(beforeRun({ ...cpu, pod: gpuPod })).toBe('track');
  });
  it('never blocks when the optimizer is off or the server is silent', () => {
    expect(beforeRun({ ...cpu, pod: { kind: 'off', reason: 'x' } })).toBe('run');
    expect(beforeRun({ ...cpu, pod: { kind: 'unknown', reason: 'x' } })).toBe('run');
  });
});

describe('afterClassify', () => {
  it('asks for a GPU cell by default', () => {
    expect(afterClassify(cpu, gpuCell)).toBe('ask');
  });
  it('moves at once when asking is off', () => {
    const ctx = { ...cpu, settings: { ...DEFAULT_SETTINGS, askBeforeMoving: false } };
    expect(afterClassify(ctx, gpuCell)).toBe('move');
  });
  it('runs a CPU cell, and runs when the classifier did not answer', () => {
    expect(afterClassify(cpu, { needs_gpu: false, reasons: [] })).toBe('run');
    expect(afterClassify(cpu, null)).toBe('run');
  });
});

describe('formatReasons', () => {
  it('sorts by line and names the rule', () => {
    expect(
      formatReasons(trans, [
        { line: 5, rule: 'torch.to_cuda', text: ' y.to("cuda") ' },
        { line: 1, rule: '', text: 'import cupy' }
      ])
    ).toEqual(['line 1: import cupy', 'line 5: y.to("cuda") — moves data to a GPU']);
  });
});

describe('readSettings', () => {
  it('keeps valid values and replaces wrong ones with the defaults', () => {
    expect(readSettings({ autoMoves: false, askBeforeMoving: 'no', idleTimeoutSeconds: 300 })).toEqual({
      autoMoves: false,
      askBeforeMoving: true,
      idleTimeoutSeconds: 300
    });
    expect(readSettings({ idleTimeoutSeconds: -4 }).idleTimeoutSeconds).toBeNull();
    expect(readSettings({ idleTimeoutSeconds: null })).toEqual(DEFAULT_SETTINGS);
  });
});

describe('canMove', () => {
  it('allows only the move away from the current kind, and none during a move', () => {
    expect(canMove({ kind: 'cpu' }, false)).toEqual({ toGpu: true, toCpu: false });
    expect(canMove(gpuPod, false)).toEqual({ toGpu: false, toCpu: true });
    expect(canMove(gpuPod, true)).toEqual({ toGpu: false, toCpu: false });
    expect(canMove({ kind: 'off', reason: 'not injected' }, false)).toEqual({
      toGpu: false,
      toCpu: false
    });
  });
});

describe('answerAtFirstHit', () => {
  const noAsking = { ...cpu, settings: { ...DEFAULT_SETTINGS, askBeforeMoving: false } };
  it('lets the classifier stop at the first GPU statement on a GPU pod', () => {
    const onGpu = { ...cpu, pod: gpuPod };
    expect(answerAtFirstHit(onGpu, beforeRun(onGpu))).toBe(true);
  });
  it('lets it stop when a GPU cell moves without asking', () => {
    expect(answerAtFirstHit(noAsking, beforeRun(noAsking))).toBe(true);
  });
  it('wants every reason when the run may ask (the dialog lists them)', () => {
    expect(answerAtFirstHit(cpu, beforeRun(cpu))).toBe(false);
  });
  it('asks nothing of a cell that is not classified', () => {
    expect(answerAtFirstHit(noAsking, 'run')).toBe(false);
    expect(answerAtFirstHit(noAsking, 'hold')).toBe(false);
  });
});
