/**
 * A drift sweep builds the whole fleet's observed state (tens of MB at 10,000 tenants) and drops
 * it when it ends. V8 collects the old generation only when it nears its limit, so without a hint
 * each sweep's dead state stays resident and the next sweeps stack on top of it (peaks of 300+ MB
 * instead of about 230). When the process runs with `--expose-gc` (npm start does), this asks for
 * a major collection that runs incrementally and concurrently, so request handling is not paused
 * for a full stop-the-world collection. Without the flag it does nothing.
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
