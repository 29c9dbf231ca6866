import { SerialGate } from '../src/serialGate';

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

describe('SerialGate', () => {
  it('starts steps of one key in call order even when earlier ones are slower', async () => {
    const gate = new SerialGate();
    const order: string[] = [];
    const step = (name: string, ms: number) => async () => {
      order.push(`start ${name}`);
      await sleep(ms);
      order.push(`end ${name}`);
      return name;
    };
    const results = await Promise.all([
      gate.run('nb', step('a', 30)),
      gate.run('nb', step('b', 1)),
      gate.run('nb', step('c', 10))
    ]);
    expect(results).toEqual(['a', 'b', 'c']);
    expect(order).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
    await sleep(0);
    expect(gate.busyKeys).toEqual([]);
  });

  it('keeps going after a failed step and passes the failure on', async () => {
    const gate = new SerialGate();
    const failed = gate.run('nb', async () => {
      throw new Error('classifier down');
    });
    const next = gate.run('nb', async () => 'ran');
    await expect(failed).rejects.toThrow('classifier down');
    await expect(next).resolves.toBe('ran');
  });

  it('does not make other notebooks wait', async () => {
    const gate = new SerialGate();
    const order: string[] = [];
    const slow = gate.run('one', async () => {
      await sleep(30);
      order.push('one');
    });
    const fast = gate.run('two', async () => {
      order.push('two');
    });
    await Promise.all([slow, fast]);
    expect(order).toEqual(['two', 'one']);
  });
});
