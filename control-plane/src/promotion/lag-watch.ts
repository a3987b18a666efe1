import { TenantryError } from '../domain/errors.js';

/**
 * The lag limit: a promotion's slot retains WAL for every tenant of the cluster, so a step that
 * lets it grow past the limit is cancelled and the promotion aborted.
 */

export function lagExceeded(slot: string, bytes: number, max: number): TenantryError {
  return new TenantryError(
    'PROVIDER_FAILED',
    `replication lag: slot ${slot} retains ${bytes} bytes of WAL, past the ${max}-byte limit; promotion aborted so the shared database's WAL is not held hostage`,
    { context: { retainedWalBytes: bytes, maxLagBytes: max } },
  );
}

/**
 * Watches the WAL a slot retains while a long step runs (copy, index builds, catch-up, the full
 * verification): past the limit it records the breach, runs `onBreach` (which cancels the step's
 * statements), and `check()` then throws.
 */
export class LagWatch {
  private timer: NodeJS.Timeout | undefined;
  private breach: TenantryError | null = null;
  /** The measurement in flight, if any. */
  private inflight: Promise<void> | null = null;

  constructor(
    private readonly slot: string,
    private readonly max: number,
    private readonly probe: () => Promise<number | null>,
    private readonly onSample: (bytes: number | null) => Promise<void>,
    private readonly onBreach: () => Promise<void>,
  ) {}

  start(intervalMs: number): this {
    // A breach is raised by check() in the step itself; the timer only records it, and skips a
    // tick while a measurement is still in flight.
    this.timer = setInterval(() => {
      if (!this.inflight) void this.measure().catch(() => undefined);
    }, intervalMs);
    this.timer.unref();
    return this;
  }

  /**
   * One measurement taken after this call started; throws if the limit is passed. A measurement
   * already in flight may have read the slot before the caller's last write, so it is waited for
   * and a fresh one taken: the step's closing check never reuses a stale reading.
   */
  async sample(): Promise<void> {
    while (this.inflight) await this.inflight.catch(() => undefined);
    await this.measure();
    this.check();
  }

  private measure(): Promise<void> {
    if (this.breach) return Promise.resolve();
    const run = (async () => {
      const bytes = await this.probe().catch(() => null);
      await this.onSample(bytes).catch(() => undefined);
      if (bytes !== null && bytes > this.max) {
        this.breach = lagExceeded(this.slot, bytes, this.max);
        await this.onBreach().catch(() => undefined);
      }
    })().finally(() => {
      if (this.inflight === run) this.inflight = null;
    });
    this.inflight = run;
    return run;
  }

  check(): void {
    if (this.breach) throw this.breach;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
