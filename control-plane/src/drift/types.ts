import type { ReconcileStep } from '../domain/steps.js';
import type { LimitOverrides } from '../domain/tenant.js';
import type { Tier } from '../domain/tiers.js';

/**
 * Drift vocabulary, shared by every target. A finding names one field of one resource that
 * differs from what Tenantry provisioned (or one object nobody should have).
 */
export const DRIFT_KINDS = ['missing', 'unexpected', 'changed'] as const;
export type DriftKind = (typeof DRIFT_KINDS)[number];

/**
 * Why a finding matters: plain state drift, a broken isolation guarantee, or an orphaned object; or
 * not drift at all: `pending-rollout`, a tenant (or the pool's shared tables) behind the newest
 * template version, which a rollout brings forward (docs/rollouts.md). Never remediated.
 */
export const DRIFT_CATEGORIES = ['state', 'isolation', 'orphan', 'pending-rollout'] as const;
export type DriftCategory = (typeof DRIFT_CATEGORIES)[number];

/** The resource types findings are reported against (the `resource` label of the metric). */
export const DRIFT_RESOURCES = [
  'key',
  'secret',
  'role',
  'database',
  'schema',
  'table',
  'policy',
  'default-privileges',
  'pool-membership',
  'freeze',
  'stack',
] as const;
export type DriftResource = (typeof DRIFT_RESOURCES)[number];

export type DriftValue = string | number | boolean | string[] | null;

export interface Finding {
  /** Null for platform-level resources (the pool tables, the pool role) and orphans of no tenant. */
  tenantId: string | null;
  tenantSlug: string | null;
  resource: DriftResource;
  /** The object's identity, e.g. `tenantry_data.tenant_acme.users`, `tenant_acme`, `tenantry/acme/connection`. */
  name: string;
  kind: DriftKind;
  /** The field that differs, e.g. `rlsForced`, `connectionLimit`, `privileges:PUBLIC`, `exists`. */
  field: string;
  desired: DriftValue;
  actual: DriftValue;
  category: DriftCategory;
  /**
   * Platform findings only: the tiers whose tenants it affects (the pool's tables and login role:
   * `pool`; the shared database: `pool` and `bridge`; the owner role of every tenant object: all).
   * A tenant's drift view includes the platform findings of its tier.
   */
  affects?: Tier[];
}

export type DriftMode = 'report' | 'remediate';

/** A policy level (global default, a tier, or a tenant): an unset mode inherits from the level above. */
export interface DriftPolicyLevel {
  mode: DriftMode | null;
  /** `resource.field` (e.g. `role.connectionLimit`) or `resource.*`; matching findings are not reported. */
  ignoreFields: string[];
}

export interface EffectivePolicy {
  mode: DriftMode;
  ignoreFields: string[];
}

/** A tenant the sweep judges: what the control plane recorded about it. */
export interface TenantRecord {
  id: string;
  slug: string;
  tier: Tier;
  status: string;
  templateVersion: number;
  outputs: Record<string, unknown>;
  /** Its role limit overrides (bridge, silo): expected state, on top of its tier's (docs/lifecycle.md). */
  limits?: LimitOverrides;
}

export interface SkippedTenant {
  tenantId: string;
  slug: string;
  reason: 'in-flight-operation' | 'tenant-status' | 'tier-not-on-target';
  detail: string;
}

/**
 * The port a target implements to find drift in batch. The local target reads the data-plane
 * catalogs (drift/local.ts); the aws target will add `preview({ refresh: true })` per stack with
 * bounded concurrency, mapped through `findingsFromPreview` (drift/pulumi.ts).
 */
export interface DriftDetector {
  readonly target: 'local' | 'aws';
  /**
   * One batched observation of the whole fleet, diffed against the desired state. `snapshot` reads
   * the control plane's view; a detector calls it after observing, so that a tenant whose operation
   * ran meanwhile is seen as busy rather than drifted.
   */
  detect(snapshot: () => Promise<DetectInput>): Promise<DetectResult>;
}

export interface DetectInput {
  /** Tenants to judge (active, not in mid-operation). */
  tenants: TenantRecord[];
  /** Tenants whose objects exist legitimately but are not judged (in flight): never orphans. */
  busy: ReadonlySet<string>;
  /** Every tenant the control plane knows, offboarded ones included, to attribute orphans. */
  known: TenantRecord[];
  /** Tenants whose earlier placements are kept for promotions' rollback windows: tenant id → tiers. */
  retained: ReadonlyMap<string, ReadonlySet<Tier>>;
}

export interface DetectResult {
  /** The snapshot the findings were judged against. */
  input: DetectInput;
  findings: Finding[];
  /** Checks the detector could not make (the credentials check without pg_authid, say), with why. */
  notChecked?: { check: string; reason: string }[];
  /** Milliseconds per phase (catalog reads, diff), for the run report. */
  timings: Record<string, number>;
}

/**
 * Repairs findings with the same providers as provisioning (local target) or a Pulumi `up` (aws).
 * A tenant's repair is a `reconcile` operation run by the executor: `plan` names its steps, and the
 * executor runs each through `runStep`, which must be idempotent (a crash re-runs the step in flight).
 * The platform's own resources (tenant null: the pool tables and roles) are repaired by the sweep.
 */
export interface DriftRemediator {
  /** Whether remediation can act on a finding at all (the rest stays reported). */
  remediable(f: Finding): boolean;
  /** The step names that repair these findings, in order; empty when nothing can be done. */
  plan(tenant: TenantRecord | null, findings: Finding[]): ReconcileStep[];
  /** Runs one planned step (a name read back from the operation's record, so checked at run time). */
  runStep(
    tenant: TenantRecord | null,
    step: string,
    findings: Finding[],
    ctx?: { signal?: AbortSignal; operationId?: string },
  ): Promise<void>;
}

/** A finding's key within a tenant, to tell after a re-observe whether it is gone. */
export const findingKey = (f: Pick<Finding, 'tenantId' | 'resource' | 'name' | 'field'>): string =>
  `${f.tenantId ?? '-'}|${f.resource}|${f.name}|${f.field}`;
