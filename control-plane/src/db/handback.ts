import type { Queryable } from '../domain/queryable.js';
import { enqueueOperationJob } from './jobs.js';

/**
 * Hands a stopping process's running operations back to the queue at once, instead of leaving them to
 * the lease reaper (`requeueExpiredLeases`, db/runs.ts) once their leases expire. Their jobs are added
 * again under the same key (replacing the held job's), so another worker takes them up now and re-runs
 * the step in flight (every step is idempotent). The runner that let go loses its lease: every write it
 * still makes is fenced, and its heartbeat stops it at the next step. An orderly stop is not a failed
 * attempt, so the attempt it took is given back. A lease is held by one run of a runner
 * (`<runnerId>:<token>`, worker/executor.ts) or by the runner itself: both count as the runner's.
 * Returns the operations handed back.
 */
export async function handBackOperations(
  q: Queryable,
  runnerIds: readonly string[],
  jobMaxAttempts: number,
): Promise<string[]> {
  const { rows } = await q.query<{ id: string }>(
    `UPDATE operations SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
            attempts = greatest(attempts - 1, 0), updated_at = now()
      WHERE status = 'running' AND split_part(lease_owner, ':', 1) = ANY($1::text[])
      RETURNING id`,
    [runnerIds],
  );
  for (const r of rows) await enqueueOperationJob(q, r.id, jobMaxAttempts);
  return rows.map((r) => r.id);
}
