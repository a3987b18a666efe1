import type { Logger } from 'pino';
import type { ReservedConnectionAccess } from '../dataplane/dataplane.js';
import type { Db } from '../db/db.js';
import { TenantryError } from '../domain/errors.js';
import { type NamedStatement, named, type Queryable } from '../domain/queryable.js';
import {
  type ClusterConnections,
  connectionBudgetOf,
  connectionCost,
  judgeConnections,
  overcommitCeiling,
  type Tier,
  type TierCatalog,
  tenantConnectionLimit,
} from '../domain/tiers.js';

/** Where a cluster's connection settings come from (the local engine's DataPlane). */
export interface ConnectionSource {
  /** The cluster's name in the budget table and the metrics (host:port). */
  readonly cluster: string;
  connectionSettings(): Promise<ClusterConnections>;
  reserveAdminConnections?(): Promise<ReservedConnectionAccess>;
}

/** Recorded on an operation (and its audit entry) accepted past its cluster's budget. */
export interface ConnectionOvercommit {
  cluster: string;
  budget: number;
  /** Committed connections on the cluster once this change is counted. */
  committed: number;
  /** The most TENANTRY_CONNECTION_OVERCOMMIT lets the cluster commit; null when it sets no ceiling. */
  ceiling: number | null;
  message: string;
}

export interface ConnectionBudgetSnapshot {
  cluster: string;
  /** null when the cluster's settings were never read (unreachable since start, and no stored reading). */
  budget: number | null;
  committed: number;
}

export interface ConnectionChange {
  slug: string;
  /** The tier the tenant is onboarded on or promoted to. */
  tier: Tier;
  /** A promotion's source tier. */
  fromTier?: Tier;
  /** The tenant row (onboarding) is already written in this transaction, so it is in the sum. */
  recorded: boolean;
  requestId?: string;
  /** Whether an overcommit is logged (false: a caller that redoes the change to record it logs it then). */
  warn?: boolean;
}

interface Reading {
  settings: ClusterConnections;
  at: number;
}

/** The sum of the connection limits committed on the cluster (migration 0020). */
const COMMITTED: NamedStatement = {
  name: 'tenantry.connections_committed',
  text: 'SELECT tenantry_connections_committed($1::jsonb, $2::int) AS n',
};

/** The cluster's budget row taken (its settings recorded), then that sum under it: one round trip (migration 0020). */
const ADMIT: NamedStatement = {
  name: 'tenantry.admit_connections',
  text: 'SELECT tenantry_admit_connections($1, $2, $3, $4, $5::jsonb, $6::int) AS n',
};

/**
 * Connections Tenantry commits on one data-plane cluster against what the cluster allows.
 *
 * Committed: the pool login's limit once, plus each live tenant's own login (bridge and silo: its
 * tier's limit from tiers.json; a tenant in the middle of a promotion, or stopped past its cutover,
 * counts at the larger of its two tiers). Allowed (the budget): max_connections minus
 * superuser_reserved_connections minus reserved_connections, read from the server. Onboardings and
 * promotions that add connections lock the cluster's row in `connection_budgets` and compute the sum
 * after taking it, inside the transaction that writes them, so two at once cannot both squeeze past.
 */
export class ConnectionBudget {
  private reading: Reading | undefined;
  /** Each tenant tier's own limit on this cluster, as SQL reads it; the pool login counted apart. */
  private readonly limits: Record<string, number>;
  private readonly poolLogin: number;

  constructor(
    private readonly db: Db,
    private readonly source: ConnectionSource,
    private readonly catalog: TierCatalog,
    private readonly opts: {
      /** Ratio of the budget tenants' limits may reach (≥ 1; Infinity: no ceiling). */
      overcommit: number;
      log: Logger;
      /** How long a reading of the server's settings is used before it is read again. */
      refreshMs?: number;
      /** The tiers whose logins live on this cluster (the local target: all of them but account). */
      tiers?: readonly Tier[];
    },
  ) {
    const tiers = opts.tiers ?? (['bridge', 'silo'] as const);
    this.limits = Object.fromEntries(
      tiers.filter((t) => t !== 'pool').map((t) => [t, tenantConnectionLimit(catalog, t)]),
    );
    this.poolLogin = catalog.tiers.pool.role.connectionLimit;
  }

