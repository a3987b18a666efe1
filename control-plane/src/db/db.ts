import pg from 'pg';
import type { Queryable } from '../providers/postgres/sql.js';

/** The control-plane database: a pool plus a transaction helper repositories can compose. */
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

  constructor(connectionString: string, max = 10) {
    const common = { connectionString, idleTimeoutMillis: 30_000, maxLifetimeSeconds: 900 };
    this.pool = new pg.Pool({ ...common, max });
    this.relaxed = new pg.Pool({ ...common, max, options: '-c synchronous_commit=off' });
    // An idle client lost to a server restart is replaced on next use.
    this.pool.on('error', () => {});
    this.relaxed.on('error', () => {});
  }

  query: Queryable['query'] = (text, params) => this.pool.query(text, params) as never;

  /** A write whose loss in a Postgres crash only re-does work (see `relaxed`). */
  relaxedQuery: Queryable['query'] = (text, params) => this.relaxed.query(text, params) as never;

  async tx<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      const out = await fn(c);
      await c.query('COMMIT');
      return out;
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      c.release();
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.pool.end(), this.relaxed.end()]);
  }
}
