import { trans } from './trans';
import { formatCountdown, idleWarningMessage, secondsLeft } from '../src/countdown';

describe('secondsLeft', () => {
  const warning = { state: 'warning', warning_until: 1000, at: 970 };

  it('counts from the sidecar\'s clock, not the browser\'s', () => {
    // The browser's clock is far off (epoch 5e6 s); only time since the answer counts.
    const received = 5_000_000_000;
    expect(secondsLeft(warning, received, received)).toBe(30);
    expect(secondsLeft(warning, received, received + 12_500)).toBeCloseTo(17.5);
  });
  it('never goes below zero', () => {
    expect(secondsLeft(warning, 0, 60_000)).toBe(0);
  });
  it('is null when no warning shows', () => {
    expect(secondsLeft({ state: 'active', warning_until: null }, 0, 0)).toBeNull();
    expect(secondsLeft(null, 0, 0)).toBeNull();
    expect(secondsLeft({ state: 'warning' }, 0, 0)).toBeNull();
  });
  it('uses the receive time when the sidecar gave no clock', () => {
    expect(secondsLeft({ state: 'warning', warning_until: 100 }, 90_000, 95_000)).toBe(5);
  });
});

describe('formatCountdown', () => {
  it('rounds up, in minutes and seconds', () => {
    expect(formatCountdown(0)).toBe('0:00');
    expect(formatCountdown(0.2)).toBe('0:01');
    expect(formatCountdown(9)).toBe('0:09');
    expect(formatCountdown(150)).toBe('2:30');
    expect(formatCountdown(-3)).toBe('0:00');
  });
  it('fits the message in a notification', () => {
    expect(idleWarningMessage(trans, 25)).toContain('0:25');
    expect(idleWarningMessage(trans, 25).length).toBeLessThanOrEqual(140);
  });
});

describe('idleWarningMessage', () => {
  it('names what stops in a sentence short enough for a notification', () => {
    const text = idleWarningMessage(trans, 15, 'terminal 1');
    expect(text).toBe('The GPU has been idle: moving to a CPU pod in 0:15. Not saved: terminal 1.');
    expect(text.length).toBeLessThan(140);
  });
});
