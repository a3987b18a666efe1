import type { OperationStep } from '../domain/tenant.js';

/** Writes one record: the steps as they are, and the outputs not yet on the tenant. */
export type WriteRecord = (steps: OperationStep[], outputs: Record<string, unknown>) => Promise<void>;

/**
 * An operation's step records, written behind its steps and at most one per `everyMs` while it runs.
 *
 * A record (the steps' statuses, and the outputs of the steps that succeeded since the last one) is
 * sent when a step starts or ends, unless one went out less than `everyMs` ago: then it waits for the
 * interval (a timer), or for the operation's end, which writes what is left in its own statement. So
 * an operation shorter than the interval writes no step record at all (its claim and its end say
 * everything), and a long one shows each step's start and end within the interval.
 *
 * At most one record is in flight, in order. A crash loses at most the records not written yet: their
 * steps run again, as a crash just before a step's record always made them (every step is
 * idempotent). A record that fails puts its steps and outputs back, to go with the next one, and the
 * failure is handed to whoever settles next (the step that ends, or the run's end).
 */
export class StepRecords {
  private inFlight: Promise<void> = Promise.resolve();
  private lastSent: number;
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;
  /** Outputs of steps that succeeded, not yet on the tenant. */
  private outputs: Record<string, unknown> = {};
  /** Steps that succeeded whose record has not landed. */
  private unlanded: OperationStep[] = [];
  private failure: unknown;

  constructor(
    private readonly steps: OperationStep[],
    private readonly write: WriteRecord,
    private readonly everyMs: number,
  ) {
    // The operation's claim, just written, marked it running.
    this.lastSent = Date.now();
  }

  /** A step started, or `done` succeeded with `outputs`: recorded now, or within the interval. */
  note(done?: OperationStep, outputs?: Record<string, unknown>): void {
    if (done) this.unlanded.push(done);
    if (outputs) Object.assign(this.outputs, outputs);
    this.dirty = true;
    const wait = this.lastSent + this.everyMs - Date.now();
    if (wait <= 0) {
      this.send();
      return;
    }
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.send();
      }, wait);
      this.timer.unref();
    }
  }

  private send(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (!this.dirty) return;
    this.dirty = false;
    this.lastSent = Date.now();
    const snapshot = structuredClone(this.steps);
    const outputs = this.outputs;
    const batch = this.unlanded;
    this.outputs = {};
    this.unlanded = [];
    this.inFlight = this.inFlight.then(() =>
      this.write(snapshot, outputs).then(
        () => undefined,
        (e: unknown) => {
          // Not landed: what it carried goes with the next record (or the end), newer outputs first.
          this.failure ??= e ?? new Error('a step record failed');
          this.outputs = { ...outputs, ...this.outputs };
          this.unlanded = [...batch, ...this.unlanded];
          this.dirty = true;
        },
      ),
    );
  }

  /** The record in flight, landed; the failure of any record since the last settle, if one failed. */
  async settle(): Promise<unknown> {
    await this.inFlight;
    const failed = this.failure;
    this.failure = undefined;
    return failed;
  }

  /** Sends what waits now, and settles it (a run handed back or failed writes its steps right after). */
  async flush(): Promise<unknown> {
    this.send();
    return this.settle();
  }

  /**
   * For a run that ends: nothing is sent any more; the record in flight settles. Returns its failure,
   * if any, and the outputs the end must write with itself (those of steps whose record never went).
   */
  async close(): Promise<{ failed: unknown; outputs: Record<string, unknown> }> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const failed = await this.settle();
    this.dirty = false;
    return { failed, outputs: this.outputs };
  }

  /**
   * After a record failed: the steps it said succeeded are pending again, so the run that resumes runs
   * them (their outputs never reached the tenant).
   */
  revertUnlanded(): void {
    for (const s of this.unlanded) {
      s.status = 'pending';
      s.finishedAt = null;
    }
    this.unlanded = [];
    this.outputs = {};
  }

  /** Stops the timer (a run that ends on any path). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
