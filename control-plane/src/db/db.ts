import { AsyncLocalStorage } from 'node:async_hooks';
import pg from 'pg';
import type { Queryable } from '../domain/queryable.js';
import { ReadPipeline } from './read-pipeline.js';

export interface DbOptions {
  /** Connections in the main pool (the relaxed pool has as many). */
  max?: number;
  /**
   * Connections the main pool keeps open (default 0): `warm()` opens them, idle ones below it are never
   * closed, and one that ends (its lifetime, an error) is opened again at once. See `warm`.
   */
  min?: number;
  /** How long a caller waits for a connection before the pool gives up (a 503, never a hang). */
  acquireTimeoutMs?: number;
  /**
   * Whether a caller holding a connection that asks the same pool for another one is refused at once
   * (default true; see `Db`). The check tracks holders with an AsyncLocalStorage, which on Node 20
   * turns on async hooks for every promise in the process: it costs the API about 7 % of its CPU
   * per read (docs/benchmarks.md). The server keeps it off unless TENANTRY_DB_HOLD_CHECK=on
   * (the test suite's setting); a Db made by a script or a test has it.
   */
  checkHolds?: boolean;
  /**
   * Pipelined connections for the API's hottest reads (`reads`, db/read-pipeline.ts); 0 (the
   * default) sends them through the main pool.
   */
  readPipelines?: number;
}

/** The pools a call stack is holding a connection of, while it holds them. */
interface Held {
  pools: Set<pg.Pool>;
}

/**
 * The control-plane database: a pool plus a transaction helper repositories can compose.
 *
 * One rule keeps the pools from wedging: **a caller that holds a connection never asks the same
 * pool for another one.** Ten requests that each hold a connection and wait for an eleventh wait
 * for ever. Inside `tx(fn)`, `fn` gets the transaction's connection and must use it; a call to
 * `query`, `relaxedQuery` or `tx` on the same pool from inside it throws at once (it is a bug,
 * found by any test that runs the path), and the same holds for `withSessionLock`. The pools are
 * ordered: a session lock (own pool) may use the main and relaxed pools, the main pool may use the
 * relaxed one, never the other way; the order rules out a cycle, hence a deadlock.
 *
 * The check runs where `checkHolds` is on: the test suite, which runs every path. Where it is off
 * (the server's default), the same bug is not a hang either: the second request for a connection
 * gives up after `acquireTimeoutMs`, the transaction rolls back and the request gets a 503.
 */
export class Db {
  readonly pool: pg.Pool;
  /**
   * Sessions with `synchronous_commit = off`, for writes a Postgres crash may lose without harm
   * because the work they record is re-done: a step's progress (steps are idempotent; a lost record
   * re-runs the step), a lease or a claim (the reaper and the queue take the operation up again), the
   * job queue's own bookkeeping (a lost completion re-runs a job that finds its operation ended). A
   * commit still happens at once and is seen by everyone; only its WAL flush is deferred (by at most
   * three times wal_writer_delay). Everything else (accepting an operation, its end, the tenant's
   * status, audit, keys and secrets) stays durable on `pool`; a durable commit also flushes every
   * relaxed commit before it, since WAL is written in order.
   */
  readonly relaxed: pg.Pool;
  /** Sessions that hold a session-level advisory lock while their work uses the other pools. */
  private readonly locks: pg.Pool;
  /** The connections this call stack holds: set only where `checkHolds` is on (see DbOptions). */
  private readonly held: AsyncLocalStorage<Held> | undefined;
  /**
   * Where short single-statement reads go (a tenant, a page of the fleet): pipelined connections
   * (db/read-pipeline.ts) where `readPipelines` is set, else the main pool.
   */
  readonly reads: Queryable;
  private readonly pipeline: ReadPipeline | undefined;
  readonly acquireTimeoutMs: number;
  private readonly min: number;
  private closing = false;
  private refilling: Promise<void> | undefined;

