import type { PromotionParams } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import type { Tier } from '../domain/tiers.js';

/** The control-database SQL of a promotion's lifecycle after its steps: cutover, cleanup, orphans. */

export interface PromotionRecord {
  params: PromotionParams;
  progress: Record<string, unknown>;
}

/** A promotion of `tenantId`, whatever its status. */
export async function findPromotion(
  q: Queryable,
  id: string,
  tenantId: string,
): Promise<PromotionRecord | null> {
  const { rows } = await q.query<PromotionRecord & Record<string, unknown>>(
    `SELECT params, progress FROM operations WHERE id = $1 AND tenant_id = $2 AND kind = 'promote'`,
    [id, tenantId],
  );
  return rows[0] ?? null;
}

/** A succeeded promotion, with whether its tenant has an operation in flight (`busy`). */
export async function findSucceededPromotion(
  q: Queryable,
  id: string,
): Promise<(PromotionRecord & { tenant_id: string; busy: boolean }) | null> {
  const { rows } = await q.query<
    PromotionRecord & { tenant_id: string; busy: boolean } & Record<string, unknown>
  >(
    `SELECT o.tenant_id, o.params, o.progress,
            EXISTS (SELECT 1 FROM operations x WHERE x.tenant_id = o.tenant_id AND x.status IN ('queued', 'running')) AS busy
       FROM operations o WHERE o.id = $1 AND o.kind = 'promote' AND o.status = 'succeeded'`,
    [id],
  );
  return rows[0] ?? null;
}

/** Promotions still in flight, with their status. */
export async function activePromotions(q: Queryable): Promise<{ id: string; status: string }[]> {
  const { rows } = await q.query<{ id: string; status: string }>(
    `SELECT id, status FROM operations WHERE kind = 'promote' AND status IN ('queued', 'running')`,
  );
  return rows;
}

/** Merges into a promotion's progress, unfenced (a cleanup runs outside the operation's lease). */
export async function mergePromotionProgress(
  q: Queryable,
  id: string,
  patch: Record<string, unknown>,
): Promise<void> {
  await q.query(`UPDATE operations SET progress = progress || $2::jsonb WHERE id = $1`, [
    id,
    JSON.stringify(patch),
  ]);
}

/** Records that a promotion's source placement is gone; `by` names the operation that deleted it, if not its cleanup. */
export async function markSourceDeleted(q: Queryable, id: string, by?: string): Promise<void> {
  if (by === undefined) {
    await q.query(`UPDATE operations SET progress = progress || '{"cleanedUp": true}'::jsonb WHERE id = $1`, [
      id,
    ]);
    return;
  }
  await q.query(
    `UPDATE operations SET progress = progress || jsonb_build_object('cleanedUp', true, 'cleanedUpBy', $2::text) WHERE id = $1`,
    [id, by],
  );
}

/** Records that a promotion was rolled back. */
export async function markRolledBack(q: Queryable, id: string): Promise<void> {
  await q.query(`UPDATE operations SET progress = progress || '{"rolledBack": true}'::jsonb WHERE id = $1`, [
    id,
  ]);
}

/** Moves a tenant to its new tier; the tier output the placement reported goes with the old one. */
export async function setTenantTier(q: Queryable, tenantId: string, tier: Tier): Promise<void> {
  await q.query(
    `UPDATE tenants SET tier = $2, outputs = outputs - 'tier', updated_at = now() WHERE id = $1`,
    [tenantId, tier],
  );
}
