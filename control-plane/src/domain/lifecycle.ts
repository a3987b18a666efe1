import { TenantryError } from './errors.js';
import type { LimitOverrides, Tenant, TenantStatus } from './tenant.js';
import type { RoleLimits, Tier } from './tiers.js';

/**
 * A tenant's second day (docs/lifecycle.md): its limit overrides, its suspension and reactivation, its
 * export and its restore into a new tenant. Plain rules and names; the SQL, the data plane and the
 * archive live elsewhere (services/, engine/local-resources.ts, export/).
 */

/* ---- operations and their steps */

/** The operation kinds this file gives steps to (domain/tenant.ts OPERATION_KINDS has them all). */
export const LIFECYCLE_KINDS = ['update', 'suspend', 'reactivate', 'export'] as const;
export type LifecycleKind = (typeof LIFECYCLE_KINDS)[number];

/**
 * Every lifecycle step the local target runs (engine/local.ts):
 * - `limits`: a tenant's limit overrides set on each of its logins (an `update` operation);
 * - `suspend-logins` / `resume-logins`: a bridge or silo tenant's logins made NOLOGIN with their sessions
 *   ended, and given back exactly the LOGIN they had;
 * - `suspend-writes` / `resume-writes`: a pool tenant's rows frozen by the freeze guards, and thawed;
 * - `export`: the tenant's tables written to one archive (an `export` operation, or an offboarding's
 *   first step with `?export=true`);
 * - `restore`, `verify-restore`: an onboarding from an archive, its rows loaded and then read back and
 *   compared with the archive's manifest.
 */
export const LIFECYCLE_STEPS = [
  'limits',
  'suspend-logins',
  'resume-logins',
  'suspend-writes',
  'resume-writes',
  'export',
  'restore',
  'verify-restore',
] as const;
export type LifecycleStep = (typeof LIFECYCLE_STEPS)[number];
export const isLifecycleStep = (step: string): step is LifecycleStep =>
  (LIFECYCLE_STEPS as readonly string[]).includes(step);

/** The steps of a lifecycle operation on a tier (the local target: every tier but account). */
export function lifecycleSteps(kind: LifecycleKind, tier: Tier): LifecycleStep[] {
  const shared = tier === 'pool';
  switch (kind) {
    case 'update':
      return ['limits'];
    case 'suspend':
      return [shared ? 'suspend-writes' : 'suspend-logins'];
    case 'reactivate':
      return [shared ? 'resume-writes' : 'resume-logins'];
    case 'export':
      return ['export'];
    default: {
      const unknown: never = kind;
      throw new Error(`unknown lifecycle kind ${unknown}`);
    }
  }
}

/** The steps an onboarding from an archive adds after its provisioning steps. */
export const RESTORE_STEPS: LifecycleStep[] = ['restore', 'verify-restore'];

/* ---- suspension */

/**
 * Why a tenant is suspended. `non-payment` is the one a sales-ops token may set and lift: billing is
 * its work, a suspension destroys nothing and is undone by a reactivation, and the others (abuse, a
 * security incident) are an SRE's call that sales-ops must not be able to lift.
 */
export const SUSPENSION_REASONS = ['non-payment', 'abuse', 'security', 'requested', 'other'] as const;
export type SuspensionReason = (typeof SUSPENSION_REASONS)[number];
export const SALES_OPS_SUSPENSION_REASON: SuspensionReason = 'non-payment';

/** Why `role` may not set (or lift) a suspension for `reason`, or null when it may. */
export function suspensionRoleRefusal(role: string, reason: string): string | null {
  if (role !== 'sales-ops' || reason === SALES_OPS_SUSPENSION_REASON) return null;
  return `role sales-ops may suspend and reactivate a tenant for non-payment only; this suspension's reason is ${reason} (ask an SRE)`;
}

export const isSuspended = (t: { status: TenantStatus | string }): boolean => t.status === 'suspended';

/**
 * The one predicate fleet rollouts and promotions ask: why a tenant is left out of fleet work, or null
 * when it is not. A suspended tenant is skipped (rollouts: a ledger row `skipped` with this note) or
 * refused (a promotion: 409 TENANT_SUSPENDED); it catches up after its reactivation.
 */
export function fleetWorkSkipReason(t: { status: TenantStatus | string }): string | null {
  return isSuspended(t) ? 'the tenant is suspended: reactivate it first' : null;
}

