import pg from 'pg';
import type { Queryable } from '../domain/queryable.js';
import { answerOf } from './text-rows.js';

/** Reads on the pipeline's connections at once; beyond it a read takes a connection of the pool. */
export const PIPELINE_MAX_IN_FLIGHT = 256;
/**
 * Each pipelined read is cut off after this: a read queued behind a slow one on the same connection
 * waits for it, so none may be slow for long (the reads sent here answer in about a millisecond).
 */
export const PIPELINE_STATEMENT_TIMEOUT_MS = 5000;
/** A connection is replaced after this long, as the pools' are (their maxLifetimeSeconds). */
export const PIPELINE_MAX_LIFETIME_MS = 900_000;

/**
 * After a connection broke, reads go to the fallback for this long before one is opened again: a
 * server that refuses connections is not asked again on every turn of the event loop.
 */
export const PIPELINE_REOPEN_AFTER_MS = 1000;

export interface ReadPipelineOptions {
  /** Default PIPELINE_REOPEN_AFTER_MS. */
  reopenAfterMs?: number;
  /** How long opening a connection may take before its reads fail (default 5000; Db passes its acquire timeout). */
  connectTimeoutMs?: number;
  /** Default PIPELINE_MAX_IN_FLIGHT. */
  maxInFlight?: number;
  /** Default PIPELINE_STATEMENT_TIMEOUT_MS. */
  statementTimeoutMs?: number;
  /** Default PIPELINE_MAX_LIFETIME_MS. */
  maxLifetimeMs?: number;
}

interface Slot {
  client: pg.Client;
  born: number;
  broken: boolean;
  /** Ended on purpose (its lifetime, close): its end is no break. */
  retired: boolean;
  /** Marks it broken: later turns do not write to it. */
  broke: () => void;
}

/**
 * An error after which the session is gone or going: its socket's, or the server's word that it ends
 * the session (57P01 to 57P03: terminated, crash, not accepting; class 08: connection exceptions). The
 * server says so before the socket closes, and a read written meanwhile would be lost with it.
 */
const endsSession = (e: unknown): boolean => {
  const code = (e as { code?: unknown } | null)?.code;
  return (
    typeof code !== 'string' ||
    !/^[0-9A-Z]{5}$/.test(code) ||
    code.startsWith('08') ||
    /^57P0[1-3]$/.test(code)
  );
};

/** The socket under a pg client (pg's Connection keeps it as `stream`; it has no public accessor). */
const socketOf = (c: pg.Client) =>
  (c as unknown as { connection: { stream: { cork(): void; uncork(): void } } }).connection.stream;

/**
 * Short reads of the API's hottest routes (a tenant, a page of the fleet), sent over a few
 * connections in pipeline mode and written to the server once per turn of the event loop.
 *
 * Through a pool, each read is one connection's round trip: one write to Postgres, one wake-up of
 * its backend, one write back, per read. Ten concurrent reads arrive in the same turn of the event
 * loop about as often as not; here they go out in one write (the socket is corked from the first
 * read of the turn to its check phase), one backend answers them one after another (each with its
 * own Sync, so each is its own statement and its own error), and the answers come back together.
 * Under ten concurrent reads on two cores it took about a quarter off the control plane's CPU per
 * tenant read and two fifths off Postgres's, and raised the API's rate by half (docs/benchmarks.md).
 *
 * What it may carry: single statements that only read, through indexes, in milliseconds. A read
 * queued behind another on a connection waits for it, so each is cut off after
 * PIPELINE_STATEMENT_TIMEOUT_MS, and filtered or otherwise unbounded reads stay on the pool. No
 * transaction: each read sees what was committed when it ran, as on a pooled connection.
 *
 * Failure: a connection that breaks fails the reads on it (as a pooled connection's would); for
 * PIPELINE_REOPEN_AFTER_MS reads then take the fallback, and the first after it opens another. One
 * that has lived PIPELINE_MAX_LIFETIME_MS is ended after its reads drain. Past PIPELINE_MAX_IN_FLIGHT reads in flight, and once closed, reads go to `fallback`
 * (the pool, with its acquire timeout), so overload still ends in a 503 rather than an unbounded queue.
 */