  constructor(
    private readonly connectionString: string,
    opts: DbOptions | number = {},
  ) {
    const o = typeof opts === 'number' ? { max: opts } : opts;
    const max = o.max ?? 10;
    this.acquireTimeoutMs = o.acquireTimeoutMs ?? 5000;
    const common = {
      connectionString,
      idleTimeoutMillis: 30_000,
      maxLifetimeSeconds: 900,
      connectionTimeoutMillis: this.acquireTimeoutMs,
    };
    this.min = Math.min(o.min ?? 0, max);
    this.held = o.checkHolds === false ? undefined : new AsyncLocalStorage<Held>();
    this.pool = new pg.Pool({ ...common, max, min: this.min });
    // A connection that ended (its lifetime, a broken socket) is replaced before a request needs it.
    this.pool.on('remove', () => {
      if (this.min > 0 && !this.closing) void this.warm().catch(() => undefined);
    });
    this.relaxed = new pg.Pool({ ...common, max, options: '-c synchronous_commit=off' });
    this.locks = new pg.Pool({ ...common, max: Math.max(2, Math.ceil(max / 2)) });
    this.pipeline = o.readPipelines
      ? new ReadPipeline(connectionString, o.readPipelines, this, { connectTimeoutMs: this.acquireTimeoutMs })
      : undefined;
    this.reads = this.pipeline ?? this;
    // An idle client lost to a server restart is replaced on next use.
    this.pool.on('error', () => {});
    this.relaxed.on('error', () => {});
    this.locks.on('error', () => {});
  }

  /** Throws when the current call stack already holds a connection of `pool`. */
  private assertFree(pool: pg.Pool, what: string): void {
    if (this.held?.getStore()?.pools.has(pool)) {
      throw new Error(
        `${what} asked the pool for a second connection while holding one; pass the transaction's connection instead (this would deadlock under load)`,
      );
    }
  }

  /** Runs `fn` marked as holding a connection of `pool` (nested marks accumulate). */
  private holding<T>(pool: pg.Pool, fn: () => Promise<T>): Promise<T> {
    const held = this.held;
    if (!held) return fn();
    const outer = held.getStore();
    const mark: Held = { pools: new Set([...(outer?.pools ?? []), pool]) };
    return held.run(mark, async () => {
      try {
        return await fn();
      } finally {
        // Work started inside and still running afterwards no longer holds anything.
        mark.pools.delete(pool);
      }
    });
  }

  // (A DriverStatement is one of pg's Submittables, which pg's query takes as it takes a config.)
  query: Queryable['query'] = (text, params) => {
    this.assertFree(this.pool, 'a query');
    return this.pool.query(text as pg.QueryConfig, params) as never;
  };

  /** A write whose loss in a Postgres crash only re-does work (see `relaxed`). */
  relaxedQuery: Queryable['query'] = (text, params) => {
    this.assertFree(this.relaxed, 'a relaxed query');
    return this.relaxed.query(text as pg.QueryConfig, params) as never;
  };

