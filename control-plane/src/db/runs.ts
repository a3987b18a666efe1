import { type NamedStatement, named, type Queryable } from '../domain/queryable.js';
import type { OperationKind, OperationStep, TenantStatus } from '../domain/tenant.js';
import { eventCtes, type NewEvent } from './outbox.js';

/**
 * The SQL of running operations: claiming one with a lease, recording its progress and its end.
 * Every write that a runner makes on an operation's behalf is fenced by the lease (`lease_owner`):
 * a runner that lost it changes nothing.
 */

/** Who the worker is in the audit log. */
export const WORKER_ACTOR = { id: null, name: 'tenantry-worker', role: 'system' };

/** An operation as a runner claims it, with its tenant's row (null if the tenant is gone). */
export interface ClaimedOperation {
  id: string;
  kind: OperationKind;
  tenant_id: string;
  steps: OperationStep[];
  attempts: number;
  created_at: Date;
  tenant: Record<string, unknown> | null;
  params: Record<string, unknown>;
  progress: Record<string, unknown>;
  /** The lease's holder: this run's own token (every write of the run is fenced by it). */
  owner: string;
}

const leaseFor = (param: string) => `now() + make_interval(secs => ${param}::double precision / 1000)`;

/**
 * Takes an operation for `runnerId` (the executor passes a token of its own per run) and counts an
 * attempt, if it is queued, or running under an expired lease or this same owner's. Null when it is
 * finished or a live run holds it.
 */
const CLAIM: NamedStatement = {
  name: 'tenantry.claim_operation',
  text: `UPDATE operations
        SET status = 'running', attempts = attempts + 1, lease_owner = $2,
            lease_expires_at = ${leaseFor('$3')}, updated_at = now()
      WHERE id = $1 AND (status = 'queued' OR (status = 'running' AND (lease_expires_at < now() OR lease_owner = $2)))
      RETURNING id, kind, tenant_id, steps, attempts, created_at, params, progress,
                (SELECT to_jsonb(t) FROM tenants t WHERE t.id = operations.tenant_id) AS tenant`,
};

export async function claimOperation(
  q: Queryable,
  id: string,
  runnerId: string,
  leaseMs: number,
): Promise<ClaimedOperation | null> {
  const { rows } = await q.query<Omit<ClaimedOperation, 'owner'> & Record<string, unknown>>(named(CLAIM), [
    id,
    runnerId,
    leaseMs,
  ]);
  const row = rows[0];
  return row ? ({ ...row, owner: runnerId } as ClaimedOperation) : null;
}

const EXTEND_LEASE: NamedStatement = {
  name: 'tenantry.extend_lease',
  text: `UPDATE operations SET lease_expires_at = ${leaseFor('$3')}
      WHERE id = $1 AND lease_owner = $2 AND status = 'running'`,
};

/** The heartbeat: false when the runner no longer holds the lease. */
export async function extendLease(
  q: Queryable,
  id: string,
  runnerId: string,
  leaseMs: number,
): Promise<boolean> {
  const { rowCount } = await q.query(named(EXTEND_LEASE), [id, runnerId, leaseMs]);
  return (rowCount ?? 0) > 0;
}

/**
 * Checks, in the caller's transaction on the operation's row, that `runnerId` still holds the lease,
 * and extends it.
 */
export async function holdLease(
  q: Queryable,
  id: string,
  runnerId: string,
  leaseMs: number,
): Promise<boolean> {
  const { rows } = await q.query<{ lease_owner: string | null; status: string }>(
    'SELECT lease_owner, status FROM operations WHERE id = $1 FOR UPDATE',
    [id],
  );
  if (rows[0]?.lease_owner !== runnerId || rows[0]?.status !== 'running') return false;
  await q.query(`UPDATE operations SET lease_expires_at = ${leaseFor('$2')} WHERE id = $1`, [id, leaseMs]);
  return true;
}

/** Step progress, and a step's outputs merged into its tenant's, in one statement. */
const SAVE_STEPS: NamedStatement = {
  name: 'tenantry.save_steps',
  text: `WITH o AS (UPDATE operations SET steps = $3::jsonb, updated_at = now() WHERE id = $1 AND lease_owner = $2 RETURNING 1)
     UPDATE tenants SET outputs = jsonb_strip_nulls(outputs || $5::jsonb), updated_at = now()
      WHERE id = $4 AND $5::jsonb <> '{}'::jsonb AND EXISTS (SELECT 1 FROM o)`,
};

export async function saveSteps(
  q: Queryable,
  id: string,
  runnerId: string,
  steps: OperationStep[],
  tenantId: string,
  outputs: Record<string, unknown> | undefined,
): Promise<void> {
  await q.query(named(SAVE_STEPS), [
    id,
    runnerId,
    JSON.stringify(steps),
    tenantId,
    JSON.stringify(outputs ?? {}),
  ]);
}

/** Merges into an operation's progress. */
export async function mergeProgress(
  q: Queryable,
  id: string,
  runnerId: string,
  patch: Record<string, unknown>,
): Promise<void> {
  await q.query(
    `UPDATE operations SET progress = progress || $3::jsonb, updated_at = now() WHERE id = $1 AND lease_owner = $2`,
    [id, runnerId, JSON.stringify(patch)],
  );
}

