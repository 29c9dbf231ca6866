import {
  backgroundBody,
  DEFAULT_BACKGROUND,
  MAX_INTERVAL_SECONDS,
  readBackgroundSetting
} from '../src/backgroundSetting';

describe('readBackgroundSetting', () => {
  it('reads the two settings', () => {
    expect(readBackgroundSetting({ backgroundCheckpoints: false, backgroundCheckpointSeconds: 600 })).toEqual({
      enabled: false,
      seconds: 600
    });
    expect(readBackgroundSetting({ backgroundCheckpoints: true, backgroundCheckpointSeconds: null })).toEqual({
      enabled: true,
      seconds: null
    });
  });
  it('takes the default for anything missing or unusable', () => {
    expect(readBackgroundSetting({})).toEqual(DEFAULT_BACKGROUND);
    expect(DEFAULT_BACKGROUND).toEqual({ enabled: true, seconds: null });
    expect(readBackgroundSetting({ backgroundCheckpoints: 'no', backgroundCheckpointSeconds: '60' })).toEqual(
      DEFAULT_BACKGROUND
    );
    for (const seconds of [0, -5, NaN, Infinity]) {
      expect(readBackgroundSetting({ backgroundCheckpointSeconds: seconds }).seconds).toBeNull();
    }
  });
  it('keeps the seconds within what the server takes', () => {
    expect(readBackgroundSetting({ backgroundCheckpointSeconds: 10 ** 9 }).seconds).toBe(MAX_INTERVAL_SECONDS);
  });
});

describe('backgroundBody', () => {
  it('off: 0, whatever the seconds', () => {
    expect(backgroundBody({ enabled: false, seconds: null })).toEqual({ interval_seconds: 0 });
    expect(backgroundBody({ enabled: false, seconds: 600 })).toEqual({ interval_seconds: 0 });
  });
  it('on: the seconds, or null for the admin\'s interval', () => {
    expect(backgroundBody({ enabled: true, seconds: 600 })).toEqual({ interval_seconds: 600 });
    expect(backgroundBody({ enabled: true, seconds: null })).toEqual({ interval_seconds: null });
  });
});
