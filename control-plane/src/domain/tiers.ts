import type { RoleLimits } from '../providers/postgres/types.js';

export const TIERS = ['pool', 'bridge', 'silo', 'account'] as const;
export type Tier = (typeof TIERS)[number];

export interface RdsSettings {
  instanceClass: string;
  allocatedStorageGb: number;
  backupRetentionDays: number;
  engineVersion: string;
}

export interface TierDefinition {
  description: string;
  role: RoleLimits;
  rds?: RdsSettings;
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
