import { type Actor, appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import { findTenantById, findTenantBySlug, insertOperationAndEnqueue } from '../db/repo.js';
import { findLoginRotation, POOL_SUBJECT } from '../db/rotations.js';
import { TenantryError } from '../domain/errors.js';
import { newOperationId } from '../domain/ids.js';
import { tenantObjectName } from '../domain/naming.js';
import type { Engine } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import { type Rotation, type RotationParams, rotationGraceMs } from '../domain/rotation.js';
import type { Tenant } from '../domain/tenant.js';
import type { TierCatalog } from '../domain/tiers.js';
import {
  type Accepted,
  assertNoActiveOperation,
  isUniqueViolation,
  operationInProgress,
  type RequestContext,
} from './tenants.js';

/** The old login's grace period when a tier has no rotation policy and the request names none. */
export const DEFAULT_GRACE_MS = 60 * 60_000;

/** Who starts scheduled rotations and retires, in the audit log. */
export const SCHEDULER_ACTOR: Actor = { id: null, name: 'tenantry-scheduler', role: 'system' };

/**
 * Credential and key rotation use cases: each one checks the tenant, writes its `rotate` operation,
 * enqueues its job and appends its audit record in one transaction, then returns; the worker rotates.
 * The API and the schedule (rotation/schedule.ts) both come through here.
 *
 * A bridge or silo tenant's rotation changes its own logins. A pool tenant's credentials are the
 * pool's shared login: rotating them rotates that login, for every pool tenant (one such rotation at a
 * time, whichever pool tenant it is recorded on). A rotation waits for the tenant's other operations
 * (a promotion, say) and they wait for it: one operation per tenant at a time.
 */
export class CredentialService {
  constructor(
    private readonly db: Db,
    private readonly engine: Engine,
    private readonly catalog: TierCatalog,
    private readonly opts: { maxAttempts: number },
  ) {}

  /** A new password on the tenant's idle login; the old one keeps working for `graceMs` (default: the tier's). */
  rotateCredentials(
    ctx: RequestContext,
    slug: string,
    opts: { graceMs?: number; reason?: 'api' | 'schedule' } = {},
  ): Promise<Accepted> {
    return this.db.tx(async (q) => {
      const tenant = await this.activeTenant(q, slug);
      return this.request(q, ctx, tenant, 'password', opts);
    });
  }

  /** The tenant's data key replaced, its secrets re-encrypted under the new one. */
  rotateKey(ctx: RequestContext, slug: string): Promise<Accepted> {
    return this.db.tx(async (q) => {
      const tenant = await this.activeTenant(q, slug);
      return this.request(q, ctx, tenant, 'key', { reason: 'api' });
    });
  }

  /**
   * The scheduler's: retires the old login of a group whose grace period is over, on `tenantId`: the
   * tenant whose own logins rotated, or a pool tenant for the pool's shared login.
   */
  retire(ctx: RequestContext, tenantId: string): Promise<Accepted> {
    return this.db.tx(async (q) => {
      const tenant = await findTenantById(q, tenantId);
      if (tenant?.status !== 'active')
        throw new TenantryError('TENANT_NOT_ACTIVE', `tenant ${tenantId} is not active`);
      return this.request(q, ctx, tenant, 'retire', { reason: 'schedule' });
    });
  }

  private async activeTenant(q: Queryable, slug: string): Promise<Tenant> {
    const tenant = await findTenantBySlug(q, slug, { forUpdate: true });
    if (!tenant || tenant.status === 'offboarded')
      throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
    return tenant;
  }

  private async request(
    q: Queryable,
    ctx: RequestContext,
    tenant: Tenant,
    rotate: Rotation,
    opts: { graceMs?: number; reason?: 'api' | 'schedule' },
  ): Promise<Accepted> {
    if (!this.engine.rotationSteps || tenant.tier === 'account') {
      throw new TenantryError(
        'ROTATION_NOT_AVAILABLE_ON_TARGET',
        `credentials and keys are not rotated by Tenantry on the ${this.engine.target} target${tenant.tier === 'account' ? ' for the account tier' : ''}: use the rotation of Secrets Manager and KMS`,
      );
    }
    if (tenant.status !== 'active') {
      throw new TenantryError(
        'TENANT_NOT_ACTIVE',
        `tenant ${tenant.slug} is ${tenant.status}; only an active tenant's credentials are rotated`,
      );
    }
    await assertNoActiveOperation(q, tenant);
    const subject = rotate !== 'key' && tenant.tier === 'pool' ? 'pool' : 'tenant';
    const params: RotationParams = {
      rotate,
      subject,
      reason: opts.reason ?? 'api',
      ...(rotate === 'password'
        ? {
            graceMs:
              opts.graceMs ??
              (this.catalog.tiers[tenant.tier].rotation
                ? rotationGraceMs(this.catalog.tiers[tenant.tier].rotation!)
                : DEFAULT_GRACE_MS),
          }
        : {}),
    };
    if (rotate === 'password')
      await this.assertNotInGrace(q, subject === 'pool' ? POOL_SUBJECT : tenant.id, tenant);
    const steps = this.engine.rotationSteps(params);
    const operation = await insertOperationAndEnqueue(
      q,
      {
        id: newOperationId(),
        kind: 'rotate',
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        steps,
        params: { ...params },
      },
      this.opts.maxAttempts + 2,
    ).catch((e: unknown) => {
      if (isUniqueViolation(e, 'operations_one_active_per_tenant')) throw operationInProgress(tenant.slug);
      if (isUniqueViolation(e, 'operations_one_active_pool_rotation'))
        throw new TenantryError(
          'OPERATION_IN_PROGRESS',
          "a rotation of the pool's shared login is already in flight (pool tenants share it)",
        );
      throw e;
    });
    await appendAudit(q, {
      actor: ctx.actor,
      action:
        rotate === 'key'
          ? 'tenant.key.rotate'
          : `tenant.credentials.${rotate === 'retire' ? 'retire' : 'rotate'}`,
      tenantId: tenant.id,
      tenantSlug: tenant.slug,
      requestId: ctx.requestId,
      operationId: operation.id,
      details: {
        subject,
        ...(subject === 'tenant' && rotate !== 'key' ? { group: tenantObjectName(tenant.slug) } : {}),
        ...(params.graceMs !== undefined ? { graceMs: params.graceMs } : {}),
        reason: params.reason,
      },
    });
    return { status: 202, body: { tenant, operation }, replayed: false };
  }

  /**
   * A new password goes on the idle login, which is the old login of the previous rotation: not before
   * that one's grace period is over, or an application still using it would be locked out.
   */
  private async assertNotInGrace(q: Queryable, subject: string, tenant: Tenant): Promise<void> {
    const last = await findLoginRotation(q, subject);
    if (!last?.previous || last.retiredAt || !last.graceUntil) return;
    const { rows } = await q.query<{ over: boolean }>('SELECT $1::timestamptz <= now() AS over', [
      last.graceUntil,
    ]);
    if (rows[0]?.over) return; // the rotation retires it first
    throw new TenantryError(
      'CREDENTIALS_IN_GRACE',
      `${subject === POOL_SUBJECT ? "the pool's shared login" : `tenant ${tenant.slug}`} rotated at ${last.rotatedAt.toISOString()} and its old login ${last.previous} keeps working until ${last.graceUntil.toISOString()}; rotate again after that`,
      { context: { graceUntil: last.graceUntil.toISOString() } },
    );
  }
}
