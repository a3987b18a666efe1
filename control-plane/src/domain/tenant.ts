import type { Tier } from './tiers.js';

/** `suspended`: every row kept, the data plane cannot use it (domain/lifecycle.ts, docs/lifecycle.md). */
export const TENANT_STATUSES = [
  'provisioning',
  'active',
  'failed',
  'offboarding',
  'offboarded',
  'suspended',
] as const;
export type TenantStatus = (typeof TENANT_STATUSES)[number];

export interface Tenant {
  id: string;
  slug: string;
  name: string;
  tier: Tier;
  status: TenantStatus;
  region: string | null;
  plan: string | null;
  contactEmail: string | null;
  templateVersion: number;
  /** Non-secret outputs of provisioning (key id, secret ref, database, schema, user). Never a password. */
  outputs: Record<string, string | number | boolean | null>;
  /** Bumped by every change of what an operator asked for (PATCH, suspension, reactivation): the ETag. */
  version: number;
  /** Key/value pairs rollouts and the CLI select by. */
  labels: Record<string, string>;
  /** Per-tenant role limit overrides within the tier's bounds (bridge and silo); empty: the tier's. */
  limits: LimitOverrides;
  /** Why and since when the tenant is suspended; null unless it is. */
  suspension: Suspension | null;
  createdAt: string;
  updatedAt: string;
}

/** Role limits a tenant overrides (each within its tier's bounds: domain/lifecycle.ts). */
export interface LimitOverrides {
  connectionLimit?: number;
  statementTimeoutMs?: number;
  idleInTransactionSessionTimeoutMs?: number;
}

export interface Suspension {
  reason: string;
  note: string | null;
  at: string;
  by: string | null;
}

/** `migrate`: a tenant's schema brought to a newer template version by a rollout (docs/rollouts.md). */
/** `rotate`: a tenant's (or the pool's) credentials or data key rotated (domain/rotation.ts). */
/**
 * `update`: a tenant's limit overrides applied; `suspend`, `reactivate`: its data plane cut off and
 * restored; `export`: its data written to an archive (domain/lifecycle.ts, docs/lifecycle.md).
 */
export const OPERATION_KINDS = [
  'onboard',
  'offboard',
  'promote',
  'reconcile',
  'migrate',
  'rotate',
  'update',
  'suspend',
  'reactivate',
  'export',
] as const;
export type OperationKind = (typeof OPERATION_KINDS)[number];

export const OPERATION_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type OperationStatus = (typeof OPERATION_STATUSES)[number];
export const ACTIVE_OPERATION_STATUSES: readonly OperationStatus[] = ['queued', 'running'];

export type StepStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'skipped';

export interface OperationStep {
  name: string;
  status: StepStatus;
  startedAt: string | null;
  finishedAt: string | null;
  error?: string;
  /** The error's stable code (domain/errors.ts) when the step failed with one of the API's errors. */
  errorCode?: string;
}

export interface Operation {
  id: string;
  kind: OperationKind;
  tenantId: string;
  tenantSlug: string;
  status: OperationStatus;
  steps: OperationStep[];
  error?: string;
  attempts: number;
  params: Record<string, unknown>;
  progress: Record<string, unknown>;
  currentStep: string | null;
  createdAt: string;
  updatedAt: string;
}

/**
 * The first step of an offboarding inside a promotion's rollback window: the promotion's source
 * placement (`params.promotionWindows` lists those promotions) is deleted with the tenant.
 */
export const RELEASE_PROMOTION_SOURCES_STEP = 'promotion-sources';

/** A tenant's operation in flight (queued or running), as GET /v1/tenants/{slug} shows it. */
export interface OperationInFlight {
  id: string;
  kind: OperationKind;
  status: OperationStatus;
  currentStep: string | null;
}

/** A tenant's latest completed promotion (not a rollback) and where its rollback window stands. */
export interface PromotionSummary {
  operationId: string;
  fromTier: Tier;
  toTier: Tier;
  cutoverAt: string | null;
  rollbackUntil: string | null;
  rolledBack: boolean;
  /**
   * Whether POST …/promotions/{operationId}/rollback would be accepted now: the window open, not
   * rolled back, the tenant still on toTier and not suspended, and a target that rolls back. (An
   * operation in flight, shown as the tenant's activeOperation, makes it wait.)
   */
  rollbackAvailable: boolean;
}

export interface TenantDetail extends Tenant {
  activeOperation: OperationInFlight | null;
  promotion: PromotionSummary | null;
}

/**
 * Why a promotion cannot be rolled back now, or null when it can (on a target that rolls back):
 * it must have succeeded, not been rolled back, kept its source (window open, not cleaned up) and
 * the tenant must still be on the tier it moved to. The one rule for the rollback request and for
 * the tenant view's `rollbackAvailable`.
 */
export function rollbackRefusal(
  promo: {
    id: string;
    status: OperationStatus;
    toTier: Tier;
    rolledBack: boolean;
    cleanedUp: boolean;
    rollbackUntil: string | null;
  },
  tenantTier: Tier,
  now: number,
): string | null {
  const until = Date.parse(promo.rollbackUntil ?? '');
  if (promo.status !== 'succeeded')
    return `promotion ${promo.id} is ${promo.status}; only a completed promotion can be rolled back`;
  if (promo.rolledBack) return 'this promotion was already rolled back';
  if (promo.cleanedUp || Number.isNaN(until) || until < now)
    return 'the rollback window has closed and the source placement was (or is being) deleted';
  if (tenantTier !== promo.toTier) return `the tenant is no longer on ${promo.toTier}`;
  return null;
}
