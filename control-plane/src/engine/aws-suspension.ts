import { TenantryError } from '../domain/errors.js';
import type { Queryable } from '../domain/queryable.js';
import type { Placement } from '../promotion/placement.js';
import { freezeTenant } from '../providers/postgres/freeze.js';

/**
 * A pool tenant's suspension on the aws target (docs/lifecycle.md): its rows frozen by the freeze
 * guards on the shared cluster (reason `suspended`, no deadline), exactly as on the local target, once
 * every transaction the pool's logins began before has ended; reactivation lifts that freeze and no
 * other. Nothing of it is a Pulumi resource: the pool's stack resources (the tenant's membership) are
 * left as they are, and an `up` of the tenant's stack neither sees nor lifts the freeze.
 *
 * Bridge and silo tenants are not suspended on this target yet: their login roles belong to the stack
 * (the dynamic provider sets LOGIN), so NOLOGIN set beside it would be undone by the next `up` and
 * reported as drift; the stack's config would have to carry the suspension.
 */
export const AWS_SUSPENSION_TIERS = ['pool'] as const;

export function assertAwsSuspension(kind: 'suspend' | 'reactivate', tier: string): void {
  if (!(AWS_SUSPENSION_TIERS as readonly string[]).includes(tier))
    throw new TenantryError(
      'OPERATION_NOT_AVAILABLE_ON_TARGET',
      `${kind === 'suspend' ? 'suspension' : 'reactivation'} of ${tier} tenants is not available on the aws target yet (pool tenants are; docs/aws.md)`,
    );
}

/** Freezes the tenant's pool rows (waits out the older transactions of the pool's logins; kept if that wait times out). */
export function suspendPoolWrites(
  db: Queryable,
  tenantId: string,
  p: Placement,
  waitMs = 15_000,
): Promise<void> {
  return freezeTenant(
    db,
    { schema: p.schema, tenantId, reason: 'suspended', writers: p.writers, waitMs },
    { keepOnTimeout: true },
  );
}

/** Lifts the suspension's freeze of the tenant's pool rows (a freeze for another reason stays). */
export async function resumePoolWrites(db: Queryable, tenantId: string, p: Placement): Promise<void> {
  const { rows } = await db.query<{ ok: boolean }>(
    `SELECT to_regclass('tenantry_meta.frozen_tenants') IS NOT NULL AS ok`,
  );
  if (!rows[0]?.ok) return;
  await db.query(
    `DELETE FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2 AND reason = 'suspended'`,
    [tenantId, p.schema],
  );
}
