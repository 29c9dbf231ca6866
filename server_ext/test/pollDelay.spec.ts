import { POLL_MS, pollDelay } from '../src/pollDelay';

const calm = { migrating: false, serverDown: false, idleWarning: false, onGpu: false };

describe('pollDelay', () => {
  it('asks four times a second for the new pod while a move replaces the old one', () => {
    expect(pollDelay({ ...calm, migrating: true, serverDown: true })).toBe(250);
    expect(pollDelay({ ...calm, migrating: true, serverDown: true, onGpu: true })).toBe(
      POLL_MS.arriving
    );
  });
  it('asks once a second while something the user watches changes', () => {
    expect(pollDelay({ ...calm, migrating: true })).toBe(1000); // the move's phases
    expect(pollDelay({ ...calm, serverDown: true })).toBe(1000); // a pod gone, no move
    expect(pollDelay({ ...calm, idleWarning: true, onGpu: true })).toBe(1000);
  });
  it('asks rarely when nothing changes, less rarely on a GPU pod (its idle timer)', () => {
    expect(pollDelay(calm)).toBe(5000);
    expect(pollDelay({ ...calm, onGpu: true })).toBe(2000);
  });
});
