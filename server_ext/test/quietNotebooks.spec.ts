import { mergePaths, pathsOf } from '../src/quietNotebooks';

describe('"Don\'t ask again" paths', () => {
  it('reads only lists of strings (a broken stored value counts as none)', () => {
    expect(pathsOf(['a.ipynb', 3, null, 'b/c.ipynb'])).toEqual(['a.ipynb', 'b/c.ipynb']);
    expect(pathsOf('a.ipynb')).toEqual([]);
    expect(pathsOf(undefined)).toEqual([]);
  });
  it('merges the old browser list into the settings once, without duplicates, in order', () => {
    expect(mergePaths(['a.ipynb', 'b.ipynb'], ['b.ipynb', 'c.ipynb'])).toEqual([
      'a.ipynb',
      'b.ipynb',
      'c.ipynb'
    ]);
    expect(mergePaths([], [])).toEqual([]);
  });
});