export class ReadPipeline {
  private readonly slots: (Slot | undefined)[];
  private next = 0;
  /** The connection this turn's reads are written to (its socket corked until the check phase). */
  private batch: Slot | undefined;
  private inFlight = 0;
  private closed = false;
  private readonly maxInFlight: number;
  private readonly statementTimeoutMs: number;
  private readonly maxLifetimeMs: number;
  private readonly reopenAfterMs: number;
  private readonly connectTimeoutMs: number;
  /** When a connection last broke. */
  private brokeAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly connectionString: string,
    size: number,
    private readonly fallback: Queryable,
    opts: ReadPipelineOptions = {},
  ) {
    if (!Number.isInteger(size) || size < 1)
      throw new Error(`a read pipeline needs at least one connection, not ${size}`);
    this.slots = new Array(size).fill(undefined);
    this.maxInFlight = opts.maxInFlight ?? PIPELINE_MAX_IN_FLIGHT;
    this.statementTimeoutMs = opts.statementTimeoutMs ?? PIPELINE_STATEMENT_TIMEOUT_MS;
    this.maxLifetimeMs = opts.maxLifetimeMs ?? PIPELINE_MAX_LIFETIME_MS;
    this.reopenAfterMs = opts.reopenAfterMs ?? PIPELINE_REOPEN_AFTER_MS;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
  }

  query: Queryable['query'] = (text, params) => {
    const slot = this.closed || this.inFlight >= this.maxInFlight ? undefined : this.slotOfThisTurn();
    if (!slot) return this.fallback.query(text, params);
    this.inFlight++;
    return answerOf(slot.client.query(text as never, params)).then(
      (r) => {
        this.inFlight--;
        return r;
      },
      (e: unknown) => {
        this.inFlight--;
        if (endsSession(e)) slot.broke();
        throw e;
      },
    ) as never;
  };

  /** Reads in flight on the pipeline's connections. */
  get pending(): number {
    return this.inFlight;
  }

  /** The connection of this turn's batch; none while connections are not to be reopened yet. */
  private slotOfThisTurn(): Slot | undefined {
    if (this.batch) return this.batch;
    const i = this.next % this.slots.length;
    let slot = this.slots[i];
    if (!slot || slot.broken || Date.now() - slot.born > this.maxLifetimeMs) {
      if (Date.now() - this.brokeAt < this.reopenAfterMs) return undefined;
      if (slot) this.retire(slot);
      slot = this.open();
      this.slots[i] = slot;
    }
    this.next++;
    const s = slot;
    this.batch = s;
    socketOf(s.client).cork();
    setImmediate(() => {
      if (this.batch === s) this.batch = undefined;
      socketOf(s.client).uncork();
    });
    return s;
  }

  private open(): Slot {
    const client = new pg.Client({
      connectionString: this.connectionString,
      pipeline: true,
      application_name: 'tenantry-read-pipeline',
      connectionTimeoutMillis: this.connectTimeoutMs,
      options: `-c statement_timeout=${this.statementTimeoutMs} -c default_transaction_read_only=on`,
    } as pg.ClientConfig);
    const slot: Slot = { client, born: Date.now(), broken: false, retired: false, broke: () => undefined };
    // pg fails every read on the connection with the error; a later turn opens another.
    const broke = () => {
      if (slot.broken || this.closed) return;
      slot.broken = true;
      this.brokeAt = Date.now();
      if (this.batch === slot) this.batch = undefined;
    };
    slot.broke = broke;
    client.on('error', broke);
    client.on('end', () => {
      // Ended by us (its lifetime, close) is not a break.
      if (!slot.retired) broke();
    });
    client.connect().catch(broke);
    return slot;
  }

  /** Ends a connection once the reads on it are answered (pg waits for them in pipeline mode). */
  private retire(slot: Slot): void {
    slot.retired = true;
    slot.client.end().catch(() => undefined);
  }

  /** Sends nothing more here (later reads go to the fallback) and ends the connections once drained. */
  async close(): Promise<void> {
    this.closed = true;
    const slots = this.slots.filter((s): s is Slot => s !== undefined);
    this.slots.fill(undefined);
    await Promise.all(
      slots.map((s) => {
        s.retired = true;
        return s.client.end().catch(() => undefined);
      }),
    );
  }
}
