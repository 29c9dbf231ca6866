import { trans } from './trans';
import { canPickProfile } from '../src/decision';
import {
  IProfileChoice,
  IProfilesAnswer,
  preselected,
  profileDetail,
  profileRows,
  readProfiles
} from '../src/profiles';

const a100: IProfileChoice = {
  name: 'a100',
  resource: 'nvidia.com/gpu',
  count: 1,
  gpuType: 'NVIDIA-A100-SXM4-40GB',
  free: 5,
  largestFree: 4,
  nodes: 2,
  quotaLeft: 3,
  current: false,
  available: true,
  why: null
};
const t4Full: IProfileChoice = {
  ...a100,
  name: 't4',
  gpuType: 'Tesla-T4',
  free: 0,
  largestFree: 0,
  nodes: 1,
  quotaLeft: null,
  available: false,
  why: 'No node has 1 nvidia.com/gpu free now.'
};
const answer: IProfilesAnswer = {
  default: 't4',
  current: null,
  capacityAt: '2026-12-04T21:00:00Z',
  capacityNote: null,
  profiles: [a100, t4Full]
};

describe('profileRows', () => {
  it('labels each profile with its GPU and says what is free and what the quota allows', () => {
    const rows = profileRows(trans, answer);
    expect(rows.map(row => row.name)).toEqual(['a100', 't4']);
    expect(rows[0]).toEqual({
      name: 'a100',
      label: 'a100: NVIDIA-A100-SXM4-40GB ×1',
      detail: '5 free on 2 nodes (at most 4 on one) · quota: 3 more',
      enabled: true,
      isDefault: false
    });
    expect(rows[1].label).toBe('t4: NVIDIA Tesla-T4 ×1 (default)');
    expect(rows[1].enabled).toBe(false);
    expect(rows[1].detail).toBe('0 free on 1 node. No node has 1 nvidia.com/gpu free now.');
  });

  it('does not offer the profile the pod runs on', () => {
    const rows = profileRows(trans, { ...answer, current: 'a100', profiles: [{ ...a100, current: true }] });
    expect(rows[0].enabled).toBe(false);
    expect(rows[0].detail).toBe('This notebook runs on it now.');
  });
});

describe('profileDetail', () => {
  it('says when the free GPUs are not known, and when no node can take the profile', () => {
    const unknown = { ...a100, free: null, largestFree: null, nodes: null, quotaLeft: null };
    expect(profileDetail(trans, unknown)).toBe('free GPUs not known');
    expect(profileDetail(trans, { ...a100, free: 0, largestFree: 0, nodes: 0 })).toBe(
      'no node can take it · quota: 3 more'
    );
    expect(profileDetail(trans, { ...a100, free: 4, largestFree: 4, nodes: 1 })).toBe(
      '4 free on 1 node · quota: 3 more'
    );
  });
});

describe('preselected', () => {
  it('takes the default when it can be chosen, else the first that can, else none', () => {
    const rows = profileRows(trans, answer);
    expect(preselected(rows)).toBe('a100');
    expect(preselected(profileRows(trans, { ...answer, default: 'a100' }))).toBe('a100');
    expect(preselected(profileRows(trans, { ...answer, profiles: [t4Full] }))).toBeNull();
    const both = profileRows(trans, { ...answer, profiles: [a100, { ...t4Full, available: true }] });
    expect(preselected(both)).toBe('t4');
  });
});

describe('readProfiles', () => {
  it('reads the server answer and drops what it cannot read', () => {
    const read = readProfiles({
      default: 'a100',
      current: null,
      capacityAt: null,
      capacityNote: 'the free GPUs are not published',
      profiles: [{ name: 'a100', count: 2, free: null, available: true }, { count: 1 }, 'x']
    });
    expect(read).toEqual({
      default: 'a100',
      current: null,
      capacityAt: null,
      capacityNote: 'the free GPUs are not published',
      profiles: [
        {
          name: 'a100',
          resource: 'nvidia.com/gpu',
          count: 2,
          gpuType: null,
          free: null,
          largestFree: null,
          nodes: null,
          quotaLeft: null,
          current: false,
          available: true,
          why: null
        }
      ]
    });
  });

  it('is null for what is not an answer', () => {
    expect(readProfiles(null)).toBeNull();
    expect(readProfiles({ profiles: 'a100' })).toBeNull();
    expect(readProfiles('profiles')).toBeNull();
  });
});

describe('canPickProfile', () => {
  const gpu = { kind: 'gpu' as const, resource: 'nvidia.com/gpu', count: 1, name: null };
  it('opens on a CPU pod with a profile, on a GPU pod with another profile, never during a move', () => {
    expect(canPickProfile({ kind: 'cpu' }, false, ['a100'])).toBe(true);
    expect(canPickProfile({ kind: 'cpu' }, false, [])).toBe(false);
    expect(canPickProfile(gpu, false, ['a100'])).toBe(false);
    expect(canPickProfile(gpu, false, ['a100', 't4'])).toBe(true);
    expect(canPickProfile({ kind: 'cpu' }, true, ['a100'])).toBe(false);
    expect(canPickProfile({ kind: 'off', reason: 'x' }, false, ['a100'])).toBe(false);
  });
});
