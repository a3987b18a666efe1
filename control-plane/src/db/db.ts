import pg from 'pg';
import type { Queryable } from '../providers/postgres/sql.js';

/** The control-plane database: a pool plus a transaction helper repositories can compose. */
export class Db {
  readonly pool: pg.Pool;

  constructor(connectionString: string, max = 10) {
    this.pool = new pg.Pool({ connectionString, max, idleTimeoutMillis: 30_000, maxLifetimeSeconds: 900 });
    this.pool.on('error', () => {}); // an idle client lost to a server restart is replaced on next use
  }

  query: Queryable['query'] = (text, params) => this.pool.query(text, params) as never;

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

  close(): Promise<void> {
    return this.pool.end();
  }
}
