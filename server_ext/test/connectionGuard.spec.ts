import { AFTER_MOVE_GRACE_MS, connectionLostAction } from '../src/connectionGuard';

const now = 1_000_000;

describe('connectionLostAction', () => {
  it('shows no dialog while a move is in flight (the service reports it as now)', () => {
    expect(connectionLostAction({ lastMoveAt: now, underHub: false, now })).toBe('skip');
    expect(connectionLostAction({ lastMoveAt: now, underHub: true, now })).toBe('skip');
  });
  it('shows none shortly after a move either (old connections still failing)', () => {
    const lastMoveAt = now - AFTER_MOVE_GRACE_MS + 1;
    expect(connectionLostAction({ lastMoveAt, underHub: false, now })).toBe('skip');
  });
  it("defers to JupyterLab's dialog when no move is or was recently in flight", () => {
    expect(connectionLostAction({ lastMoveAt: null, underHub: false, now })).toBe('default');
    const long = now - AFTER_MOVE_GRACE_MS - 1;
    expect(connectionLostAction({ lastMoveAt: long, underHub: false, now })).toBe('default');
  });
  it("defers to JupyterHub's dialog under JupyterHub", () => {
    expect(connectionLostAction({ lastMoveAt: null, underHub: true, now })).toBe('hub');
  });
});
