import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import { cancelPromotionCleanup, enqueueOverdueCleanups, schedulePromotionCleanup } from '../db/jobs.js';
import {
  activePromotions,
  findPromotion,
  findSucceededPromotion,
  markRolledBack,
  markSourceDeleted,
  mergePromotionProgress,
  setTenantTier,
} from '../db/promotions.js';
import { findTenantById } from '../db/repo.js';
import { raiseTemplateVersion } from '../db/rollouts.js';
import { WORKER_ACTOR } from '../db/runs.js';
import { type Engine, type PromotionParams, stepTenantOf } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import type { Tenant } from '../domain/tenant.js';

export { PROMOTION_CLEANUP_TASK } from '../db/jobs.js';

/** Records, with its audit entry, that a promotion's source placement is gone (`by`: an offboarding). */
async function sourceDeleted(
  q: Queryable,
  tenant: Tenant,
  operationId: string,
  params: PromotionParams,
  by?: string,
): Promise<void> {
  await markSourceDeleted(q, operationId, by);
  await appendAudit(q, {
    actor: WORKER_ACTOR,
    action: 'tenant.promotion.source-deleted',
    tenantId: tenant.id,
    tenantSlug: tenant.slug,
    operationId,
    details: { fromTier: params.fromTier, ...(by ? { by } : {}) },
  });
}

/**
 * A promotion's life once its steps are done: the cutover is recorded and the deletion of its
 * source scheduled after the rollback window (or, for a rollback, cancelled); the deletion itself;
 * offboarding's early deletion inside a window; and the sweep of what crashed promotions left.
 * The executor runs the steps; this is the rest.
 */
export class PromotionLifecycle {
  constructor(
    private readonly db: Db,
    private readonly engine: Engine,
  ) {}

  /**
   * Records a promotion's cutover in the caller's transaction (the one that marks the operation
   * succeeded): the tier changes, the source's deletion is scheduled at the end of the rollback
   * window (a rollback cancels the deletion of the promotion it undoes instead), and it is audited.
   */
  async recordCutover(
    q: Queryable,
    op: { id: string; params: PromotionParams; progress: Record<string, unknown> },
    tenant: Tenant,
  ): Promise<void> {
    const { params, progress } = op;
    await setTenantTier(q, tenant.id, params.toTier);
    // The template version both placements are at (provision brought the source to the target's).
    if (typeof progress.templateVersion === 'number')
      await raiseTemplateVersion(q, tenant.id, progress.templateVersion);
    if (params.rollbackOf) {
      await cancelPromotionCleanup(q, params.rollbackOf);
      await markRolledBack(q, params.rollbackOf);
    } else {
      await schedulePromotionCleanup(q, op.id, String(progress.rollbackUntil ?? new Date().toISOString()));
    }
    await appendAudit(q, {
      actor: WORKER_ACTOR,
      action: params.rollbackOf ? 'tenant.promotion.rolled-back' : 'tenant.promotion.cutover',
      tenantId: tenant.id,
      tenantSlug: tenant.slug,
      operationId: op.id,
      details: {
        fromTier: params.fromTier,
        toTier: params.toTier,
        writeFreezeMs: progress.writeFreezeMs ?? null,
        ...(params.rollbackOf
          ? { rollbackOf: params.rollbackOf }
          : { rollbackUntil: progress.rollbackUntil }),
      },
    });
  }

  /**
   * Offboarding inside promotions' rollback windows: their source placements go first, through the
   * engine's cleanup (the same one the window's end runs), and each promotion is marked cleaned up
   * by the offboarding operation `byOperationId`.
   */
  async releaseSources(
    tenant: Tenant,
    promotionIds: readonly string[],
    byOperationId: string,
  ): Promise<void> {
    for (const id of promotionIds) {
      const promo = await findPromotion(this.db, id, tenant.id);
      if (!promo || promo.progress.cleanedUp || promo.progress.rolledBack) continue;
      await this.engine.cleanupPromotion(stepTenantOf(tenant), promo.params, id);
      await this.db.tx(async (q) => {
        await cancelPromotionCleanup(q, id);
        await sourceDeleted(q, tenant, id, promo.params, byOperationId);
      });
    }
  }

  /**
   * Deletes a promotion's source placement once its rollback window is over, unless it was rolled
   * back, whatever the tenant's tier is by then (a later promotion may have moved it on; the engine
   * never deletes the placement the tenant is routed to). Serialized with the tenant's operations:
   * with one in flight, it waits for a later retry; two runs of one cleanup never overlap.
   */
  async cleanup(operationId: string): Promise<void> {
    const r = await findSucceededPromotion(this.db, operationId);
    if (!r || r.progress.rolledBack || r.progress.cleanedUp) return;
    if (r.busy) throw new Error('tenant has an operation in flight; cleanup retries later');
    const tenant = await findTenantById(this.db, r.tenant_id);
    if (!tenant || tenant.status === 'offboarded') return;
    // Another run of this cleanup under way holds the lock: this one simply ends.
    await this.db.withSessionLock(`tenantry.cleanup.${operationId}`, async () => {
      await this.engine.cleanupPromotion(stepTenantOf(tenant), r.params, operationId, (patch) =>
        mergePromotionProgress(this.db, operationId, patch),
      );
      await this.db.tx((q) => sourceDeleted(q, tenant, operationId, r.params));
    });
  }

  /**
   * Replication slots and publications left by crashed or finished promotions; the slot of a
   * promotion waiting for a retry once it holds more WAL than the limit; and cleanups whose job
   * died with its worker (graphile-worker keeps a crashed worker's job locked for hours).
   * Returns the names of what the engine dropped.
   */
  async sweepOrphans(): Promise<string[]> {
    const rows = await activePromotions(this.db);
    // The data plane may be unreachable (an aws shared cluster, its secret): cleanups are still scheduled.
    const dropped = await this.engine
      .sweepPromotionOrphans(
        rows.map((r) => r.id),
        rows.filter((r) => r.status === 'queued').map((r) => r.id),
      )
      .then(
        (names) => ({ names }),
        (error: unknown) => ({ error }),
      );
    await enqueueOverdueCleanups(this.db);
    if ('error' in dropped) throw dropped.error;
    return dropped.names;
  }
}
