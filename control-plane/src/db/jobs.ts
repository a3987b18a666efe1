import type { Queryable } from '../domain/queryable.js';

/**
 * The job-queue SQL of promotion cleanups, against graphile-worker's functions (and, where it has
 * no function for the question, its private jobs table). One job per promotion, keyed by
 * `cleanupJobKey`, so scheduling twice replaces and cancelling needs only the promotion's id.
 */

/** graphile-worker's task that deletes a promotion's source placement once its rollback window ends. */
export const PROMOTION_CLEANUP_TASK = 'promotion-cleanup';

const CLEANUP_KEY_PREFIX = 'cleanup:';

/** The job key of a promotion's cleanup: the one spelling of it. */
export function cleanupJobKey(promotionId: string): string {
  return `${CLEANUP_KEY_PREFIX}${promotionId}`;
}

/** A cleanup retries for a long time: the tenant may be busy with other operations until then. */
const CLEANUP_MAX_ATTEMPTS = 25;

/** Schedules the deletion of a promotion's source for `runAt` (the end of its rollback window). */
export async function schedulePromotionCleanup(
  q: Queryable,
  promotionId: string,
  runAt: string,
): Promise<void> {
  await q.query(
    `SELECT graphile_worker.add_job($1, json_build_object('operationId', $2::text), run_at := $3::timestamptz,
            job_key := $4, max_attempts := $5::int)`,
    [PROMOTION_CLEANUP_TASK, promotionId, runAt, cleanupJobKey(promotionId), CLEANUP_MAX_ATTEMPTS],
  );
}

/** Cancels a promotion's scheduled cleanup (a rollback, or an offboarding that deletes it itself). */
export async function cancelPromotionCleanup(q: Queryable, promotionId: string): Promise<void> {
  await q.query('SELECT graphile_worker.remove_job($1)', [cleanupJobKey(promotionId)]);
}

/**
 * Enqueues, to run now, the cleanup of every succeeded promotion whose rollback window is over and
 * whose source is still there, unless a job for it waits unlocked already. This catches cleanups
 * whose job died with its worker: graphile-worker keeps a crashed worker's job locked for hours.
 */
export async function enqueueOverdueCleanups(q: Queryable): Promise<void> {
  await q.query(
    `SELECT graphile_worker.add_job($1, json_build_object('operationId', o.id), job_key := $2 || o.id, max_attempts := $3::int)
       FROM operations o
      WHERE o.kind = 'promote' AND o.status = 'succeeded' AND NOT (o.params ? 'rollbackOf')
        AND NOT (o.progress ? 'cleanedUp') AND NOT (o.progress ? 'rolledBack')
        AND (o.progress->>'rollbackUntil')::timestamptz < now() - interval '1 second'
        AND NOT EXISTS (SELECT 1 FROM graphile_worker._private_jobs j
                         WHERE j.key = $2 || o.id AND j.locked_at IS NULL)`,
    [PROMOTION_CLEANUP_TASK, CLEANUP_KEY_PREFIX, CLEANUP_MAX_ATTEMPTS],
  );
}