/** Hands an operation back to the queue (a retry with backoff follows), releasing the lease. */
export async function requeueOperation(
  q: Queryable,
  id: string,
  runnerId: string,
  steps: OperationStep[],
): Promise<void> {
  await q.query(
    `UPDATE operations SET status = 'queued', steps = $3::jsonb, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
      WHERE id = $1 AND lease_owner = $2`,
    [id, runnerId, JSON.stringify(steps)],
  );
}

/**
 * An operation's end in one statement, so one round trip and its own transaction outside one: the
 * operation succeeds, its tenant takes `tenantStatus` (a reactivation's suspension record cleared),
 * the audit record `operation.<kind>.succeeded` and the completion event are written, and the step
 * outputs no step record carried are merged into the tenant's (worker/step-records.ts). All of it
 * only if this runner still holds the lease.
 */
export async function recordSuccess(
  q: Queryable,
  op: { id: string; kind: OperationKind; steps: OperationStep[] },
  runnerId: string,
  tenant: { id: string; slug: string },
  tenantStatus: TenantStatus,
  also: {
    event: NewEvent | null;
    clearSuspension: boolean;
    /** Step outputs not yet on the tenant (merged as `saveSteps` merges them). */
    outputs?: Record<string, unknown>;
  } = { event: null, clearSuspension: false },
): Promise<void> {
  const params: unknown[] = [
    op.id,
    JSON.stringify(op.steps),
    tenant.id,
    tenantStatus,
    tenant.slug,
    runnerId,
    WORKER_ACTOR.name,
    `operation.${op.kind}.succeeded`,
    also.clearSuspension,
    JSON.stringify(also.outputs ?? {}),
  ];
  // The event reads `t`: written only if this runner's lease recorded the end, after the tenant's row lock.
  const event = also.event ? eventCtes('e', 't', also.event, params.length + 1) : null;
  if (event) params.push(...event.params);
  await q.query(
    named({
      name: `tenantry.record_success${event ? '.event' : ''}`,
      text: `WITH o AS (
       UPDATE operations SET status = 'succeeded', steps = $2::jsonb, lease_owner = NULL, lease_expires_at = NULL,
              finished_at = now(), updated_at = now()
        WHERE id = $1 AND lease_owner = $6 RETURNING id),
     t AS (UPDATE tenants SET status = $4, updated_at = now(),
                  suspension = CASE WHEN $9::boolean THEN NULL ELSE suspension END,
                  outputs = CASE WHEN $10::jsonb = '{}'::jsonb THEN outputs ELSE jsonb_strip_nulls(outputs || $10::jsonb) END
            WHERE id = $3 AND EXISTS (SELECT 1 FROM o) RETURNING id),
     a AS (INSERT INTO audit_log (actor_id, actor_name, role, action, tenant_id, tenant_slug, operation_id, details)
           SELECT NULL, $7, 'system', $8, $3, $5, $1, jsonb_build_object('tenantStatus', $4::text) FROM t RETURNING 1)${
             event
               ? `,
     ${event.sql}`
               : ''
           }
     SELECT (SELECT count(*) FROM a) AS audited${event ? `, ${event.wake} AS woken` : ''}`,
    }),
    params,
  );
}

/** Marks a running operation succeeded, without touching its tenant; false if the lease was lost. */
export async function markSucceeded(
  q: Queryable,
  id: string,
  runnerId: string,
  steps: OperationStep[],
): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE operations SET status = 'succeeded', steps = $2::jsonb, lease_owner = NULL, lease_expires_at = NULL,
            finished_at = now(), updated_at = now() WHERE id = $1 AND lease_owner = $3 AND status = 'running'`,
    [id, JSON.stringify(steps), runnerId],
  );
  return (rowCount ?? 0) > 0;
}

/** Marks a running operation failed with its error and whether it can be resumed; false if the lease was lost. */
export async function markFailed(
  q: Queryable,
  id: string,
  runnerId: string,
  steps: OperationStep[],
  error: string,
  resumable: boolean,
): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE operations SET status = 'failed', error = $2, steps = $3::jsonb, lease_owner = NULL, lease_expires_at = NULL,
            progress = progress || $5::jsonb, finished_at = now(), updated_at = now()
      WHERE id = $1 AND lease_owner = $4 AND status = 'running'`,
    [id, error, JSON.stringify(steps), runnerId, JSON.stringify({ resumable })],
  );
  return (rowCount ?? 0) > 0;
}

/** Sets running operations whose lease expired back to queued (their runner died); returns their ids. */
export async function requeueExpiredLeases(q: Queryable): Promise<string[]> {
  const { rows } = await q.query<{ id: string }>(
    `UPDATE operations SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
      WHERE id IN (SELECT id FROM operations WHERE status = 'running' AND lease_expires_at < now() FOR UPDATE SKIP LOCKED)
      RETURNING id`,
  );
  return rows.map((r) => r.id);
}
