import pg from 'pg';
import type { ConnectionDescriptor } from '../domain/ports.js';
import type { PasswordSource } from './secrets.js';

/** Where a pool connects: one per placement and login (a pool tier's tenants share the pool's). */
export const placementKey = (d: Pick<ConnectionDescriptor, 'host' | 'port' | 'database' | 'user'>): string =>
  `${d.host}:${d.port}/${d.database}/${d.user}`;

export interface PoolOptions {
  /** Connections per placement at most. */
  max: number;
  idleTimeoutMillis: number;
  /** A connection lives this long at most (seconds): a long-lived one is replaced, so a retired login's ends. */
  maxLifetimeSeconds: number;
  connectionTimeoutMillis: number;
}

interface Placement {
  pool: pg.Pool;
  /** The latest descriptor naming it: its password (or secretRef) is what new connections use. */
  descriptor: ConnectionDescriptor;
}

/**
 * One pg pool per placement (host, port, database, login), not per tenant: every pool tenant shares
 * the pool's, each bridge and silo tenant has its own login and so its own. A rotation moves a tenant
 * to its other login, a promotion to another database: its descriptor then names another placement,
 * and `drain` closes the pools no descriptor names any more (connections in use end when released).
 */
export class PlacementPools {
  private readonly pools = new Map<string, Placement>();

  constructor(
    private readonly opts: PoolOptions,
    private readonly password: PasswordSource,
    private readonly onDrain: (key: string) => void,
  ) {}

  for(d: ConnectionDescriptor): pg.Pool {
    const key = placementKey(d);
    const hit = this.pools.get(key);
    if (hit) {
      hit.descriptor = d;
      return hit.pool;
    }
    const placement: Placement = { descriptor: d, pool: undefined as unknown as pg.Pool };
    placement.pool = new pg.Pool({
      host: d.host,
      port: d.port,
      database: d.database,
      user: d.user,
      // Read for every new connection, from the latest descriptor: a rewritten secret is picked up.
      password: () => this.password(placement.descriptor),
      max: this.opts.max,
      idleTimeoutMillis: this.opts.idleTimeoutMillis,
      maxLifetimeSeconds: this.opts.maxLifetimeSeconds,
      connectionTimeoutMillis: this.opts.connectionTimeoutMillis,
      application_name: 'tenantry-client',
    });
    // An idle connection ended by the server (a retired login, a restart) must not crash the application.
    placement.pool.on('error', () => {});
    this.pools.set(key, placement);
    return placement.pool;
  }

  /** Closes the pools of placements no descriptor in `live` names. */
  drain(live: readonly ConnectionDescriptor[]): void {
    const keep = new Set(live.map(placementKey));
    for (const [key, p] of this.pools) {
      if (keep.has(key)) continue;
      this.pools.delete(key);
      this.onDrain(key);
      p.pool.end().catch(() => undefined);
    }
  }

  stats(): { pools: number; total: number; idle: number; waiting: number } {
    let total = 0;
    let idle = 0;
    let waiting = 0;
    for (const { pool } of this.pools.values()) {
      total += pool.totalCount;
      idle += pool.idleCount;
      waiting += pool.waitingCount;
    }
    return { pools: this.pools.size, total, idle, waiting };
  }

  /** The placements open now (their keys: host, port, database, login; never a password). */
  keys(): string[] {
    return [...this.pools.keys()];
  }

  async close(): Promise<void> {
    const all = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(all.map((p) => p.pool.end().catch(() => undefined)));
  }
}
