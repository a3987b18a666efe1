import pg from 'pg';
import type { Queryable } from '../providers/postgres/sql.js';

/**
 * Admin access to one data-plane cluster: a pool on the shared data database, one on the
 * maintenance database (CREATE DATABASE, roles), and short-lived clients for silo databases.
 */
export interface DataPlaneNames {
  /** The shared database holding the pool schema and the bridge schemas. */
  database: string;
  /** NOLOGIN role that owns every tenant schema, table and silo database. */
  ownerRole: string;
  /** The pool's shared login role. */
  poolRole: string;
  poolSchema: string;
  siloSchema: string;
  siloTemplate: string;
  tenantSetting: string;
}

export function dataPlaneNames(database: string): DataPlaneNames {
  if (!/^[a-z_][a-z0-9_]{0,40}$/.test(database)) {
    throw new Error(
      `data-plane database name must match ^[a-z_][a-z0-9_]{0,40}$, got ${JSON.stringify(database)}`,
    );
  }
  return {
    database,
    ownerRole: `${database}_owner`,
    poolRole: `${database}_pool`,
    poolSchema: 'pool',
    siloSchema: 'app',
    siloTemplate: `${database}_silo_template`,
    tenantSetting: 'app.tenant_id',
  };
}

export class DataPlane {
  readonly names: DataPlaneNames;
  readonly data: pg.Pool;
  readonly maintenance: pg.Pool;
  readonly host: string;
  readonly port: number;
  private readonly base: URL;

  /** How long any control-plane statement on the data plane waits for a lock (ms). */
  readonly lockTimeoutMs: number;

  constructor(adminUrl: string, opts: { maxConnections?: number; lockTimeoutMs?: number } = {}) {
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 5000;
    this.base = new URL(adminUrl);
    const db = decodeURIComponent(this.base.pathname.replace(/^\//, '')) || 'tenantry_data';
    this.names = dataPlaneNames(db);
    this.host = this.base.hostname;
    this.port = Number(this.base.port || 5432);
    const max = opts.maxConnections ?? 6;
    this.data = new pg.Pool({
      connectionString: this.urlFor(db),
      max,
      idleTimeoutMillis: 30_000,
      maxLifetimeSeconds: 600,
    });
    this.maintenance = new pg.Pool({
      connectionString: this.urlFor('postgres'),
      max,
      idleTimeoutMillis: 10_000,
    });
    // A data-plane restart must not crash the control plane: idle-client errors are logged by callers' retries.
    this.data.on('error', () => {});
    this.maintenance.on('error', () => {});
  }

  /**
   * The admin URL of `database`. Every control-plane session on the data plane runs under a
   * `lock_timeout`: a lock a tenant holds (an open transaction, a lock taken on purpose) turns our
   * statement into a retryable 55P03 instead of a worker slot held for ever.
   */
  urlFor(database: string): string {
    const u = new URL(this.base.toString());
    u.pathname = `/${encodeURIComponent(database)}`;
    if (!/lock_timeout/.test(u.searchParams.get('options') ?? '')) {
      const options = u.searchParams.get('options');
      u.searchParams.set('options', `${options ? `${options} ` : ''}-c lock_timeout=${this.lockTimeoutMs}`);
    }
    return u.toString();
  }

  /** A dedicated client on the data database (DDL sequences that need one session). */
  async withData<T>(fn: (db: Queryable) => Promise<T>): Promise<T> {
    const c = await this.data.connect();
    try {
      return await fn(c);
    } finally {
      c.release();
    }
  }

  async withMaintenance<T>(fn: (db: Queryable) => Promise<T>): Promise<T> {
    const c = await this.maintenance.connect();
    try {
      return await fn(c);
    } finally {
      c.release();
    }
  }

  /** A short-lived admin session on another database (a silo). */
  async withDatabase<T>(database: string, fn: (db: Queryable) => Promise<T>): Promise<T> {
    const c = new pg.Client({ connectionString: this.urlFor(database) });
    c.on('error', () => {});
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.data.end(), this.maintenance.end()]);
  }
}
