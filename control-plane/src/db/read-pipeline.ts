import type { EventEmitter } from 'node:events';
import pg from 'pg';
import type { Queryable } from '../domain/queryable.js';

/** Reads on the pipeline's connections at once; beyond it a read takes a connection of the pool. */
export const PIPELINE_MAX_IN_FLIGHT = 256;
/**
 * Each pipelined read is cut off after this: a read queued behind a slow one on the same connection
 * waits for it, so none may be slow for long (the reads sent here answer in about a millisecond).
 */
export const PIPELINE_STATEMENT_TIMEOUT_MS = 5000;
/** A connection is replaced after this long, as the pools' are (their maxLifetimeSeconds). */
export const PIPELINE_MAX_LIFETIME_MS = 900_000;

export interface ReadPipelineOptions {
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
}

/** The socket under a pg client (pg's Connection keeps it as `stream`; it has no public accessor). */
const socketOf = (c: pg.Client) =>
  (c as unknown as { connection: { stream: { cork(): void; uncork(): void } } }).connection.stream;

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  typeof (v as PromiseLike<unknown> | null)?.then === 'function';

/**
 * Short reads of the API's hottest routes (a tenant, a page of the fleet), sent over a few
 * connections in pipeline mode and written to the server once per turn of the event loop.
 *
 * Through a pool, each read is one connection's round trip: one write to Postgres, one wake-up of
 * its backend, one write back, per read. Ten concurrent reads arrive in the same turn of the event
 * loop about as often as not; here they go out in one write (the socket is corked from the first
 * read of the turn to its check phase), one backend answers them one after another (each with its
 * own Sync, so each is its own statement and its own error), and the answers come back together. On
 * two cores that roughly halves the CPU per read on both sides of the socket (docs/benchmarks.md).
 *
 * What it may carry: single statements that only read, through indexes, in milliseconds. A read
 * queued behind another on a connection waits for it, so each is cut off after
 * PIPELINE_STATEMENT_TIMEOUT_MS, and filtered or otherwise unbounded reads stay on the pool. No
 * transaction: each read sees what was committed when it ran, as on a pooled connection.
 *
 * Failure: a connection that breaks fails the reads on it (as a pooled connection's would) and is
 * replaced by the next turn's first read; one that has lived PIPELINE_MAX_LIFETIME_MS is ended after its
 * reads drain. Past PIPELINE_MAX_IN_FLIGHT reads in flight, and once closed, reads go to `fallback`
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
  }

  query: Queryable['query'] = (text, params) => {
    if (this.closed || this.inFlight >= this.maxInFlight) return this.fallback.query(text, params);
    const slot = this.slotOfThisTurn();
    this.inFlight++;
    const sent: unknown = slot.client.query(text as never, params);
    // A statement object (db/text-rows.ts) reports by its events when no callback is set; text and
    // config objects come back as a promise.
    const done = isThenable(sent)
      ? Promise.resolve(sent)
      : new Promise((resolve, reject) => (sent as EventEmitter).once('end', resolve).once('error', reject));
    return done.finally(() => {
      this.inFlight--;
    }) as never;
  };

  /** Reads in flight on the pipeline's connections (for /readyz and tests). */
  get pending(): number {
    return this.inFlight;
  }

  private slotOfThisTurn(): Slot {
    if (this.batch) return this.batch;
    const i = this.next++ % this.slots.length;
    let slot = this.slots[i];
    if (!slot || slot.broken || Date.now() - slot.born > this.maxLifetimeMs) {
      if (slot) this.retire(slot);
      slot = this.open();
      this.slots[i] = slot;
    }
    const s = slot;
    this.batch = s;
    socketOf(s.client).cork();
    setImmediate(() => {
      this.batch = undefined;
      socketOf(s.client).uncork();
    });
    return s;
  }

  private open(): Slot {
    const client = new pg.Client({
      connectionString: this.connectionString,
      pipeline: true,
      options: `-c statement_timeout=${this.statementTimeoutMs} -c default_transaction_read_only=on`,
    } as pg.ClientConfig);
    const slot: Slot = { client, born: Date.now(), broken: false };
    // pg fails every read on the connection with the error; the next turn opens another.
    client.on('error', () => {
      slot.broken = true;
    });
    client.on('end', () => {
      slot.broken = true;
    });
    client.connect().catch(() => {
      slot.broken = true;
    });
    return slot;
  }

  /** Ends a connection once the reads on it are answered (pg waits for them in pipeline mode). */
  private retire(slot: Slot): void {
    slot.client.end().catch(() => undefined);
  }

  /** Sends nothing more here (later reads go to the fallback) and ends the connections once drained. */
  async close(): Promise<void> {
    this.closed = true;
    const slots = this.slots.filter((s): s is Slot => s !== undefined);
    this.slots.fill(undefined);
    await Promise.all(slots.map((s) => s.client.end().catch(() => undefined)));
  }
}
