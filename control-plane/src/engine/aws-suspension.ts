import { OWN_LOGIN_TIERS } from '../../../stacks/common/input.js';
import { TenantryError } from '../domain/errors.js';
import type { LifecycleStep } from '../domain/lifecycle.js';
import type { Queryable } from '../domain/queryable.js';
import type { Tier } from '../domain/tiers.js';
import type { Placement } from '../promotion/placement.js';
import { freezeTenant, frozenFor, unfreezeTenantFor } from '../providers/postgres/freeze.js';

/**
 * A tenant's suspension and limit overrides on the aws target (docs/aws.md, docs/lifecycle.md).
 *
 * Pool: its rows frozen by the freeze guards on the shared cluster (reason `suspended`, no deadline),
 * exactly as on the local target, once every transaction the pool's logins began before has ended;
 * reactivation lifts that freeze and no other. Nothing of it is a Pulumi resource: an `up` of the
 * tenant's stack neither sees nor lifts the freeze.
 *
 * Bridge, silo and account: their login role belongs to the stack (the dynamic provider sets LOGIN and
 * the limits), so the suspension and the overrides are the stack's own state: every job carries the
 * tenant's recorded state (engine/pulumi/job.ts), the program makes the role NOLOGIN while suspended
 * and gives it the overrides, and these steps are `up`s of the stack (a suspension's then ends the
 * role's open sessions; an account tenant's on the silo instance inside its account, whose master
 * secret is read there through the role the account was vended with). A NOLOGIN set beside the stack
 * would be undone by its next `up`. Limit overrides exist only for those tiers (OWN_LOGIN_TIERS).
 *
 * The steps of a suspension, a reactivation or a limit change on this target (domain/lifecycle.ts names).
 */
export function awsTenantStateSteps(kind: 'suspend' | 'reactivate' | 'update', tier: Tier): LifecycleStep[] {
  if (kind === 'update') {
    if (!OWN_LOGIN_TIERS.includes(tier))
      throw new TenantryError(
        'OPERATION_NOT_AVAILABLE_ON_TARGET',
        `limit overrides apply to a tenant's own login role (bridge, silo, account); a ${tier} tenant has none`,
      );
    return ['limits'];
  }
  if (tier === 'pool') return [kind === 'suspend' ? 'suspend-writes' : 'resume-writes'];
  return [kind === 'suspend' ? 'suspend-logins' : 'resume-logins'];
}

/**
 * Whether a step's `up` runs the tenant suspended: a suspension's yes, a reactivation's no (the tenant is
 * recorded suspended until it succeeds), any other run as the tenant's record says.
 */
export function suspendedForStep(kind: string, recorded: boolean | undefined): boolean {
  if (kind === 'suspend') return true;
  if (kind === 'reactivate') return false;
  return recorded === true;
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
export function resumePoolWrites(db: Queryable, tenantId: string, p: Placement): Promise<void> {
  return unfreezeTenantFor(db, p.schema, tenantId, 'suspended');
}

/** Which of `tenantIds` have their pool rows frozen for a suspension (what aws drift expects of a suspended pool tenant). */
export function suspensionFreezes(
  db: Queryable,
  schema: string,
  tenantIds: readonly string[],
): Promise<string[]> {
  return frozenFor(db, schema, 'suspended', tenantIds);
}
