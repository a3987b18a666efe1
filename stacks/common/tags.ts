import type { Tier } from '../../control-plane/src/domain/tiers.js';

export const TAG_TENANT_ID = 'tenantry:tenant-id';
export const TAG_TIER = 'tenantry:tier';
export const TAG_MANAGED_BY = 'tenantry:managed-by';
export const MANAGED_BY = 'tenantry';

/** The tags every Tenantry resource carries; the policy pack requires them. */
export const REQUIRED_TAGS = [TAG_TENANT_ID, TAG_TIER, TAG_MANAGED_BY] as const;

export type TenantTags = Record<string, string>;

export function tenantTags(tenantId: string, tier: Tier): TenantTags {
  return { [TAG_TENANT_ID]: tenantId, [TAG_TIER]: tier, [TAG_MANAGED_BY]: MANAGED_BY };
}
