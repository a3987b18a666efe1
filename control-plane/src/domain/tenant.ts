import type { Tier } from './tiers.js';

export const TENANT_STATUSES = ['provisioning', 'active', 'failed', 'offboarding', 'offboarded'] as const;
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
  createdAt: string;
  updatedAt: string;
}

export const OPERATION_KINDS = ['onboard', 'offboard', 'promote', 'reconcile'] as const;
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
