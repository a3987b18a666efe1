import { createHash } from 'node:crypto';
import { type Actor, appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import { cancelPromotionCleanup, enqueueOperationJob } from '../db/jobs.js';
import { appendEvent } from '../db/outbox.js';
import {
  activeOperationFor,
  findOperation,
  findTenantAndAuditRead,
  findTenantById,
  findTenantBySlug,
  findTenantDetail,
  insertOperationAndEnqueue,
  insertTenant,
  insertTenantWithOperation,
  type NewTenantRow,
  tenantDetailJson,
} from '../db/repo.js';
import { platformVersion } from '../db/rollouts.js';
import { can, type Role } from '../domain/auth.js';
import { TenantryError } from '../domain/errors.js';
import { newOperationId, newTenantId } from '../domain/ids.js';
import {
  fleetWorkSkipReason,
  limitsRefusal,
  MAX_LABELS,
  mergeLabels,
  mergeLimits,
  tenantSuspended,
} from '../domain/lifecycle.js';
import { assertSlug } from '../domain/naming.js';
import type { ConnectionDescriptor, Engine, PromotionParams } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import {
  type LimitOverrides,
  type Operation,
  type OperationKind,
  type PromotionSummary,
  RELEASE_PROMOTION_SOURCES_STEP,
  rollbackRefusal,
  type Tenant,
} from '../domain/tenant.js';
import type { Tier, TierCatalog } from '../domain/tiers.js';
import { ALLOWED_PROMOTIONS } from '../domain/tiers.js';
import type { ConnectionBudget } from './capacity.js';
import type { ExportService } from './exports.js';

export interface CreateTenantInput {
  slug: string;
  name: string;
  tier: Tier;
  region?: string;
  plan?: string;
  contactEmail?: string;
  labels?: Record<string, string>;
  /** An export to restore into the new tenant (docs/lifecycle.md): its rows, checked first. */
  fromExport?: string;
}

/** PATCH /v1/tenants/{slug}: each field given is set; a label or limit set to null is removed. */
export interface TenantPatch {
  name?: string;
  plan?: string | null;
  contactEmail?: string | null;
  labels?: Record<string, string | null>;
  limits?: { [K in keyof LimitOverrides]?: number | null };
}

export interface RequestContext {
  actor: Actor;
  requestId: string;
}

export interface Accepted {
  status: number;
  body: { tenant: Tenant; operation: Operation };
  replayed: boolean;
}

export const isUniqueViolation = (e: unknown, constraint: string) =>
  (e as { code?: string; constraint?: string }).code === '23505' &&
  (e as { constraint?: string }).constraint === constraint;

function canonicalHash(v: unknown): string {
  const canon = (x: unknown): unknown =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(
          Object.keys(x as object)
            .sort()
            .map((k) => [k, canon((x as Record<string, unknown>)[k])]),
        )
      : x;
  return createHash('sha256')
    .update(JSON.stringify(canon(v)))
    .digest('hex');
}

/** An object with its keys sorted, to compare two label or limit maps. */
const sorted = (o: object): [string, unknown][] =>
  Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

/**
 * The version an `If-Match` names: the tenant's ETag as GET sends it (`"3"`), weak or bare forms
 * accepted. Without one a PATCH is refused (428): a blind write could undo someone else's change.
 */
export function parseIfMatch(h: string | undefined): number {
  if (h === undefined || h.trim() === '')
    throw new TenantryError(
      'PRECONDITION_REQUIRED',
      "send If-Match with the tenant's ETag (its version, from GET /v1/tenants/{slug}) to change it",
    );
  const m = /^\s*(?:W\/)?"?(\d{1,9})"?\s*$/.exec(h);
  if (!m) throw new TenantryError('PRECONDITION_FAILED', 'If-Match must be the tenant\'s ETag, such as "3"');
  return Number(m[1]);
}

/** The ETag of a tenant: its version, quoted. */
export const etagOf = (t: Pick<Tenant, 'version'>): string => `"${t.version}"`;

/** Succeeded promotions of a tenant whose source placement is still kept for rollback. */
async function openPromotionWindows(q: Queryable, tenantId: string): Promise<string[]> {
  const { rows } = await q.query<{ id: string }>(
    `SELECT id FROM operations
      WHERE tenant_id = $1 AND kind = 'promote' AND status = 'succeeded' AND NOT (params ? 'rollbackOf')
        AND NOT (progress ? 'cleanedUp') AND NOT (progress ? 'rolledBack')
      ORDER BY created_at`,
    [tenantId],
  );
  return rows.map((r) => r.id);
}

/**
 * Inserts an operation of a tenant and enqueues its job (with the retries the executor adds to
 * `maxAttempts`); a second operation in flight is 409 OPERATION_IN_PROGRESS (the one-active-per-tenant
 * index refused it).
 */
export function enqueueTenantOperation(
  q: Queryable,
  tenant: Pick<Tenant, 'id' | 'slug'>,
  op: { id?: string; kind: OperationKind; steps: string[]; params?: Record<string, unknown> },
  maxAttempts: number,
): Promise<Operation> {
  return insertOperationAndEnqueue(
    q,
    {
      id: op.id ?? newOperationId(),
      kind: op.kind,
      tenantId: tenant.id,
      tenantSlug: tenant.slug,
      steps: op.steps,
      ...(op.params ? { params: op.params } : {}),
    },
    maxAttempts + 2,
  ).catch((e: unknown) => {
    if (isUniqueViolation(e, 'operations_one_active_per_tenant')) throw operationInProgress(tenant.slug);
    throw e;
  });
}

/** A second operation for a tenant that has one in flight (the one-active-per-tenant index refused it). */
export const operationInProgress = (slug: string): TenantryError =>
  new TenantryError('OPERATION_IN_PROGRESS', `tenant ${slug} already has an operation in flight`);

/**
 * Refuses a new operation while the tenant has one in flight, or has a promotion stopped past its
 * cutover (it holds both placements until it is resumed). Every use case that starts an operation on
 * an existing tenant asks here first.
 */
export async function assertNoActiveOperation(q: Queryable, tenant: Tenant): Promise<void> {
  const active = await activeOperationFor(q, tenant.id);
  if (active)
    throw new TenantryError(
      'OPERATION_IN_PROGRESS',
      `tenant ${tenant.slug} already has operation ${active} in flight`,
      {
        context: { operationId: active },
      },
    );
  // A promotion that failed past its routing flip holds both placements until it is resumed.
  const { rows } = await q.query<{ id: string }>(
    `SELECT id FROM operations WHERE tenant_id = $1 AND kind = 'promote' AND status = 'failed'
        AND (progress ->> 'resumable') = 'true' LIMIT 1`,
    [tenant.id],
  );
  if (rows[0] && tenant.status !== 'offboarded') {
    throw new TenantryError(
      'OPERATION_IN_PROGRESS',
      `tenant ${tenant.slug} has promotion ${rows[0].id} stopped past its cutover; resume it first (POST /v1/operations/${rows[0].id}/resume)`,
      { context: { operationId: rows[0].id } },
    );
  }
}

/** An acceptance whose connection budget, taken last, found an overcommit: redone with it first. */
const OVERCOMMITTED = new Error('the onboarding overcommits the connection budget: redone to record it');

/**
 * Tenant lifecycle use cases. Each one writes its change, enqueues its operation and appends
 * its audit record in one transaction, then returns; the worker does the provisioning.
 */
export class TenantService {
  constructor(
    private readonly db: Db,
    private readonly engine: Engine,
    private readonly opts: {
      templateVersion: number;
      maxAttempts: number;
      /** The data-plane cluster's connection budget (local target); without it nothing is checked. */
      capacity?: ConnectionBudget;
      /** The tiers' limits, the bounds of a tenant's limit overrides (PATCH `limits`). */
      catalog?: TierCatalog;
      /** Exports: an onboarding's restore (`fromExport`) and an offboarding's final export. */
      exports?: ExportService;
    },
  ) {}

  async create(ctx: RequestContext, input: CreateTenantInput, idempotencyKey?: string): Promise<Accepted> {
    assertSlug(input.slug);
    if (!this.engine.supportsTier(input.tier)) {
      throw new TenantryError(
        'TIER_NOT_AVAILABLE_ON_TARGET',
        `the ${input.tier} tier is not available on the ${this.engine.target} target`,
        { context: { tier: input.tier, target: this.engine.target } },
      );
    }
    const hash = canonicalHash(input);
    // An archive is checked end to end before anything is written: a damaged or mismatched one is
    // refused with nothing created.
    const restore =
      input.fromExport === undefined
        ? undefined
        : await this.exportsOrRefuse().prepareRestore(ctx, input.fromExport, input.tier);
    /**
     * One try of the acceptance. The cluster's connection budget row is taken last, just before the
     * commit, so concurrent onboardings queue on it only for that commit, not for the whole of their
     * writes (`admitFirst`: taken before the operation, whose params and audit record then carry an
     * overcommit: the redo when the last-taken sum finds one, and the first try while the cluster's
     * last admission found it past its budget).
     */
    const accept = (admitFirst: boolean) =>
      this.db.tx(async (q) => {
        if (idempotencyKey !== undefined) {
          // Same-key requests queue up here, so the second sees the first's stored response.
          await q.query('SELECT pg_advisory_xact_lock(hashtext($1))', [
            `idem:${ctx.actor.id}:${idempotencyKey}`,
          ]);
          const { rows } = await q.query<{
            request_hash: string;
            status_code: number;
            response: Accepted['body'];
          }>(
            'SELECT request_hash, status_code, response FROM idempotency_keys WHERE token_id = $1 AND key = $2',
            [ctx.actor.id ?? '', idempotencyKey],
          );
          const prior = rows[0];
          if (prior) {
            if (prior.request_hash !== hash) {
              throw new TenantryError(
                'IDEMPOTENCY_KEY_REUSED',
                'this Idempotency-Key was already used with a different body',
              );
            }
            return { status: prior.status_code, body: prior.response, replayed: true };
          }
        }
        const row: NewTenantRow = {
          id: newTenantId(),
          slug: input.slug,
          name: input.name,
          tier: input.tier,
          status: 'provisioning',
          region: input.region ?? null,
          plan: input.plan ?? null,
          contactEmail: input.contactEmail ?? null,
          ...(input.labels ? { labels: input.labels } : {}),
          // A pool tenant's rows live in the shared tables: it is at their version, which moves to the
          // newest as a rollout's first step (docs/rollouts.md); every other tier is built at the newest.
          templateVersion:
            input.tier === 'pool'
              ? Math.min(
                  this.opts.templateVersion,
                  (await platformVersion(q, 'pool')) ?? this.opts.templateVersion,
                )
              : this.opts.templateVersion,
        };
        if (restore && restore.manifest.schemaVersion !== row.templateVersion) {
          throw new TenantryError(
            'EXPORT_INVALID',
            `export ${restore.params.exportId} holds rows at template version ${restore.manifest.schemaVersion}; a new ${row.tier} tenant is at version ${row.templateVersion}: restore it where the versions match (or roll the fleet forward first)`,
          );
        }
        const slugTaken = (e: unknown): never => {
          if (isUniqueViolation(e, 'tenants_live_slug')) {
            throw new TenantryError('TENANT_SLUG_TAKEN', `a tenant with slug ${input.slug} already exists`);
          }
          throw e;
        };
        // The budget's sum counts the tenant row, written before it (a taken slug answers 409 first).
        const change = { slug: row.slug, tier: row.tier, recorded: true, requestId: ctx.requestId };
        const first = admitFirst ? await insertTenant(q, row).catch(slugTaken) : undefined;
        const overcommit = first ? await this.opts.capacity?.admit(q, change) : null;
        const fromExport = restore
          ? {
              exportId: restore.params.exportId,
              fromTenant: restore.export.tenantSlug,
              fromTier: restore.export.tier,
            }
          : undefined;
        const operationId = newOperationId();
        const op = {
          id: operationId,
          kind: 'onboard' as const,
          tenantId: row.id,
          tenantSlug: row.slug,
          steps: [
            ...this.engine.steps('onboard', row.tier),
            ...(restore ? (this.engine.restoreSteps?.(row.tier) ?? []) : []),
          ],
          ...(overcommit || restore
            ? {
                params: {
                  ...(overcommit ? { connectionOvercommit: overcommit } : {}),
                  ...(restore ? { fromExport: { ...restore.params } } : {}),
                },
              }
            : {}),
        };
        const also = {
          audit: {
            actor: ctx.actor,
            action: 'tenant.create',
            tenantId: row.id,
            tenantSlug: row.slug,
            requestId: ctx.requestId,
            operationId,
            details: {
              tier: row.tier,
              plan: row.plan,
              region: row.region,
              ...(overcommit ? { connectionOvercommit: overcommit } : {}),
              ...(fromExport ? { fromExport } : {}),
            },
          },
          event: {
            type: 'tenant.created' as const,
            tenant: { id: row.id, slug: row.slug },
            operationId,
            data: {
              tier: row.tier,
              name: row.name,
              plan: row.plan,
              region: row.region,
              labels: row.labels ?? {},
              ...(fromExport ? { fromExport } : {}),
            },
          },
        };
        // The tenant row, the operation, its job, the audit record and the event: one statement (the
        // redo that takes the budget first: the tenant row, the budget, then the rest).
        const { tenant, operation } = first
          ? {
              tenant: first,
              operation: await insertOperationAndEnqueue(q, op, this.opts.maxAttempts + 2, also),
            }
          : await insertTenantWithOperation(q, row, op, this.opts.maxAttempts + 2, also).catch(slugTaken);
        // Refused (CAPACITY_EXCEEDED) undoes it all; an overcommit is accepted by the redo, which records it.
        if (!admitFirst && (await this.opts.capacity?.admit(q, { ...change, warn: false })))
          throw OVERCOMMITTED;
        const body = { tenant, operation };
        if (idempotencyKey !== undefined) {
          await q.query(
            `INSERT INTO idempotency_keys (token_id, key, request_hash, status_code, response) VALUES ($1, $2, $3, 202, $4::jsonb)`,
            [ctx.actor.id ?? '', idempotencyKey, hash, JSON.stringify(body)],
          );
        }
        return { status: 202, body, replayed: false };
      });
    // A cluster found past its budget last time most likely still is: its overcommit is recorded at once.
    const admitFirst = this.opts.capacity?.overBudget === true;
    return accept(admitFirst).catch((e: unknown) => {
      if (e !== OVERCOMMITTED) throw e;
      return accept(true);
    });
  }

  private exportsOrRefuse(): ExportService {
    if (!this.opts.exports)
      throw new TenantryError(
        'EXPORT_NOT_AVAILABLE_ON_TARGET',
        `exports are not available on the ${this.engine.target} target`,
      );
    return this.opts.exports;
  }

  /**
   * PATCH /v1/tenants/{slug}: name, plan, contact and labels change at once; limit overrides (sre,
   * admin) are validated against the tier's bounds and applied by an `update` operation, after which
   * drift expects them. Optimistic concurrency: `ifMatch` must name the tenant's current version, or
   * 412 PRECONDITION_FAILED. Audited, with a `tenant.updated` event, in the same transaction.
   */
  async update(
    ctx: RequestContext,
    slug: string,
    ifMatch: string | undefined,
    patch: TenantPatch,
  ): Promise<{ tenant: Tenant; operation: Operation | null }> {
    const expected = parseIfMatch(ifMatch);
    if (patch.limits !== undefined && !can(ctx.actor.role as Role, 'tenants:limits'))
      throw new TenantryError(
        'FORBIDDEN',
        `role ${ctx.actor.role} may not tenants:limits (limit overrides are an SRE's)`,
      );
    return this.db.tx(async (q) => {
      const tenant = await findTenantBySlug(q, slug, { forUpdate: true });
      if (!tenant || tenant.status === 'offboarded')
        throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
      if (tenant.version !== expected)
        throw new TenantryError(
          'PRECONDITION_FAILED',
          `tenant ${slug} is at version ${tenant.version}, not ${expected}: re-read it (its ETag) and apply your change again`,
          { context: { version: tenant.version } },
        );
      const changes: Record<string, unknown> = {};
      const next = {
        name: tenant.name,
        plan: tenant.plan,
        contactEmail: tenant.contactEmail,
        labels: tenant.labels,
        limits: tenant.limits,
      };
      if (patch.name !== undefined && patch.name !== tenant.name) next.name = changes.name = patch.name;
      if (patch.plan !== undefined && patch.plan !== tenant.plan) next.plan = changes.plan = patch.plan;
      if (patch.contactEmail !== undefined && patch.contactEmail !== tenant.contactEmail) {
        next.contactEmail = patch.contactEmail;
        changes.contactEmail = patch.contactEmail === null ? null : 'changed';
      }
      if (patch.labels !== undefined) {
        const labels = mergeLabels(tenant.labels, patch.labels);
        if (Object.keys(labels).length > MAX_LABELS)
          throw new TenantryError('VALIDATION_FAILED', `a tenant has at most ${MAX_LABELS} labels`);
        if (JSON.stringify(sorted(labels)) !== JSON.stringify(sorted(tenant.labels)))
          next.labels = changes.labels = labels;
      }
      let operation: Operation | null = null;
      if (patch.limits !== undefined) {
        const limits = mergeLimits(tenant.limits, patch.limits);
        if (JSON.stringify(sorted(limits)) !== JSON.stringify(sorted(tenant.limits))) {
          // The target says which tiers take overrides (engine.lifecycleSteps('update', …) below refuses the others).
          if (!this.engine.lifecycleSteps)
            throw new TenantryError(
              'OPERATION_NOT_AVAILABLE_ON_TARGET',
              `limit overrides are not applied on the ${this.engine.target} target in this build`,
            );
          const catalog = this.opts.catalog;
          if (!catalog) throw new TenantryError('INTERNAL', 'the tier catalog is not configured');
          const refusal = limitsRefusal(tenant.tier, catalog.tiers[tenant.tier].role, limits);
          if (refusal) throw new TenantryError('LIMITS_OUT_OF_BOUNDS', refusal);
          if (tenant.status !== 'active' && tenant.status !== 'suspended')
            throw new TenantryError(
              'TENANT_NOT_ACTIVE',
              `tenant ${slug} is ${tenant.status}; limit overrides are applied to an active or suspended tenant`,
            );
          await this.assertNoActiveOperation(q, tenant);
          next.limits = changes.limits = limits;
          operation = await enqueueTenantOperation(
            q,
            tenant,
            { kind: 'update', steps: this.engine.lifecycleSteps('update', tenant.tier), params: { limits } },
            this.opts.maxAttempts,
          );
        }
      }
      if (Object.keys(changes).length === 0) return { tenant, operation: null };
      await q.query(
        `UPDATE tenants SET name = $2, plan = $3, contact_email = $4, labels = $5::jsonb, limits = $6::jsonb,
                version = version + 1, updated_at = now()
          WHERE id = $1`,
        [
          tenant.id,
          next.name,
          next.plan,
          next.contactEmail,
          JSON.stringify(next.labels),
          JSON.stringify(next.limits),
        ],
      );
      const after = (await findTenantById(q, tenant.id)) ?? tenant;
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'tenant.update',
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        requestId: ctx.requestId,
        operationId: operation?.id ?? null,
        details: { fromVersion: tenant.version, toVersion: after.version, changes },
      });
      await appendEvent(q, {
        type: 'tenant.updated',
        tenant,
        operationId: operation?.id ?? null,
        data: { version: after.version, changed: Object.keys(changes), ...changes },
      });
      return { tenant: after, operation };
    });
  }

  /**
   * A tenant with its operation in flight and its latest promotion (rollback window included), as
   * TenantDetailSchema's JSON: the tenant comes rendered from the columns' text (db/repo.ts), the two
   * small objects are added here. `version` is the tenant's, for the ETag.
   */
  async get(slug: string): Promise<{ json: string; version: number }> {
    const found = await findTenantDetail(this.db.reads, slug);
    if (!found) throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
    const { tenantJson, tier, status, version, activeOperation, promotion } = found;
    const summary: PromotionSummary | null = promotion && {
      operationId: promotion.id,
      fromTier: promotion.fromTier,
      toTier: promotion.toTier,
      cutoverAt: promotion.cutoverAt,
      rollbackUntil: promotion.rollbackUntil,
      rolledBack: promotion.rolledBack,
      // As the rollback request decides (`rollback` below), but for an operation in flight, which
      // activeOperation shows.
      rollbackAvailable:
        this.engine.promotionRollback &&
        rollbackRefusal(promotion, tier, Date.now()) === null &&
        fleetWorkSkipReason({ status }) === null,
    };
    return {
      json: tenantDetailJson(tenantJson, activeOperation, summary),
      version,
    };
  }

  async offboard(
    ctx: RequestContext,
    slug: string,
    confirm: string | undefined,
    opts: { export?: boolean } = {},
  ): Promise<Accepted> {
    if (confirm !== slug) {
      throw new TenantryError(
        'CONFIRMATION_REQUIRED',
        'send the header "Confirm: <slug>" to offboard a tenant',
      );
    }
    return this.db.tx(async (q) => {
      const tenant = await findTenantBySlug(q, slug, { forUpdate: true });
      if (!tenant || tenant.status === 'offboarded')
        throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
      await this.assertNoActiveOperation(q, tenant);
      if (!this.engine.supportsTier(tenant.tier)) {
        throw new TenantryError(
          'TIER_NOT_AVAILABLE_ON_TARGET',
          `the ${tenant.tier} tier is not available on this target`,
        );
      }
      await q.query(`UPDATE tenants SET status = 'offboarding', updated_at = now() WHERE id = $1`, [
        tenant.id,
      ]);
      // Placements a promotion keeps for its rollback window go with the tenant, first.
      const windows = await openPromotionWindows(q, tenant.id);
      for (const id of windows) await cancelPromotionCleanup(q, id);
      const operationId = newOperationId();
      // ?export=true: a final export, written by the first step, kept for its retention (docs/lifecycle.md).
      const finalExport = opts.export
        ? await this.exportsOrRefuse().finalExport(q, tenant, operationId, ctx.actor.id)
        : undefined;
      const params = {
        ...(windows.length > 0 ? { promotionWindows: windows } : {}),
        ...(finalExport ? { finalExport: { ...finalExport } } : {}),
      };
      const operation = await insertOperationAndEnqueue(
        q,
        {
          id: operationId,
          kind: 'offboard',
          tenantId: tenant.id,
          tenantSlug: tenant.slug,
          steps: [
            ...(windows.length > 0 ? [RELEASE_PROMOTION_SOURCES_STEP] : []),
            ...(finalExport ? (this.engine.lifecycleSteps?.('export', tenant.tier) ?? []) : []),
            ...this.engine.steps('offboard', tenant.tier),
          ],
          ...(Object.keys(params).length > 0 ? { params } : {}),
        },
        this.opts.maxAttempts + 2,
      ).catch((e: unknown) => {
        if (isUniqueViolation(e, 'operations_one_active_per_tenant')) throw this.busy(tenant.slug);
        throw e;
      });
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'tenant.offboard',
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        requestId: ctx.requestId,
        operationId: operation.id,
        ...(finalExport ? { details: { finalExport: finalExport.exportId } } : {}),
      });
      const after = await findTenantBySlug(q, slug);
      return { status: 202, body: { tenant: after ?? tenant, operation }, replayed: false };
    });
  }

  /** Accepts a promotion to a stronger tier; the worker moves the data online. */
  async promote(ctx: RequestContext, slug: string, targetTier: Tier): Promise<Accepted> {
    return this.db.tx(async (q) => {
      const tenant = await findTenantBySlug(q, slug, { forUpdate: true });
      if (!tenant || tenant.status === 'offboarded')
        throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
      if (!ALLOWED_PROMOTIONS.some(([a, b]) => a === tenant.tier && b === targetTier)) {
        throw new TenantryError(
          'PROMOTION_NOT_ALLOWED',
          `a ${tenant.tier} tenant cannot be promoted to ${targetTier}; allowed: ${ALLOWED_PROMOTIONS.map(([a, b]) => `${a}→${b}`).join(', ')}`,
        );
      }
      if (!this.engine.supportsTier(targetTier)) {
        throw new TenantryError(
          'TIER_NOT_AVAILABLE_ON_TARGET',
          `the ${targetTier} tier is not available on this target`,
        );
      }
      if (!this.engine.promotionMovesRows) {
        // Routing would flip to a placement without the tenant's rows: refuse rather than split it.
        throw new TenantryError(
          'PROMOTION_NOT_AVAILABLE_ON_TARGET',
          `online promotion is not available on the ${this.engine.target} target yet: it would point the tenant at a new, empty placement while its rows stay behind`,
        );
      }
      await this.assertNoActiveOperation(q, tenant);
      // Promotions refuse a suspended tenant (domain/lifecycle.ts fleetWorkSkipReason, docs/lifecycle.md).
      if (fleetWorkSkipReason(tenant)) throw tenantSuspended(slug, 'a promotion');
      if (tenant.status !== 'active') {
        throw new TenantryError(
          'TENANT_NOT_ACTIVE',
          `tenant ${slug} is ${tenant.status}; only an active tenant can be promoted`,
        );
      }
      const params: PromotionParams = { fromTier: tenant.tier, toTier: targetTier };
      const overcommit = await this.opts.capacity?.admit(q, {
        slug: tenant.slug,
        tier: targetTier,
        fromTier: tenant.tier,
        recorded: false,
        requestId: ctx.requestId,
      });
      const operation = await this.enqueue(q, tenant, 'promote', this.engine.promotionSteps(params), {
        ...params,
        ...(overcommit ? { connectionOvercommit: overcommit } : {}),
      });
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'tenant.promote',
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        requestId: ctx.requestId,
        operationId: operation.id,
        details: { ...params, ...(overcommit ? { connectionOvercommit: overcommit } : {}) },
      });
      return { status: 202, body: { tenant, operation }, replayed: false };
    });
  }

  /** Within the rollback window, moves the tenant back, with the rows written since the cutover. */
  async rollback(ctx: RequestContext, slug: string, operationId: string): Promise<Accepted> {
    return this.db.tx(async (q) => {
      const tenant = await findTenantBySlug(q, slug, { forUpdate: true });
      if (!tenant || tenant.status === 'offboarded')
        throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
      const promo = await findOperation(q, operationId);
      if (!promo || promo.tenantId !== tenant.id || promo.kind !== 'promote' || promo.params.rollbackOf) {
        throw new TenantryError('OPERATION_NOT_FOUND', `no promotion ${operationId} for tenant ${slug}`);
      }
      if (!this.engine.promotionRollback) {
        throw new TenantryError(
          'ROLLBACK_NOT_AVAILABLE_ON_TARGET',
          `promotions cannot be rolled back on the ${this.engine.target} target: the rows written since the cutover would have to move back, which this target does not do`,
        );
      }
      const params = promo.params as unknown as PromotionParams;
      const reason = rollbackRefusal(
        {
          id: operationId,
          status: promo.status,
          toTier: params.toTier,
          rolledBack: Boolean(promo.progress.rolledBack),
          cleanedUp: Boolean(promo.progress.cleanedUp),
          rollbackUntil:
            typeof promo.progress.rollbackUntil === 'string' ? promo.progress.rollbackUntil : null,
        },
        tenant.tier,
        Date.now(),
      );
      if (reason) throw new TenantryError('ROLLBACK_NOT_AVAILABLE', reason);
      if (fleetWorkSkipReason(tenant)) throw tenantSuspended(slug, 'a rollback');
      await this.assertNoActiveOperation(q, tenant);
      const back: PromotionParams = {
        fromTier: params.toTier,
        toTier: params.fromTier,
        rollbackOf: operationId,
        ...(promo.progress.target ? { promotedTo: promo.progress.target as Record<string, unknown> } : {}),
      };
      const operation = await this.enqueue(q, tenant, 'promote', this.engine.promotionSteps(back), {
        ...back,
      });
      // The source must outlive the rollback: its scheduled deletion is cancelled in this transaction.
      await cancelPromotionCleanup(q, operationId);
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'tenant.promotion.rollback',
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        requestId: ctx.requestId,
        operationId: operation.id,
        details: { ...back },
      });
      return { status: 202, body: { tenant, operation }, replayed: false };
    });
  }

  private async enqueue(
    q: Queryable,
    tenant: Tenant,
    kind: 'promote',
    steps: string[],
    params: Record<string, unknown>,
  ): Promise<Operation> {
    return enqueueTenantOperation(q, tenant, { kind, steps, params }, this.opts.maxAttempts);
  }

  private busy(slug: string): TenantryError {
    return operationInProgress(slug);
  }

  private async assertNoActiveOperation(q: Queryable, tenant: Tenant): Promise<void> {
    await assertNoActiveOperation(q, tenant);
  }

  /**
   * Requeues a failed operation from its failed step, when failing did not undo it: an onboarding
   * on an engine that keeps failed onboardings (aws), or a promotion that failed past its routing
   * flip. The job is enqueued and the request audited in the same transaction.
   */
  async resume(ctx: RequestContext, operationId: string): Promise<{ tenant: Tenant; operation: Operation }> {
    return this.db.tx(async (q) => {
      const { rows } = await q.query<{
        id: string;
        kind: string;
        tenant_id: string;
        status: string;
        steps: Operation['steps'];
        params: Record<string, unknown>;
        progress: Record<string, unknown>;
      }>(
        'SELECT id, kind, tenant_id, status, steps, params, progress FROM operations WHERE id = $1 FOR UPDATE',
        [operationId],
      );
      const op = rows[0];
      if (!op) throw new TenantryError('OPERATION_NOT_FOUND', `no operation ${operationId}`);
      const tenant = await findTenantById(q, op.tenant_id);
      if (!tenant) throw new TenantryError('OPERATION_NOT_FOUND', `no operation ${operationId}`);
      if (op.status === 'queued' || op.status === 'running') {
        throw new TenantryError('OPERATION_IN_PROGRESS', `operation ${operationId} is ${op.status} already`, {
          context: { operationId },
        });
      }
      const planned =
        op.kind === 'onboard'
          ? this.engine.steps('onboard', tenant.tier)
          : op.kind === 'promote'
            ? this.engine.promotionSteps(op.params as unknown as PromotionParams)
            : [];
      const undone = op.steps.some((x) => !planned.includes(x.name) && x.status === 'succeeded');
      const resumable =
        op.status === 'failed' &&
        tenant.status !== 'offboarded' &&
        !undone &&
        (op.progress.resumable === true || (op.kind === 'onboard' && !this.engine.rollsBackFailedOnboarding));
      if (!resumable) {
        throw new TenantryError(
          op.status === 'queued' || op.status === 'running'
            ? 'OPERATION_IN_PROGRESS'
            : 'OPERATION_NOT_RESUMABLE',
          op.status === 'failed'
            ? `operation ${operationId} cannot be resumed: its failure was undone (rolled back or aborted); start a new operation`
            : `operation ${operationId} is ${op.status}; only a failed operation that was not undone can be resumed`,
          { context: { operationId, status: op.status } },
        );
      }
      const from = op.steps.find((x) => x.status !== 'succeeded' && planned.includes(x.name))?.name ?? null;
      const steps = op.steps
        .filter((x) => planned.includes(x.name))
        .map((x) =>
          x.status === 'succeeded'
            ? x
            : { name: x.name, status: 'pending' as const, startedAt: null, finishedAt: null },
        );
      await q
        .query(
          `UPDATE operations SET status = 'queued', steps = $2::jsonb, error = NULL, attempts = 0, finished_at = NULL,
                  lease_owner = NULL, lease_expires_at = NULL,
                  progress = (progress - 'resumable') || jsonb_build_object('resumedAt', now()), updated_at = now()
            WHERE id = $1`,
          [operationId, JSON.stringify(steps)],
        )
        .catch((e: unknown) => {
          if (isUniqueViolation(e, 'operations_one_active_per_tenant')) throw this.busy(tenant.slug);
          throw e;
        });
      if (op.kind === 'onboard') {
        await q.query(`UPDATE tenants SET status = 'provisioning', updated_at = now() WHERE id = $1`, [
          tenant.id,
        ]);
      }
      await enqueueOperationJob(q, operationId, this.opts.maxAttempts + 2);
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'operation.resume',
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        requestId: ctx.requestId,
        operationId,
        details: { kind: op.kind, fromStep: from },
      });
      const operation = await findOperation(q, operationId);
      const after = await findTenantById(q, tenant.id);
      return { tenant: after ?? tenant, operation: operation as Operation };
    });
  }

  /**
   * Reads the connection descriptor, then audits the read; a descriptor whose audit record did not
   * commit is not returned. The secret is read before the audit transaction opens, never inside
   * it: the secret store shares the pool, and a transaction waiting on a second connection
   * deadlocks once every connection is held by such a transaction. The audit transaction re-reads
   * the tenant under a share lock and refuses one that stopped being servable meanwhile (an
   * offboarding), so what is returned is what was audited.
   */
  async connection(ctx: RequestContext, slug: string): Promise<ConnectionDescriptor> {
    const tenant = this.servable(slug, await findTenantBySlug(this.db, slug));
    const descriptor = await this.engine.connection({
      id: tenant.id,
      slug: tenant.slug,
      tier: tenant.tier,
      templateVersion: tenant.templateVersion,
    });
    // The tenant read again FOR SHARE and the read audited in one statement (one round trip): the
    // record goes in only if the tenant is still the one read above and still servable.
    const read = await findTenantAndAuditRead(this.db, slug, tenant.id, {
      actor: ctx.actor,
      action: 'tenant.connection.read',
      tenantId: tenant.id,
      tenantSlug: tenant.slug,
      requestId: ctx.requestId,
      details: { secretRef: descriptor.secretRef },
    });
    const now = this.servable(slug, read.tenant);
    // The secret is the routing authority (a promotion flips it before the tenant row says so);
    // what matters here is that the tenant read is still the one being served.
    if (now.id !== tenant.id) {
      const message = `tenant ${slug} changed while its descriptor was read; retry`;
      throw new TenantryError('OPERATION_IN_PROGRESS', message, { retryable: true });
    }
    // The statement's condition is servable's and the id check's: a descriptor is never served unaudited.
    if (!read.audited) throw new Error(`tenant ${slug}: its connection read was not audited`);
    return descriptor;
  }

  /** A tenant whose descriptor may be handed out; otherwise the reason it may not. */
  private servable(slug: string, tenant: Tenant | null): Tenant {
    if (!tenant) throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
    if (tenant.status === 'suspended') {
      throw new TenantryError(
        'TENANT_SUSPENDED',
        `tenant ${slug} is suspended (${tenant.suspension?.reason ?? 'no reason recorded'}); no descriptor is served until it is reactivated`,
        { context: { status: tenant.status } },
      );
    }
    if (tenant.status !== 'active') {
      throw new TenantryError(
        'TENANT_NOT_ACTIVE',
        `tenant ${slug} is ${tenant.status}; connections are served only while it is active`,
        { context: { status: tenant.status } },
      );
    }
    return tenant;
  }

  async operation(id: string): Promise<Operation> {
    const op = await findOperation(this.db, id);
    if (!op) throw new TenantryError('OPERATION_NOT_FOUND', `no operation ${id}`);
    return op;
  }
}
