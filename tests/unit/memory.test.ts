import { afterEach, describe, expect, it } from 'vitest';
import { collectAfterBatch } from '../../control-plane/src/lib/memory.js';

const g = globalThis as { gc?: unknown };
const original = g.gc;
afterEach(() => {
  g.gc = original;
});

describe('collectAfterBatch', () => {
  it('asks an exposed gc for an asynchronous major collection', () => {
    const calls: unknown[] = [];
    g.gc = (options: unknown) => {
      calls.push(options);
      return Promise.resolve();
    };
    collectAfterBatch();
    expect(calls).toEqual([{ type: 'major', execution: 'async' }]);
  });

  it('does nothing without an exposed gc, and never throws from one that refuses the options', () => {
    g.gc = undefined;
    expect(() => collectAfterBatch()).not.toThrow();
    g.gc = () => {
      throw new TypeError('options not supported');
    };
    expect(() => collectAfterBatch()).not.toThrow();
    g.gc = () => Promise.reject(new Error('late failure'));
    expect(() => collectAfterBatch()).not.toThrow();
  });
});
