import { PREVIEW_DELAY_MS, PreviewScheduler } from '../src/previewScheduler';

describe('PreviewScheduler', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('sends the item once the pause is over, read when it ends', () => {
    const sent: string[] = [];
    const scheduler = new PreviewScheduler<string>(item => sent.push(item));
    let text = 'x = 1';
    scheduler.changed(() => text);
    text = 'x = 1.cuda()'; // typed before the pause ended: the newest text goes
    jest.advanceTimersByTime(PREVIEW_DELAY_MS - 1);
    expect(sent).toEqual([]);
    expect(scheduler.pending).toBe(true);
    jest.advanceTimersByTime(1);
    expect(sent).toEqual(['x = 1.cuda()']);
    expect(scheduler.pending).toBe(false);
  });

  it('restarts the wait on every change, so typing sends nothing until it pauses', () => {
    const sent: string[] = [];
    const scheduler = new PreviewScheduler<string>(item => sent.push(item), 100);
    for (const text of ['i', 'im', 'imp', 'import cupy']) {
      scheduler.changed(() => text);
      jest.advanceTimersByTime(60);
    }
    expect(sent).toEqual([]);
    jest.advanceTimersByTime(40);
    expect(sent).toEqual(['import cupy']);
  });

  it('sends nothing for a null item or after cancel', () => {
    const sent: string[] = [];
    const scheduler = new PreviewScheduler<string>(item => sent.push(item), 100);
    scheduler.changed(() => null);
    jest.advanceTimersByTime(100);
    scheduler.changed(() => 'x');
    scheduler.cancel();
    jest.advanceTimersByTime(500);
    expect(sent).toEqual([]);
    expect(scheduler.pending).toBe(false);
  });
});
