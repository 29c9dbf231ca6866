import { trans } from './trans';
import {
  moveLossText,
  notSavedNames,
  unsavedNames,
  unsavedText,
  willStopNames,
  willStopText
} from '../src/willStop';

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

describe('the variables a move would leave behind', () => {
  const pod = {
    notebooks: ['work/train.ipynb', 'eval.ipynb'],
    will_stop: [{ kind: 'terminal' as const, name: '1', why: 'terminals end with the pod' }],
    unsaved: [
      { notebook: 'eval.ipynb', name: 'gen', why: 'not saved: a builtins.generator cannot be pickled' },
      { notebook: 'work/train.ipynb', name: 'log', why: "open file 'train.log' is not reopened" }
    ],
    unchecked: []
  };
  it('are named with their notebook, in the confirmation after what stops', () => {
    expect(unsavedNames(trans, pod)).toBe('gen (eval.ipynb), log (train.ipynb)');
    expect(moveLossText(trans, pod)).toBe(
      'These stop with the pod and are not saved: terminal 1. ' +
        'These variables cannot be saved and will not come back: gen (eval.ipynb), log (train.ipynb).'
    );
  });
  it('join what stops in the idle countdown', () => {
    expect(notSavedNames(trans, pod)).toBe('terminal 1, gen (eval.ipynb), log (train.ipynb)');
  });
  it('say which notebooks could not be looked at, and why', () => {
    const busy = {
      notebooks: ['a.ipynb'],
      will_stop: [],
      unsaved: [],
      unchecked: [{ notebook: 'work/a.ipynb', why: 'a cell is running' }]
    };
    expect(unsavedText(trans, busy)).toBe(
      'Not checked for variables that cannot be saved: a.ipynb (a cell is running).'
    );
    // Not a reason to ask before a Move command: nothing is known to be lost.
    expect(moveLossText(trans, busy)).toBeNull();
  });
  it('ask nothing when every variable comes back (or the server did not say)', () => {
    const clean = { notebooks: ['a.ipynb'], will_stop: [], unsaved: [], unchecked: [] };
    expect(unsavedText(trans, clean)).toBeNull();
    expect(moveLossText(trans, clean)).toBeNull();
    expect(notSavedNames(trans, clean)).toBeNull();
    expect(moveLossText(trans, { notebooks: [], will_stop: [] })).toBeNull();
    expect(unsavedText(trans, null)).toBeNull();
  });
});
