import { describe, expect, it } from 'vitest';
import {
  awsErrorName,
  isThrottling,
  jitteredDelay,
  withRetry,
} from '../../../control-plane/src/aws/retry.js';
import { accountOperations, Semaphore } from '../../../control-plane/src/aws/semaphore.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('Semaphore', () => {
  it('admits at most its limit and serves waiters in arrival order', async () => {
    const sem = new Semaphore(2);
    const order: number[] = [];
    const gates = Array.from({ length: 4 }, deferred);
    const runs = gates.map((g, i) =>
      sem.run(async () => {
        order.push(i);
        await g.promise;
      }),
    );
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual([0, 1]);
    expect(sem.inUse).toBe(2);
    expect(sem.queued).toBe(2);
    gates[1]?.resolve();
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual([0, 1, 2]);
    for (const g of gates) g.resolve();
    await Promise.all(runs);
    expect(sem.inUse).toBe(0);
  });

  it('releases its slot when the work throws, and a double release is harmless', async () => {
    const sem = new Semaphore(1);
    await expect(sem.run(async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    const release = await sem.acquire();
    release();
    release();
    expect(sem.inUse).toBe(0);
  });

  it('limits account operations to 5', () => {
    expect(accountOperations.limit).toBe(5);
  });
});

describe('retry', () => {
  it('draws full-jitter delays below an exponential cap', () => {
    expect(jitteredDelay(0, 100, 1000, () => 0.999)).toBe(99);
    expect(jitteredDelay(3, 100, 1000, () => 0.999)).toBe(799);
    expect(jitteredDelay(10, 100, 1000, () => 0.999)).toBe(999);
    expect(jitteredDelay(5, 100, 1000, () => 0)).toBe(0);
  });

  it('does not retry a non-retryable error', async () => {
    let calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw new Error('terminal');
        },
        { isRetryable: () => false, sleep: async () => undefined },
      ),
    ).rejects.toThrow('terminal');
    expect(calls).toBe(1);
  });

  it('recognizes throttling by error name and by HTTP 429', () => {
    expect(isThrottling({ name: 'ThrottlingException' })).toBe(true);
    expect(isThrottling({ name: 'Weird', $metadata: { httpStatusCode: 429 } })).toBe(true);
    expect(isThrottling({ name: 'AccessDeniedException', $metadata: { httpStatusCode: 400 } })).toBe(false);
    expect(awsErrorName(new Error('plain'))).toBeUndefined();
  });
});