  get cluster(): string {
    return this.source.cluster;
  }

  /** Whether the last change admitted here found the cluster past its budget (an overcommit or a refusal). */
  private over = false;
  get overBudget(): boolean {
    return this.over;
  }

  /**
   * At start: reads and records the cluster's settings, makes sure the admin may use the reserved
   * slots, and warns when the fleet is already past its budget (a budget lowered, or tenants from
   * before there was one).
   */
  async start(): Promise<void> {
    const { log } = this.opts;
    const settings = await this.settings();
    const committed = await this.record(this.db, settings);
    const access = await this.source.reserveAdminConnections?.();
    if (access) {
      const ctx = {
        cluster: this.cluster,
        access: access.access,
        reservedConnections: access.reservedConnections,
      };
      if (
        access.access === 'refused' ||
        (access.access === 'unavailable' && settings.reservedConnections > 0)
      ) {
        log.warn(
          { ...ctx, reason: access.reason },
          'the control plane cannot use the reserved connection slots of this cluster: grant it pg_use_reserved_connections (Postgres 16+)',
        );
      } else if (access.access === 'granted') {
        log.info(ctx, 'granted pg_use_reserved_connections to the data-plane admin');
      }
    }
    const budget = connectionBudgetOf(settings);
    if (committed > budget) {
      log.warn(
        { cluster: this.cluster, budget, committed, ...settingsOf(settings) },
        'the connection limits of this cluster’s tenants already exceed its connection budget',
      );
    }
  }

  /**
   * Admits a change that may add connections to the cluster, inside the transaction that writes it:
   * null when it fits (or adds nothing), the overcommit to record when it fits only through
   * TENANTRY_CONNECTION_OVERCOMMIT (logged as a warning), else CAPACITY_EXCEEDED. Holds the cluster's
   * budget row until the transaction ends.
   */
  async admit(q: Queryable, change: ConnectionChange): Promise<ConnectionOvercommit | null> {
    const cost = change.tier in this.limits ? connectionCost(this.catalog, change.tier, change.fromTier) : 0;
    if (cost === 0) return null;
    const { settings, committed: before } = await this.lockAndSum(q);
    const committed = before + (change.recorded ? 0 : cost);
    const budget = connectionBudgetOf(settings);
    const verdict = judgeConnections({ budget, committed, cost, overcommit: this.opts.overcommit });
    this.over = verdict !== 'within';
    if (verdict === 'within') return null;
    const ceiling = overcommitCeiling(budget, this.opts.overcommit);
    const what = change.fromTier
      ? `promoting ${change.slug} from ${change.fromTier} to ${change.tier} adds ${cost} connections`
      : `onboarding ${change.tier} tenant ${change.slug} needs ${cost} connections`;
    const where = `cluster ${this.cluster} has a connection budget of ${budget} (${formula(settings)}) with ${committed - cost} committed`;
    const context = { cluster: this.cluster, budget, committed: committed - cost, requested: cost };
    if (verdict === 'refused') {
      const limit =
        this.opts.overcommit > 1
          ? `its overcommit ceiling of ${ceiling} (TENANTRY_CONNECTION_OVERCOMMIT=${this.opts.overcommit})`
          : 'it';
      throw new TenantryError(
        'CAPACITY_EXCEEDED',
        `${what}; ${where}, and ${committed} would exceed ${limit}. Offboard tenants, raise max_connections, or allow an overcommit with TENANTRY_CONNECTION_OVERCOMMIT`,
        { context: { ...context, ceiling: Number.isFinite(ceiling) ? ceiling : null } },
      );
    }
    const message = `${what}; ${where}: ${committed} committed is past the budget, accepted because TENANTRY_CONNECTION_OVERCOMMIT allows it. Tenants using their full limits would be refused connections`;
    if (change.warn !== false)
      this.opts.log.warn(
        { ...context, committedAfter: committed, tenantSlug: change.slug, requestId: change.requestId },
        'connection budget overcommitted',
      );
    return {
      cluster: this.cluster,
      budget,
      committed,
      ceiling: Number.isFinite(ceiling) ? ceiling : null,
      message,
    };
  }

