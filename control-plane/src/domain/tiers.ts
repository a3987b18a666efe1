export const TIERS = ['pool', 'bridge', 'silo', 'account'] as const;
export type Tier = (typeof TIERS)[number];

/** A dedicated RDS instance's settings (silo and account tiers, aws target): `templates/tiers.json`. */
export interface RdsSettings {
  instanceClass: string;
  allocatedStorageGb: number;
  /** Storage autoscaling's ceiling (RDS `maxAllocatedStorage`); above allocatedStorageGb. */
  maxAllocatedStorageGb: number;
  /** A standby in a second availability zone. */
  multiAz: boolean;
  backupRetentionDays: number;
  engineVersion: string;
  /** Performance Insights, encrypted with the tenant's key: 7 (free tier) or a multiple of 31, up to 731. */
  performanceInsightsRetentionDays: number;
  /** CloudWatch Logs exports (`postgresql`, `upgrade`). */
  logExports: string[];
  /** Enhanced monitoring's interval (1, 5, 10, 15, 30 or 60 s). */
  monitoringIntervalSeconds: number;
}

/** What a tier allows each tenant login: its connection limit and its timeouts. */
export interface RoleLimits {
  connectionLimit: number;
  statementTimeoutMs: number;
  idleInTransactionSessionTimeoutMs: number;
}

/**
 * When a tier's credentials rotate on their own (`templates/tiers.json`): every `everyDays`, each
 * tenant at its own offset within `spreadHours` (so a fleet does not rotate at once), the old login
 * kept working for `graceMinutes` after the new password is published.
 */
export interface RotationPolicy {
  everyDays: number;
  spreadHours: number;
  graceMinutes: number;
}

export interface TierDefinition {
  description: string;
  role: RoleLimits;
  rds?: RdsSettings;
  /** Scheduled credential rotation; absent: the tier's credentials rotate only on request. */
  rotation?: RotationPolicy;
}

export interface TierCatalog {
  templateVersion: number;
  tiers: Record<Tier, TierDefinition>;
}

export const isTier = (v: string): v is Tier => (TIERS as readonly string[]).includes(v);

/** Promotions move a tenant to a stronger isolation tier, never sideways or down. */
export const ALLOWED_PROMOTIONS: ReadonlyArray<readonly [Tier, Tier]> = [
  ['pool', 'bridge'],
  ['pool', 'silo'],
  ['bridge', 'silo'],
];

/** The connection slots of a data-plane cluster, as its server settings define them. */
export interface ClusterConnections {
  maxConnections: number;
  superuserReservedConnections: number;
  /** `reserved_connections` (Postgres 16+; 0 where the server has no such setting). */
  reservedConnections: number;
}

/**
 * What tenants may hold on a cluster at once: every slot but those kept for superusers and for
 * roles with `pg_use_reserved_connections` (the control plane).
 */
export const connectionBudgetOf = (c: ClusterConnections): number =>
  Math.max(0, c.maxConnections - c.superuserReservedConnections - c.reservedConnections);

/**
 * The connection limit a tenant's own login role adds to its cluster. A pool tenant adds none: it
 * shares the pool login, whose limit is counted once per cluster.
 */
export const tenantConnectionLimit = (catalog: TierCatalog, tier: Tier): number =>
  tier === 'pool' ? 0 : catalog.tiers[tier].role.connectionLimit;

/**
 * What a change adds to its cluster's committed connections: an onboarding its tier's limit, a
 * promotion the difference between the two tiers' limits (the login role keeps its name and takes the
 * target tier's limit; a pool tenant's role is new).
 */
export const connectionCost = (catalog: TierCatalog, tier: Tier, fromTier?: Tier): number =>
  Math.max(
    0,
    tenantConnectionLimit(catalog, tier) - (fromTier ? tenantConnectionLimit(catalog, fromTier) : 0),
  );

export type ConnectionVerdict = 'within' | 'overcommitted' | 'refused';

/**
 * Admission of a change that adds `cost` connections and brings its cluster's committed connections
 * to `committed`: within the budget; past it but within `budget × overcommit` (an operator's explicit
 * choice, accepted with a warning); or refused. A change that adds nothing is always admitted, even
 * on a cluster already past its budget.
 */
export function judgeConnections(a: {
  budget: number;
  committed: number;
  cost: number;
  overcommit: number;
}): ConnectionVerdict {
  if (a.cost <= 0 || a.committed <= a.budget) return 'within';
  return a.committed <= overcommitCeiling(a.budget, a.overcommit) ? 'overcommitted' : 'refused';
}

/** The most connections a cluster may have committed under an overcommit ratio (Infinity: no ceiling). */
export const overcommitCeiling = (budget: number, overcommit: number): number =>
  Number.isFinite(overcommit) ? Math.floor(budget * overcommit) : Number.POSITIVE_INFINITY;
