import pg from 'pg';
import type { Queryable } from '../domain/queryable.js';
import type { ClusterConnections } from '../domain/tiers.js';

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

/**
 * Whether the admin may use the slots `reserved_connections` keeps: as a superuser (which also has
 * superuser_reserved_connections), as a member of pg_use_reserved_connections (already, or granted now),
 * or not: the server has no such role (before Postgres 16), or the admin may not grant it to itself.
 */
export interface ReservedConnectionAccess {
  access: 'superuser' | 'member' | 'granted' | 'unavailable' | 'refused';
  reservedConnections: number;
  /** Why not, for `refused`. */
  reason?: string;
}

/** How a data-plane session commits: `relaxed` asks for `synchronous_commit = off` where it is safe (see `allowRelaxedCommits`). */
export interface SessionOptions {
  relaxed?: boolean;
}

/** Pooled sessions whose last use set synchronous_commit = off (DataPlane.withPooled). */
const relaxedSessions = new WeakSet<pg.PoolClient>();

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

  /**
   * Whether provisioning may commit with `synchronous_commit = off` (`{ relaxed: true }` below). Only
   * when this cluster also holds the control database: the operation's completion there is a durable
   * commit later in the same WAL, so a Postgres crash can lose a relaxed provisioning commit only
   * together with every later record of its step, and the step then runs again (each is idempotent).
   * On another cluster, a lost commit could sit behind a step recorded done: every commit stays durable.
   */
  private relaxedCommits = false;

  allowRelaxedCommits(sameClusterAsControl: boolean): void {
    this.relaxedCommits = sameClusterAsControl;
  }

  /** A dedicated client on the data database (DDL sequences that need one session). */
  withData<T>(fn: (db: Queryable) => Promise<T>, opts: SessionOptions = {}): Promise<T> {
    return this.withPooled(this.data, fn, opts);
  }

  withMaintenance<T>(fn: (db: Queryable) => Promise<T>, opts: SessionOptions = {}): Promise<T> {
    return this.withPooled(this.maintenance, fn, opts);
  }

  /** A short-lived admin session on another database (a silo). */
  async withDatabase<T>(
    database: string,
    fn: (db: Queryable) => Promise<T>,
    opts: SessionOptions = {},
  ): Promise<T> {
    const u = new URL(this.urlFor(database));
    if (this.relaxes(opts))
      u.searchParams.set('options', `${u.searchParams.get('options')} -c synchronous_commit=off`);
    const c = new pg.Client({ connectionString: u.toString() });
    c.on('error', () => {});
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  private relaxes(opts: SessionOptions): boolean {
    return opts.relaxed === true && this.relaxedCommits;
  }

  /**
   * Each use of a pooled session gets the commit mode it asks for. A session keeps the mode its last
   * use set (`relaxedSessions`), so only a change costs a round trip: an onboarding's three relaxed
   * uses cost none once the session is relaxed, where a SET and a RESET around each cost six.
   */
  private async withPooled<T>(
    pool: pg.Pool,
    fn: (db: Queryable) => Promise<T>,
    opts: SessionOptions,
  ): Promise<T> {
    const c = await pool.connect();
    const relaxed = this.relaxes(opts);
    let failed = true;
    try {
      if (relaxedSessions.has(c) !== relaxed) {
        await c.query(relaxed ? 'SET synchronous_commit = off' : 'RESET synchronous_commit');
        if (relaxed) relaxedSessions.add(c);
        else relaxedSessions.delete(c);
      }
      const out = await fn(c);
      failed = false;
      return out;
    } finally {
      // A use that failed may have left its session inside a transaction: it is discarded, not pooled.
      c.release(failed);
    }
  }

  /** The cluster's name in the connection budget and its metrics. */
  get cluster(): string {
    return `${this.host}:${this.port}`;
  }

  /** The cluster's connection slots, read from the server (`reserved_connections` is 0 before Postgres 16). */
  async connectionSettings(): Promise<ClusterConnections> {
    return this.withMaintenance(async (db) => {
      const { rows } = await db.query<{ max: number; su: number; reserved: number }>(
        `SELECT current_setting('max_connections')::int AS max,
                current_setting('superuser_reserved_connections')::int AS su,
                coalesce(current_setting('reserved_connections', true), '0')::int AS reserved`,
      );
      const r = rows[0];
      if (!r) throw new Error('the data-plane cluster returned no connection settings');
      return {
        maxConnections: r.max,
        superuserReservedConnections: r.su,
        reservedConnections: r.reserved,
      };
    });
  }

  /**
   * Makes sure our admin may log in when tenants have taken every ordinary slot. A superuser may
   * already (the embedded cluster); an admin that is not one (external Postgres, RDS) needs the
   * predefined role pg_use_reserved_connections (Postgres 16+), granted here when it may grant it to
   * itself (ADMIN OPTION on it); otherwise an operator grants it, or keeps reserved_connections at 0
   * and relies on the connection budget alone.
   */
  async reserveAdminConnections(): Promise<ReservedConnectionAccess> {
    return this.withMaintenance(async (db) => {
      const { rows } = await db.query<{ su: boolean; has_role: boolean; reserved: number }>(
        `SELECT rolsuper AS su,
                EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_use_reserved_connections') AS has_role,
                coalesce(current_setting('reserved_connections', true), '0')::int AS reserved
           FROM pg_roles WHERE rolname = current_user`,
      );
      const me = rows[0];
      const reservedConnections = me?.reserved ?? 0;
      if (me?.su) return { access: 'superuser', reservedConnections };
      if (!me?.has_role) return { access: 'unavailable', reservedConnections };
      const member = await db.query<{ ok: boolean }>(
        `SELECT pg_has_role(current_user, 'pg_use_reserved_connections', 'USAGE') AS ok`,
      );
      if (member.rows[0]?.ok) return { access: 'member', reservedConnections };
      try {
        await db.query('GRANT pg_use_reserved_connections TO CURRENT_USER WITH INHERIT TRUE');
        return { access: 'granted', reservedConnections };
      } catch (e) {
        const code = (e as { code?: string }).code;
        // insufficient_privilege, invalid_grant_operation
        if (code !== '42501' && code !== '0LP01') throw e;
        return { access: 'refused', reservedConnections, reason: (e as Error).message };
      }
    });
  }

  async close(): Promise<void> {
    await Promise.all([this.data.end(), this.maintenance.end()]);
  }
}
