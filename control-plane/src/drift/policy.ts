import type { Tier } from '../domain/tiers.js';
import type { DriftMode, DriftPolicyLevel, EffectivePolicy, Finding } from './types.js';

export interface PolicyRow extends DriftPolicyLevel {
  tier: Tier | null;
  tenantId: string | null;
}

/** Without any policy row, a sweep only reports: remediation is opted into. */
export const DEFAULT_MODE: DriftMode = 'report';

/**
 * Resolves the effective policy of a tenant: its own level, then its tier's, then the global
 * default; the first level that sets a mode wins, ignored fields add up across levels.
 */
export class PolicyBook {
  private readonly global: DriftPolicyLevel | undefined;
  private readonly tiers = new Map<Tier, DriftPolicyLevel>();
  private readonly tenants = new Map<string, DriftPolicyLevel>();

  constructor(rows: PolicyRow[]) {
    let global: DriftPolicyLevel | undefined;
    for (const r of rows) {
      const level = { mode: r.mode, ignoreFields: r.ignoreFields };
      if (r.tenantId) this.tenants.set(r.tenantId, level);
      else if (r.tier) this.tiers.set(r.tier, level);
      else global = level;
    }
    this.global = global;
  }

  /** `tenant` null resolves the platform's policy: the pool tier's, then the global default. */
  resolve(tenant: { id: string; tier: Tier } | null): EffectivePolicy {
    const levels = [
      tenant ? this.tenants.get(tenant.id) : undefined,
      this.tiers.get(tenant ? tenant.tier : 'pool'),
      this.global,
    ].filter((l): l is DriftPolicyLevel => l !== undefined);
    return {
      mode: levels.find((l) => l.mode !== null)?.mode ?? DEFAULT_MODE,
      ignoreFields: [...new Set(levels.flatMap((l) => l.ignoreFields))],
    };
  }
}

/**
 * An ignore entry is `resource.field` (`role.connectionLimit`), `resource.*`, or a prefix ending in
 * `*` (`table.privileges:*`).
 */
export function isIgnored(f: Pick<Finding, 'resource' | 'field'>, ignore: readonly string[]): boolean {
  const key = `${f.resource}.${f.field}`;
  return ignore.some((e) => (e.endsWith('*') ? key.startsWith(e.slice(0, -1)) : e === key));
}

export const IGNORE_PATTERN = '^[a-z-]+\\.([A-Za-z_:*.-]*[A-Za-z_*]|\\*)$';