  async tx<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    this.assertFree(this.pool, 'a transaction');
    const c = await this.pool.connect();
    try {
      return await this.holding(this.pool, async () => {
        await c.query('BEGIN');
        try {
          const out = await fn(c);
          await c.query('COMMIT');
          return out;
        } catch (e) {
          await c.query('ROLLBACK').catch(() => undefined);
          throw e;
        }
      });
    } finally {
      c.release();
    }
  }

  /**
   * Runs `fn` while this process holds the session-level advisory lock `key` (a control-database
   * lock: tenants never connect to this database). Returns `undefined` without running `fn` when
   * another session holds it. The lock's session comes from a pool of its own, so a long `fn`
   * that uses the main pool cannot starve it, and the lock dies with the session if we crash.
   */
  async withSessionLock<T>(key: string | number, fn: () => Promise<T>): Promise<T | undefined> {
    this.assertFree(this.locks, 'a session lock');
    const c = await this.locks.connect();
    const sql = typeof key === 'number' ? '$1::bigint' : 'hashtext($1)';
    let locked = false;
    try {
      const { rows } = await c.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(${sql}) AS ok`, [key]);
      locked = rows[0]?.ok === true;
      if (!locked) return undefined;
      return await this.holding(this.locks, fn);
    } finally {
      if (locked) await c.query(`SELECT pg_advisory_unlock(${sql})`, [key]).catch(() => undefined);
      c.release();
    }
  }

  /**
   * Whether the main pool hands out a connection within `budgetMs` (a liveness probe answers
   * fast; 1 s by default) and the database answers. A pool whose every connection is held, with
   * callers queued behind them, reports that instead of making the probe wait.
   */
  async health(
    budgetMs = Math.min(1000, this.acquireTimeoutMs),
  ): Promise<{ ok: boolean; total: number; idle: number; waiting: number; error?: string }> {
    const stats = { total: this.pool.totalCount, idle: this.pool.idleCount, waiting: this.pool.waitingCount };
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no connection within ${budgetMs} ms`)), budgetMs);
    });
    const probe = this.pool.query('SELECT 1');
    probe.catch(() => undefined); // answered after the budget: nobody is waiting for it
    try {
      await Promise.race([probe, late]);
      return { ok: true, ...stats };
    } catch (e) {
      return {
        ok: false,
        total: this.pool.totalCount,
        idle: this.pool.idleCount,
        waiting: this.pool.waitingCount,
        error: (e as Error).message,
      };
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A session of its own LISTENing on `channel` (never a pooled one: it is held for the process's
   * life). `onWake` runs on each notification and after each (re)connect, since what was notified
   * while the session was away is lost; a lost session is replaced after `retryMs`.
   */
  listen(
    channel: string,
    onWake: () => void,
    opts: { retryMs?: number; onError?: (e: Error) => void } = {},
  ): { close(): Promise<void> } {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`invalid channel name ${channel}`);
    let closed = false;
    let client: pg.Client | undefined;
    let timer: NodeJS.Timeout | undefined;
    const connect = async () => {
      if (closed) return;
      const c = new pg.Client({ connectionString: this.connectionString });
      client = c;
      const retry = (e: Error) => {
        opts.onError?.(e);
        c.removeAllListeners();
        c.on('error', () => {});
        c.end().catch(() => undefined);
        if (closed || client !== c) return;
        client = undefined;
        timer = setTimeout(() => void connect(), opts.retryMs ?? 1000);
        timer.unref();
      };
      c.on('error', retry);
      c.on('end', () => retry(new Error('the listening session ended')));
      c.on('notification', () => onWake());
      try {
        await c.connect();
        await c.query(`LISTEN ${channel}`);
      } catch (e) {
        retry(e as Error);
        return;
      }
      if (!closed) onWake();
    };
    void connect();
    return {
      close: async () => {
        closed = true;
        clearTimeout(timer);
        const c = client;
        client = undefined;
        if (c) {
          c.removeAllListeners();
          c.on('error', () => {});
          await c.end().catch(() => undefined);
        }
      },
    };
  }

  /**
   * Opens the main pool's connections up to `min`, all at once, and returns them to the pool idle.
   *
   * A pool that grows on demand opens its connections under load: each one is a backend forked and a
   * SCRAM exchange (4,096 PBKDF2 rounds on each side), tens of milliseconds of CPU that every request
   * in flight waits behind. Under ten concurrent reads on two cores, the pool growing from 7 to 10
   * connections held all ten requests for 48 ms (scripts/bench/api.ts, docs/benchmarks.md). Opened
   * here, at startup and whenever one ends, that cost is never on a request's path. A connection
   * that cannot be opened now is left for the first request that needs it, as before.
   */
  warm(): Promise<void> {
    this.refilling ??= (async () => {
      try {
        while (!this.closing && this.pool.totalCount < this.min) {
          const before = this.pool.totalCount;
          // The pool hands out its idle connections first: holding them too, the rest are new ones.
          const n = this.min - before + this.pool.idleCount;
          const opened = await Promise.allSettled(Array.from({ length: n }, () => this.borrowIdle()));
          for (const o of opened) if (o.status === 'fulfilled') o.value();
          const failed = opened.find((o) => o.status === 'rejected');
          if (failed) throw failed.reason;
          if (this.pool.totalCount <= before) break; // taken by requests meanwhile: they opened it
        }
      } finally {
        this.refilling = undefined;
      }
    })();
    return this.refilling;
  }

  /**
   * A connection of the main pool held with no query on it, and the function that gives it back. pg-pool
   * stops listening for a connection's errors while it is lent out, and a session ended then (a
   * terminated backend) would throw from the driver: held here, its error is kept and the connection
   * is given back as broken, so the pool drops it.
   */
  private async borrowIdle(): Promise<() => void> {
    const c = await this.pool.connect();
    let broken: Error | undefined;
    const onError = (e: Error) => {
      broken = e;
    };
    c.on('error', onError);
    return () => {
      c.off('error', onError);
      c.release(broken);
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.pipeline?.close();
    await Promise.all([this.pool.end(), this.relaxed.end(), this.locks.end()]);
  }
}
