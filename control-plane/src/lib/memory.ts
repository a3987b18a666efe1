/**
 * A drift sweep builds the whole fleet's observed state (tens of MB at 10,000 tenants) and drops
 * it when it ends. V8 collects the old generation only when it nears its limit (or, after some
 * seconds of low allocation, through its memory reducer), so sweeps run close together left each
 * one's dead state resident and peaks climbed to 300+ MB instead of about 210. When the process runs
 * with `--expose-gc` (npm start does), this asks for a major collection on a later task. That
 * collection is a full one on the main thread, once per sweep: it pauses the event loop for 20-35 ms
 * when a 10,000-tenant sweep's state has just been dropped (measured; the pause grows with what stays
 * live, about 0.1 s at 57 MB), less than the sweep's own synchronous diff. Without the flag it does
 * nothing, and V8's own heuristics decide.
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