  /** The budget and what is committed, for the metrics. */
  async snapshot(): Promise<ConnectionBudgetSnapshot> {
    const settings = await this.settings().catch(() => undefined);
    const stored = settings ? undefined : await this.stored(this.db);
    const s = settings ?? stored;
    return {
      cluster: this.cluster,
      budget: s ? connectionBudgetOf(s) : null,
      committed: await this.committed(this.db),
    };
  }

  /** The sum of the connection limits of everything Tenantry created on the cluster. */
  async committed(q: Queryable): Promise<number> {
    const { rows } = await q.query<{ n: number }>(named(COMMITTED), [
      JSON.stringify(this.limits),
      this.poolLogin,
    ]);
    return rows[0]?.n ?? this.poolLogin;
  }

  /**
   * The server's settings, read again once the last reading is older than refreshMs (max_connections
   * changes only with a restart of the cluster). A failed read keeps the last one.
   */
  private async settings(): Promise<ClusterConnections> {
    const r = this.reading;
    if (r && Date.now() - r.at < (this.opts.refreshMs ?? 60_000)) return r.settings;
    try {
      const settings = await this.source.connectionSettings();
      this.reading = { settings, at: Date.now() };
      return settings;
    } catch (e) {
      if (r) return r.settings;
      throw e;
    }
  }

  /**
   * Takes the cluster's budget row (recording a fresh reading, or the stored one when the cluster
   * cannot be read), then sums what is committed in a statement of its own: under READ COMMITTED it
   * sees every change committed by whoever held the row before us.
   */
  private async lockAndSum(q: Queryable): Promise<{ settings: ClusterConnections; committed: number }> {
    const settings = await this.settings().catch(() => undefined);
    if (settings) return { settings, committed: await this.record(q, settings) };
    const stored = await this.stored(q, { forUpdate: true });
    if (stored) return { settings: stored, committed: await this.committed(q) };
    throw new TenantryError(
      'DATAPLANE_UNAVAILABLE',
      `the connection settings of cluster ${this.cluster} cannot be read, so its connection budget is unknown; retry`,
      { retryable: true },
    );
  }

  /** Records a reading of the cluster's settings in its budget row, taking the row; returns the sum read under it. */
  private async record(q: Queryable, s: ClusterConnections): Promise<number> {
    const { rows } = await q.query<{ n: number }>(named(ADMIT), [
      this.cluster,
      s.maxConnections,
      s.superuserReservedConnections,
      s.reservedConnections,
      JSON.stringify(this.limits),
      this.poolLogin,
    ]);
    return rows[0]?.n ?? this.poolLogin;
  }

  private async stored(
    q: Queryable,
    opts: { forUpdate?: boolean } = {},
  ): Promise<ClusterConnections | undefined> {
    const { rows } = await q.query<{ max: number; su: number; reserved: number }>(
      `SELECT max_connections AS max, superuser_reserved_connections AS su, reserved_connections AS reserved
         FROM connection_budgets WHERE cluster = $1${opts.forUpdate ? ' FOR UPDATE' : ''}`,
      [this.cluster],
    );
    const r = rows[0];
    return r
      ? { maxConnections: r.max, superuserReservedConnections: r.su, reservedConnections: r.reserved }
      : undefined;
  }
}

const formula = (s: ClusterConnections) =>
  `max_connections ${s.maxConnections} − superuser_reserved_connections ${s.superuserReservedConnections} − reserved_connections ${s.reservedConnections}`;

const settingsOf = (s: ClusterConnections) => ({
  maxConnections: s.maxConnections,
  superuserReservedConnections: s.superuserReservedConnections,
  reservedConnections: s.reservedConnections,
});
