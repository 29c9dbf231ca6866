import { trans } from './trans';
import {
  clampIdleTimeout,
  describeBounds,
  formatDuration,
  gpuLabel,
  podKindOf,
  podKindText,
  shortGpuName
} from '../src/podKind';

const bounds = { min_seconds: 60, max_seconds: 3600, timeout_seconds: 180, warning_seconds: 30 };

describe('podKindOf', () => {
  it('reads a GPU pod', () => {
    const pod = podKindOf(trans, {
      usingGPU: true,
      gpu: { resource: 'nvidia.com/gpu', count: 2, name: 'A100' },
      optimizer: { state: 'on', reason: null }
    });
    expect(pod).toEqual({ kind: 'gpu', resource: 'nvidia.com/gpu', count: 2, name: 'A100' });
    expect(podKindText(trans, pod)).toBe('GPU · A100 ×2');
  });
  it('reads a CPU pod', () => {
    const pod = podKindOf(trans, { usingGPU: false, gpu: null, optimizer: { state: 'on', reason: null } });
    expect(podKindText(trans, pod)).toBe('CPU');
  });
  it('says the optimizer is off, and why', () => {
    const pod = podKindOf(trans, { optimizer: { state: 'off', reason: 'runtime-config.json is missing' } });
    expect(pod).toEqual({ kind: 'off', reason: 'runtime-config.json is missing' });
    expect(podKindText(trans, pod)).toBe('GPU optimizer off');
    expect(podKindOf(trans, { usingGPU: true }).kind).toBe('off');
  });
  it('is unknown while the server does not answer', () => {
    expect(podKindOf(trans, null).kind).toBe('unknown');
  });
});

describe('shortGpuName', () => {
  it('keeps the model, short enough for the status bar', () => {
    expect(shortGpuName('nvidia.com/gpu', 'NVIDIA A100-SXM4-80GB')).toBe('A100');
    expect(shortGpuName('nvidia.com/gpu', 'NVIDIA H100 80GB HBM3')).toBe('H100');
    expect(shortGpuName('nvidia.com/gpu', 'Tesla T4')).toBe('T4');
    expect(shortGpuName('nvidia.com/gpu', 'NVIDIA GeForce RTX 4090')).toBe('RTX 4090');
    expect(shortGpuName('amd.com/gpu', 'AMD Instinct MI300X')).toBe('MI300X');
  });
  it('says the vendor when the name has no model', () => {
    expect(shortGpuName('nvidia.com/gpu', null)).toBe('NVIDIA');
    expect(shortGpuName('nvidia.com/gpu', 'NVIDIA fake GPU of the local runner (kwok-gpu-0)')).toBe(
      'NVIDIA'
    );
    expect(podKindText(trans, { kind: 'gpu', resource: 'nvidia.com/gpu', count: 1, name: null })).toBe(
      'GPU · NVIDIA ×1'
    );
  });
});

describe('labels', () => {
  it('names the vendor once', () => {
    expect(gpuLabel('nvidia.com/gpu', 1, null)).toBe('NVIDIA ×1');
    expect(gpuLabel('nvidia.com/gpu', 1, 'NVIDIA H100 80GB')).toBe('NVIDIA H100 80GB ×1');
    expect(gpuLabel('amd.com/gpu', 4, 'MI300X')).toBe('AMD MI300X ×4');
    expect(gpuLabel('example.com/tpu', 1, null)).toBe('example.com/tpu ×1');
  });
  it('formats durations', () => {
    expect(formatDuration(trans, 45)).toBe('45 s');
    expect(formatDuration(trans, 90)).toBe('90 s');
    expect(formatDuration(trans, 180)).toBe('3 min');
    expect(formatDuration(trans, 3600)).toBe('1 h');
    expect(formatDuration(trans, 5400)).toBe('1 h 30 min');
  });
  it('shows the admin bounds', () => {
    expect(describeBounds(trans, bounds)).toBe(
      'Idle timeout: your admin allows 1 min to 1 h (default 3 min); the warning shows for the last 30 s.'
    );
    expect(describeBounds(trans, null)).toContain('No idle timer');
  });
});

describe('clampIdleTimeout', () => {
  it('keeps a value within the bounds', () => {
    expect(clampIdleTimeout(trans, 300, bounds)).toEqual({ seconds: 300, note: null });
  });
  it('clamps and says so', () => {
    expect(clampIdleTimeout(trans, 10, bounds)).toEqual({
      seconds: 60,
      note: '10 s is below the minimum your admin set; using 1 min.'
    });
    expect(clampIdleTimeout(trans, 99999, bounds).seconds).toBe(3600);
  });
  it('null keeps the admin default', () => {
    expect(clampIdleTimeout(trans, null, bounds)).toEqual({ seconds: null, note: null });
  });
});
