import { describe, expect, it } from 'vitest';
import { LagWatch } from '../../control-plane/src/promotion/lag-watch.js';

/** A probe whose answers are released one at a time by the test. */
function gatedProbe() {
  const waiting: Array<(bytes: number) => void> = [];
  let calls = 0;
  const probe = () =>
    new Promise<number | null>((resolve) => {
      calls++;
      waiting.push(resolve);
    });
  const answer = async (bytes: number) => {
    // Event-loop turns, not time: a probe that is never called fails the test instead of hanging it.
    for (let turn = 0; waiting.length === 0; turn++) {
      if (turn > 1000) throw new Error('the watch never took the expected reading');
      await new Promise((r) => setImmediate(r));
    }
    waiting.shift()!(bytes);
  };
  return { probe, answer, calls: () => calls };
}

const noop = async () => {};

describe('LagWatch', () => {
  it('a closing sample waits for a reading already in flight and takes a fresh one', async () => {
    const g = gatedProbe();
    const watch = new LagWatch('slot_x', 1, g.probe, noop, noop);
    // A reading starts (as a timer tick would) before the step writes its WAL...
    const early = watch.sample().catch((e: unknown) => e);
    // ...the step then writes, and closes with its own sample while the early one is in flight.
    const closing = watch.sample().then(
      () => null,
      (e: unknown) => e,
    );
    await g.answer(0); // the early reading: nothing retained yet
    await early;
    await g.answer(5000); // the fresh reading sees what the step wrote
    const err = await closing;
    expect(g.calls()).toBe(2);
    expect(String(err)).toMatch(/retains 5000 bytes of WAL, past the 1-byte limit/);
  });

  it('records a breach once, runs onBreach once, and every later check throws it', async () => {
    let breaches = 0;
    const watch = new LagWatch(
      'slot_y',
      10,
      async () => 11,
      noop,
      async () => {
        breaches++;
      },
    );
    await expect(watch.sample()).rejects.toThrow(/retains 11 bytes/);
    await expect(watch.sample()).rejects.toThrow(/retains 11 bytes/);
    expect(() => watch.check()).toThrow(/retains 11 bytes/);
    expect(breaches).toBe(1);
  });

  it('stays quiet under the limit and when the slot cannot be read', async () => {
    const answers = [10, null];
    const samples: Array<number | null> = [];
    const watch = new LagWatch(
      'slot_z',
      10,
      async () => answers.shift() ?? null,
      async (b) => {
        samples.push(b);
      },
      noop,
    );
    await watch.sample();
    await watch.sample();
    expect(samples).toEqual([10, null]);
    expect(() => watch.check()).not.toThrow();
  });
});
