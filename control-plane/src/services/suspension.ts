import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import { findTenantById, findTenantBySlug } from '../db/repo.js';
import { TenantryError } from '../domain/errors.js';
import { type SuspensionReason, suspensionRoleRefusal } from '../domain/lifecycle.js';
import type { Engine } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import type { Tenant } from '../domain/tenant.js';
import {
  type Accepted,
  assertNoActiveOperation,
  enqueueTenantOperation,
  type RequestContext,
} from './tenants.js';

/**
 * Suspension and reactivation (docs/lifecycle.md). A suspended tenant keeps every row and the data plane
 * cannot use it: the control plane stops handing out its descriptor the moment the suspension commits
 * (409 TENANT_SUSPENDED), and a `suspend` operation cuts the data plane off (bridge and silo: every
 * login NOLOGIN, its sessions ended; pool: its rows frozen in the database). A reactivation gives back
 * exactly what was taken; the tenant is `active` again once its `reactivate` operation has done so.
 *
 * Who: sre and admin for any reason; sales-ops for non-payment only, and may lift only such a
 * suspension (domain/lifecycle.ts `suspensionRoleRefusal`).
 */
export class SuspensionService {
  constructor(
    private readonly db: Db,
    private readonly engine: Engine,
    private readonly opts: { maxAttempts: number },
  ) {}

  private assertAvailable(tenant: Tenant): void {
    if (!this.engine.lifecycleSteps)
      throw new TenantryError(
        'OPERATION_NOT_AVAILABLE_ON_TARGET',
        `suspension is not available on the ${this.engine.target} target in this build`,
      );
    // The target says which tiers it suspends (the local target has no account tier; the aws target suspends every tier).
    this.engine.lifecycleSteps('suspend', tenant.tier);
  }

  /**
   * Suspends a tenant (or re-applies a standing suspension, with a new reason: what a drift finding
   * on a suspended tenant calls for). 202 with the `suspend` operation.
   */
  suspend(
    ctx: RequestContext,
    slug: string,
    body: { reason: SuspensionReason; note?: string },
  ): Promise<Accepted> {
    return this.db.tx(async (q) => {
      const tenant = await this.live(q, slug);
      const refusal =
        suspensionRoleRefusal(ctx.actor.role, body.reason) ??
        (tenant.suspension ? suspensionRoleRefusal(ctx.actor.role, tenant.suspension.reason) : null);
      if (refusal) throw new TenantryError('FORBIDDEN', refusal);
      this.assertAvailable(tenant);
      if (tenant.status !== 'active' && tenant.status !== 'suspended')
        throw new TenantryError(
          'TENANT_NOT_ACTIVE',
          `tenant ${slug} is ${tenant.status}; only an active tenant can be suspended`,
        );
      await assertNoActiveOperation(q, tenant);
      await q.query(
        `UPDATE tenants SET status = 'suspended', version = version + 1, updated_at = now(),
                suspension = jsonb_build_object('reason', $2::text, 'note', $3::text, 'at', now(), 'by', $4::text)
          WHERE id = $1`,
        [tenant.id, body.reason, body.note ?? null, ctx.actor.name],
      );
      const operation = await this.enqueue(q, tenant, 'suspend', {
        reason: body.reason,
        ...(tenant.status === 'suspended' ? { reapplied: true } : {}),
      });
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'tenant.suspend',
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        requestId: ctx.requestId,
        operationId: operation.id,
        details: { reason: body.reason, note: body.note ?? null, reapplied: tenant.status === 'suspended' },
      });
      return { status: 202, body: { tenant: await this.reread(q, tenant), operation }, replayed: false };
    });
  }

  /** Reactivates a suspended tenant. 202 with the `reactivate` operation; `active` once it succeeded. */
  reactivate(ctx: RequestContext, slug: string): Promise<Accepted> {
    return this.db.tx(async (q) => {
      const tenant = await this.live(q, slug);
      if (tenant.status !== 'suspended')
        throw new TenantryError('TENANT_NOT_SUSPENDED', `tenant ${slug} is ${tenant.status}, not suspended`);
      const refusal = suspensionRoleRefusal(ctx.actor.role, tenant.suspension?.reason ?? 'other');
      if (refusal) throw new TenantryError('FORBIDDEN', refusal);
      this.assertAvailable(tenant);
      await assertNoActiveOperation(q, tenant);
      const logins = await this.suspendedLogins(q, tenant);
      await q.query('UPDATE tenants SET version = version + 1, updated_at = now() WHERE id = $1', [
        tenant.id,
      ]);
      const operation = await this.enqueue(q, tenant, 'reactivate', {
        reason: tenant.suspension?.reason ?? null,
        ...(tenant.tier === 'pool' ? {} : { logins }),
      });
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'tenant.reactivate',
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        requestId: ctx.requestId,
        operationId: operation.id,
        details: { reason: tenant.suspension?.reason ?? null, ...(tenant.tier === 'pool' ? {} : { logins }) },
      });
      return { status: 202, body: { tenant: await this.reread(q, tenant), operation }, replayed: false };
    });
  }

  private async live(q: Queryable, slug: string): Promise<Tenant> {
    const tenant = await findTenantBySlug(q, slug, { forUpdate: true });
    if (!tenant || tenant.status === 'offboarded')
      throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
    return tenant;
  }

  private async reread(q: Queryable, t: Tenant): Promise<Tenant> {
    return (await findTenantById(q, t.id)) ?? t;
  }

  /**
   * The logins the suspension took LOGIN from: what every `suspend` operation since the last
   * reactivation recorded before cutting them off (a re-applied suspension finds them cut off already,
   * so the first one's record counts). Without any record (a suspension that failed before recording),
   * the login the tenant's descriptor names.
   */
  private async suspendedLogins(q: Queryable, tenant: Tenant): Promise<string[]> {
    if (tenant.tier === 'pool') return [];
    const { rows } = await q.query<{ logins: string[] | null }>(
      `SELECT array(
         SELECT DISTINCT l FROM operations o CROSS JOIN LATERAL jsonb_array_elements_text(coalesce(o.progress->'disabledLogins', '[]'::jsonb)) AS l
          WHERE o.tenant_id = $1 AND o.kind = 'suspend'
            AND o.created_at > coalesce((SELECT max(r.created_at) FROM operations r
                                          WHERE r.tenant_id = $1 AND r.kind = 'reactivate' AND r.status = 'succeeded'),
                                        '-infinity'::timestamptz)
          ORDER BY l) AS logins`,
      [tenant.id],
    );
    const logins = rows[0]?.logins ?? [];
    if (logins.length > 0) return logins;
    return typeof tenant.outputs.user === 'string' ? [tenant.outputs.user] : [];
  }

  private enqueue(
    q: Queryable,
    tenant: Tenant,
    kind: 'suspend' | 'reactivate',
    params: Record<string, unknown>,
  ) {
    const steps = this.engine.lifecycleSteps?.(kind, tenant.tier) ?? [];
    return enqueueTenantOperation(q, tenant, { kind, steps, params }, this.opts.maxAttempts);
  }
}
