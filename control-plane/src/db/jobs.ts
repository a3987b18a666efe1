import type { Queryable } from '../domain/queryable.js';

/**
 * The job-queue SQL, against graphile-worker's functions (and, where it has no function for the
 * question, its private jobs table): every `add_job` of the control plane is here. Each job is
 * keyed, so enqueuing twice replaces rather than runs twice.
 */

/** graphile-worker's task that runs an operation (`worker/index.ts`). */
export const RUN_OPERATION_TASK = 'run-operation';

/**
 * The SQL call that enqueues an operation's job, over the given SQL expressions (parameters or
 * columns), for a caller that must add it inside a larger statement (one round trip). The job is
 * keyed by the operation id, so a second enqueue replaces it rather than running it twice.
 */
export const addOperationJobSql = (task: string, operationId: string, maxAttempts: string): string =>
  `graphile_worker.add_job(${task}, json_build_object('operationId', ${operationId}::text), job_key := ${operationId}::text, max_attempts := ${maxAttempts}::int)`;

/** Enqueues (or re-enqueues, replacing a dead job's key) an operation's job. */
export async function enqueueOperationJob(
  q: Queryable,
  operationId: string,
  maxAttempts: number,
): Promise<void> {
  await q.query(`SELECT ${addOperationJobSql('$1', '$2', '$3')}`, [
    RUN_OPERATION_TASK,
    operationId,
    maxAttempts,
  ]);
}

/** graphile-worker's task that runs a drift sweep (API requests and the cron tick). */
export const DRIFT_SWEEP_TASK = 'drift-sweep';

/** Enqueues the sweep of a requested drift run, keyed by the run's id. */
export async function enqueueDriftRun(q: Queryable, runId: string): Promise<void> {
  await q.query(
    `SELECT graphile_worker.add_job($1, json_build_object('runId', $2::text), job_key := $3, max_attempts := 10)`,
    [DRIFT_SWEEP_TASK, runId, `drift-run:${runId}`],
  );
}

/*
 * Promotion cleanups: one job per promotion, keyed by `cleanupJobKey`, so scheduling twice
 * replaces and cancelling needs only the promotion's id.
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

/** graphile-worker's task that drives a fleet schema rollout (rollout/runner.ts). */
export const ROLLOUT_RUN_TASK = 'rollout-run';
/** graphile-worker's cron task that re-enqueues the runs of rollouts still running (after a crash). */
export const ROLLOUT_RESUME_TASK = 'rollout-resume';

/**
 * Enqueues the run of a rollout, keyed by its id. Re-adding the key replaces a waiting job, and
 * clears the key of one a crashed worker still holds locked (graphile-worker keeps it for hours), so
 * a restarted process picks the rollout up; the runner's session lock keeps a second run from driving it.
 */
export async function enqueueRolloutRun(q: Queryable, rolloutId: string): Promise<void> {
  await q.query(
    `SELECT graphile_worker.add_job($1, json_build_object('rolloutId', $2::text), job_key := $3, max_attempts := 25)`,
    [ROLLOUT_RUN_TASK, rolloutId, `rollout:${rolloutId}`],
  );
}

/*
 * Lifecycle events and webhooks (db/outbox.ts, webhooks/): the outbox's publisher, each webhook
 * stream's delivery, and the sweep that catches what a crashed worker left behind.
 */

/**
 * graphile-worker's task that publishes committed events (gives them their `seq`) and fans them out to
 * webhooks. Events now wake the publisher by notification (db/outbox.ts EVENTS_CHANNEL); the task stays
 * for the jobs an earlier version queued.
 */
export const EVENTS_PUBLISH_TASK = 'events-publish';
/** graphile-worker's task that delivers one webhook stream's pending deliveries, in order. */
export const WEBHOOK_DELIVER_TASK = 'webhook-deliver';
/** graphile-worker's cron task: publishes stragglers, re-enqueues stalled streams, expires exports. */
export const LIFECYCLE_SWEEP_TASK = 'lifecycle-sweep';

/** The job key of a webhook stream's delivery: the one spelling of it (`<prefix><webhook>:<stream>`). */
export const WEBHOOK_STREAM_KEY_PREFIX = 'whd:';
export const webhookStreamJobKey = (webhookId: string, stream: string): string =>
  `${WEBHOOK_STREAM_KEY_PREFIX}${webhookId}:${stream}`;

/**
 * Enqueues the delivery of webhook streams, keyed per stream (a second enqueue replaces a waiting job),
 * to run at `runAt` (now when null). Each is given as `[webhookId, stream]`.
 */
export async function enqueueWebhookStreams(
  q: Queryable,
  streams: readonly (readonly [string, string])[],
  runAt: Date | null = null,
): Promise<void> {
  if (streams.length === 0) return;
  await q.query(
    `SELECT ${deliverJobSql('s.w', 's.s', '$3::timestamptz')} FROM unnest($1::text[], $2::text[]) AS s(w, s)`,
    [streams.map((x) => x[0]), streams.map((x) => x[1]), runAt?.toISOString() ?? null],
  );
}

/** The add_job call of one webhook stream's delivery job, keyed by `webhookStreamJobKey`'s spelling (SQL expressions in). */
export const deliverJobSql = (webhookId: string, stream: string, runAt: string): string =>
  `graphile_worker.add_job('${WEBHOOK_DELIVER_TASK}', json_build_object('webhookId', ${webhookId}, 'stream', ${stream}),
     run_at := ${runAt}, job_key := '${WEBHOOK_STREAM_KEY_PREFIX}' || ${webhookId} || ':' || ${stream}, max_attempts := 5)`;

/**
 * Enqueues the delivery of every stream with a delivery due and no waiting job: what a worker killed
 * mid-delivery left (graphile-worker keeps a dead worker's job locked for hours; the stream's own lease
 * expires much sooner). Returns how many it enqueued.
 */
export async function enqueueStalledWebhookStreams(q: Queryable): Promise<number> {
  const { rows } = await q.query<{ n: number }>(
    `WITH due AS (
       SELECT DISTINCT d.webhook_id, d.stream FROM webhook_deliveries d
         JOIN webhooks w ON w.id = d.webhook_id AND w.status = 'enabled'
        WHERE d.status = 'pending' AND d.next_attempt_at <= now()
          AND NOT EXISTS (SELECT 1 FROM graphile_worker._private_jobs j
                           WHERE j.key = '${WEBHOOK_STREAM_KEY_PREFIX}' || d.webhook_id || ':' || d.stream AND j.locked_at IS NULL))
     SELECT count(${deliverJobSql('webhook_id', 'stream', 'NULL')})::int AS n FROM due`,
  );
  return rows[0]?.n ?? 0;
}
