import { trans } from './trans';
import { willStopNames, willStopText } from '../src/willStop';

describe('willStopText', () => {
  it('is null when the move saves everything (or the server did not say)', () => {
    expect(willStopText(trans, { notebooks: ['a.ipynb'], will_stop: [] })).toBeNull();
    expect(willStopText(trans, null)).toBeNull();
    expect(willStopNames(trans, null)).toBeNull();
  });
  it('names every console, terminal, kernel and unsaveable notebook', () => {
    const text = willStopText(trans, {
      notebooks: ['a.ipynb'],
      will_stop: [
        { kind: 'console', name: 'console-1', why: 'it has no notebook to save it with' },
        { kind: 'terminal', name: '1', why: 'terminals end with the pod' },
        { kind: 'kernel', name: 'k-9', why: 'it has no notebook to save it with' },
        { kind: 'notebook', name: 'r.ipynb', why: 'its kernel is not Python' }
      ]
    });
    expect(text).toBe(
      'These stop with the pod and are not saved: console console-1, terminal 1, kernel k-9, ' +
        'notebook r.ipynb (its kernel is not Python).'
    );
  });
});
