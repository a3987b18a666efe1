/**
 * Asks V8 for a major collection on a later task, once a sweep's fleet state has been dropped, so
 * sweeps run close together do not stack their garbage (measurements: docs/benchmarks.md, drift).
 * Needs `--expose-gc` (npm start passes it); without it, a no-op.
 */
export function collectAfterBatch(): void {
  const gc = (globalThis as { gc?: (options?: { type: string; execution: string }) => unknown }).gc;
  if (typeof gc !== 'function') return;
  try {
    void Promise.resolve(gc({ type: 'major', execution: 'async' })).catch(() => undefined);
  } catch {
    // An engine without the options form: skip rather than block on a synchronous collection.
  }
}