/** The refusal of an operation a suspended tenant may not start (a promotion, a rollback). */
export function tenantSuspended(slug: string, what: string): TenantryError {
  return new TenantryError(
    'TENANT_SUSPENDED',
    `tenant ${slug} is suspended; ${what} is refused until it is reactivated (DELETE /v1/tenants/${slug}/suspension)`,
  );
}

/* ---- limit overrides */

/** The floor of each timeout override: below a second, a tenant could hardly run a statement. */
export const MIN_TIMEOUT_MS = 1000;

/**
 * Why these overrides are refused for a tenant of `tier` whose tier allows `tierLimits`, or null. An
 * override may only lower what the tier allows (the connection budget counts the tier's limit, and a
 * zero timeout would mean none): connectionLimit 1..tier, each timeout MIN_TIMEOUT_MS..tier. The pool
 * has no login of a tenant's own to set them on.
 */
export function limitsRefusal(tier: Tier, tierLimits: RoleLimits, o: LimitOverrides): string | null {
  if (Object.keys(o).length === 0) return null;
  // An account tenant's login is its silo's, inside its account (the local target has no account tier).
  if (tier === 'pool')
    return `limit overrides apply to a tenant's own login roles (bridge, silo, account); a ${tier} tenant has none`;
  const bounds: [keyof LimitOverrides, number, number][] = [
    ['connectionLimit', 1, tierLimits.connectionLimit],
    ['statementTimeoutMs', MIN_TIMEOUT_MS, tierLimits.statementTimeoutMs],
    ['idleInTransactionSessionTimeoutMs', MIN_TIMEOUT_MS, tierLimits.idleInTransactionSessionTimeoutMs],
  ];
  const out: string[] = [];
  for (const [key, min, max] of bounds) {
    const v = o[key];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < min || v > max)
      out.push(`${key} must be between ${min} and ${max} on the ${tier} tier`);
  }
  return out.length > 0 ? out.join('; ') : null;
}

/** What a tenant's logins get: its tier's limits with its overrides on top. */
export function effectiveLimits(tierLimits: RoleLimits, o: LimitOverrides | undefined): RoleLimits {
  return {
    connectionLimit: o?.connectionLimit ?? tierLimits.connectionLimit,
    statementTimeoutMs: o?.statementTimeoutMs ?? tierLimits.statementTimeoutMs,
    idleInTransactionSessionTimeoutMs:
      o?.idleInTransactionSessionTimeoutMs ?? tierLimits.idleInTransactionSessionTimeoutMs,
  };
}

/** A PATCH's limits applied to the stored overrides: a number sets one, null removes it. */
export function mergeLimits(
  current: LimitOverrides,
  patch: { [K in keyof LimitOverrides]?: number | null },
): LimitOverrides {
  const out: LimitOverrides = { ...current };
  for (const [k, v] of Object.entries(patch) as [keyof LimitOverrides, number | null | undefined][]) {
    if (v === undefined) continue;
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

/* ---- labels */

/** A label key: lowercase, a DNS-label-like word, optionally prefixed (`team`, `billing/plan`). */
export const LABEL_KEY_PATTERN = '^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$';
/** A label value: printable, no spaces at the ends, up to 200 characters. */
export const LABEL_VALUE_PATTERN = '^[A-Za-z0-9._:/@+=-]([A-Za-z0-9 ._:/@+=-]{0,198}[A-Za-z0-9._:/@+=-])?$';
export const MAX_LABELS = 32;

/** A PATCH's labels applied to the stored ones: a string sets one, null removes it. */
export function mergeLabels(
  current: Record<string, string>,
  patch: Record<string, string | null>,
): Record<string, string> {
  const out = { ...current };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

/* ---- operations' params */

/** An `export` operation's params (or an offboarding's `finalExport`). */
export interface ExportParams {
  exportId: string;
  /** The archive's path on the local target's data directory. */
  file: string;
}

/** An onboarding from an archive: `params.fromExport`. */
export interface RestoreParams {
  exportId: string;
  file: string;
  /** The manifest's SHA-256 as verified when the request was accepted (the archive must not change). */
  manifestSha256: string;
}

export const isExportParams = (v: unknown): v is ExportParams =>
  !!v &&
  typeof v === 'object' &&
  typeof (v as ExportParams).exportId === 'string' &&
  typeof (v as ExportParams).file === 'string';

export const isRestoreParams = (v: unknown): v is RestoreParams =>
  isExportParams(v) && typeof (v as RestoreParams).manifestSha256 === 'string';

/** The tenant fields an event or a step needs, nothing secret. */
export const tenantSummary = (t: Tenant) => ({ id: t.id, slug: t.slug, tier: t.tier, status: t.status });
