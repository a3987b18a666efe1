import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Db } from '../db/db.js';
import {
  appendAudit,
  enqueueOperationJob,
  findTenantById,
  setTenantStatus,
  tenantFromJson,
} from '../db/repo.js';
import { isTenantryError, TenantryError } from '../domain/errors.js';
import type { Engine, PromotionParams } from '../domain/ports.js';

export const PROMOTION_CLEANUP_TASK = 'promotion-cleanup';

import {
  type OperationKind,
  type OperationStep,
  RELEASE_PROMOTION_SOURCES_STEP,
  type Tenant,
} from '../domain/tenant.js';
import type { DriftRemediator, Finding } from '../drift/types.js';
import type { Metrics } from '../metrics.js';
import type { Queryable } from '../providers/postgres/sql.js';

const SYSTEM_ACTOR = { id: null, name: 'tenantry-worker', role: 'system' };

/** Postgres and network errors worth another attempt: the same step will be re-run. */
const RETRYABLE_PG = new Set([
  // object in use: e.g. CREATE DATABASE … TEMPLATE while another session (an orphaned backend of a
  // killed process) is still connected to the template; it goes away.
  '55006',
  '40001',
  '40P01',
  '55P03',
  '53300',
  '57P01',
  '57P02',
  '57P03',
  '08000',
  '08003',
  '08006',
  '08001',
]);
const RETRYABLE_NET = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN']);

/** An error past an operation's point of no return: retried, or resumed, but never undone. */
export function isForwardOnly(e: unknown): boolean {
  return isTenantryError(e) && e.context.forwardOnly === true;
}

export function isRetryable(e: unknown): boolean {
  if (isTenantryError(e)) return e.retryable;
  const code = (e as { code?: unknown })?.code;
  if (typeof code === 'string' && (RETRYABLE_PG.has(code) || RETRYABLE_NET.has(code))) return true;
  // Catalog races between concurrent DDL sessions are transient by nature.
  return /Connection terminated|timeout exceeded when trying to connect|tuple concurrently (updated|deleted)/i.test(
    String((e as Error)?.message ?? ''),
  );
}

/** A message safe to store and show: never a stack, never a connection string. */
export function safeMessage(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.replace(/postgres(ql)?:\/\/[^\s]+/g, 'postgres://[redacted]').slice(0, 500);
}

interface Claimed {
  id: string;
  kind: OperationKind;
  tenant_id: string;
  steps: OperationStep[];
  attempts: number;
  created_at: Date;
  tenant: Record<string, unknown> | null;
  params: Record<string, unknown>;
  progress: Record<string, unknown>;
}

export interface ExecutorOptions {
  maxAttempts: number;
  leaseMs: number;
  /** Runs the steps of `reconcile` operations (drift remediation); without it they fail with a reason. */
  reconciler?: DriftRemediator;
}

/**
 * Runs operations as resumable state machines. Progress is stored after every step, so a
 * crash re-runs at most the step that was in flight (every step is idempotent). A lease with
 * a heartbeat marks who is running an operation; the reaper requeues expired leases.
 */
export class OperationExecutor {
  readonly runnerId = `runner_${randomBytes(6).toString('hex')}`;

  constructor(
    private readonly db: Db,
    private readonly engine: Engine,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly opts: ExecutorOptions,
  ) {}

  /** Entry point for the job queue. Throws only to ask the queue for a retry with backoff. */
  async run(operationId: string): Promise<void> {
    const op = await this.claim(operationId);
    if (!op) return; // finished already, or leased by a live runner
    const tenant = op.tenant ? tenantFromJson(op.tenant) : await findTenantById(this.db, op.tenant_id);
    if (!tenant) throw new Error(`tenant ${op.tenant_id} of ${operationId} is missing`);
    const log = this.log.child({ operationId, tenantId: tenant.id, kind: op.kind });
    const abort = new AbortController();
    const heartbeat = setInterval(
      () => {
        this.extendLease(op.id).then(
          (ok) => {
            if (!ok) abort.abort(new Error('lease lost'));
          },
          (e: unknown) => log.warn({ err: safeMessage(e) }, 'lease heartbeat failed'),
        );
      },
      Math.max(200, Math.floor(this.opts.leaseMs / 3)),
    );
    try {
      await this.execute(op, tenant, log, abort.signal);
    } finally {
      clearInterval(heartbeat);
    }
  }

  private async claim(operationId: string): Promise<Claimed | null> {
    const { rows } = await this.db.relaxedQuery<Claimed & Record<string, unknown>>(
      `UPDATE operations
          SET status = 'running', attempts = attempts + 1, lease_owner = $2,
              lease_expires_at = now() + make_interval(secs => $3::double precision / 1000), updated_at = now()
        WHERE id = $1 AND (status = 'queued' OR (status = 'running' AND (lease_expires_at < now() OR lease_owner = $2)))
        RETURNING id, kind, tenant_id, steps, attempts, created_at, params, progress,
                  (SELECT to_jsonb(t) FROM tenants t WHERE t.id = operations.tenant_id) AS tenant`,
      [operationId, this.runnerId, this.opts.leaseMs],
    );
    return (rows[0] as Claimed | undefined) ?? null;
  }

  private async extendLease(id: string): Promise<boolean> {
    const { rowCount } = await this.db.relaxedQuery(
      `UPDATE operations SET lease_expires_at = now() + make_interval(secs => $3::double precision / 1000)
        WHERE id = $1 AND lease_owner = $2 AND status = 'running'`,
      [id, this.runnerId, this.opts.leaseMs],
    );
    return (rowCount ?? 0) > 0;
  }

  /** Persists step progress (and a step's outputs on the tenant) atomically, in one round trip. */
  private async saveSteps(
    q: Queryable,
    id: string,
    steps: OperationStep[],
    tenantId: string,
    outputs: Record<string, unknown> | undefined,
  ): Promise<void> {
    await q.query(
      `WITH o AS (UPDATE operations SET steps = $3::jsonb, updated_at = now() WHERE id = $1 AND lease_owner = $2 RETURNING 1)
       UPDATE tenants SET outputs = jsonb_strip_nulls(outputs || $5::jsonb), updated_at = now()
        WHERE id = $4 AND $5::jsonb <> '{}'::jsonb AND EXISTS (SELECT 1 FROM o)`,
      [id, this.runnerId, JSON.stringify(steps), tenantId, JSON.stringify(outputs ?? {})],
    );
  }

  private async execute(op: Claimed, tenant: Tenant, log: Logger, signal: AbortSignal): Promise<void> {
    const steps = op.steps;
    if (op.attempts > this.opts.maxAttempts) {
      await this.fail(op, tenant, steps, log, new Error(`gave up after ${op.attempts - 1} attempts`), signal);
      return;
    }
    log.info({ attempt: op.attempts }, 'operation started');
    const todo = steps.filter((x) => x.status !== 'succeeded' && x.status !== 'skipped');
    const markRunning = (x: OperationStep) => {
      x.status = 'running';
      x.startedAt = new Date().toISOString();
      x.finishedAt = null;
      delete x.error;
    };
    if (todo[0]) {
      markRunning(todo[0]);
      await this.saveSteps({ query: this.db.relaxedQuery }, op.id, steps, tenant.id, undefined);
    }
    for (const [i, step] of todo.entries()) {
      if (signal.aborted) throw new Error('lease lost; another runner will resume');
      const started = process.hrtime.bigint();
      try {
        const outputs =
          op.kind === 'reconcile'
            ? await this.reconcileStep(op, tenant, step.name, signal)
            : step.name === RELEASE_PROMOTION_SOURCES_STEP
              ? await this.releasePromotionSources(op, tenant)
              : await this.engine.runStep({
                  operationId: op.id,
                  kind: op.kind,
                  step: step.name,
                  tenant: {
                    id: tenant.id,
                    slug: tenant.slug,
                    tier: tenant.tier,
                    templateVersion: tenant.templateVersion,
                  },
                  signal,
                  params: op.params,
                  progress: op.progress,
                  report: (patch) => this.report(op, patch),
                  onResourceEvent: (e) => this.resourceEvent(op, step.name, e),
                });
        await this.flushResources(op);
        step.status = 'succeeded';
        step.finishedAt = new Date().toISOString();
        const next = todo[i + 1];
        if (next) markRunning(next);
        // One statement records this step's outputs, its success and the next step's start.
        await this.saveSteps({ query: this.db.relaxedQuery }, op.id, steps, tenant.id, outputs);
        this.observeStep(op.kind, step.name, 'succeeded', started);
        log.debug({ step: step.name }, 'step succeeded');
      } catch (e) {
        await this.flushResources(op);
        this.observeStep(op.kind, step.name, 'failed', started);
        step.error = safeMessage(e);
        if (isRetryable(e) && op.attempts < this.opts.maxAttempts) {
          step.status = 'pending';
          await this.requeue(op.id, steps);
          log.warn(
            { step: step.name, err: step.error, attempt: op.attempts },
            'step failed; will retry with backoff',
          );
          throw e; // the job queue retries with exponential backoff
        }
        step.status = 'failed';
        step.finishedAt = new Date().toISOString();
        await this.fail(op, tenant, steps, log, e, signal);
        return;
      }
    }
    await this.succeed(op, tenant, steps, log);
  }

  /** One step of a drift repair: the findings it acts on travel in the operation's params. */
  private async reconcileStep(
    op: Claimed,
    tenant: Tenant,
    step: string,
    signal: AbortSignal,
  ): Promise<undefined> {
    const reconciler = this.opts.reconciler;
    if (!reconciler)
      throw new TenantryError(
        'PROVIDER_FAILED',
        'this process has no drift remediator for reconcile operations',
      );
    const findings = (op.params.findings as Finding[] | undefined) ?? [];
    await reconciler.runStep(
      {
        id: tenant.id,
        slug: tenant.slug,
        tier: tenant.tier,
        status: tenant.status,
        templateVersion: tenant.templateVersion,
        outputs: tenant.outputs,
      },
      step,
      findings,
      { signal, operationId: op.id },
    );
    return undefined;
  }

  /** Per operation: when its resource list was last written, and whether newer events wait. */
  private readonly resourceFlush = new Map<string, { last: number; dirty: boolean }>();

  /**
   * Resource-level progress from inside a step (Pulumi engine events): the latest 50 are kept on
   * the operation's progress, written at most every 300 ms per operation (a failure at once), and
   * once more when the step ends, so the events stream can show them.
   */
  private resourceEvent(
    op: Claimed,
    step: string,
    e: { resource: string; action: string; status: string },
  ): void {
    const list = ((op.progress.resources as unknown[] | undefined) ?? []).slice(-49);
    list.push({ step, ...e, at: new Date().toISOString() });
    op.progress.resources = list;
    const state = this.resourceFlush.get(op.id) ?? { last: 0, dirty: false };
    this.resourceFlush.set(op.id, state);
    const now = Date.now();
    if (now - state.last < 300 && e.status !== 'failed') {
      state.dirty = true;
      return;
    }
    state.last = now;
    state.dirty = false;
    this.report(op, { resources: list }).catch(() => undefined);
  }

  /** Writes the resource events the throttle held back (at the end of a step). */
  private async flushResources(op: Claimed): Promise<void> {
    const state = this.resourceFlush.get(op.id);
    if (!state?.dirty) return;
    state.dirty = false;
    state.last = Date.now();
    await this.report(op, { resources: op.progress.resources }).catch(() => undefined);
  }

  /**
   * Offboarding inside promotions' rollback windows: their source placements go first, through the
   * engine's cleanup (the same one the window's end runs), and each promotion is marked cleaned up.
   */
  private async releasePromotionSources(op: Claimed, tenant: Tenant): Promise<undefined> {
    const ids = (op.params.promotionWindows as string[] | undefined) ?? [];
    for (const id of ids) {
      const { rows } = await this.db.query<{ params: PromotionParams; progress: Record<string, unknown> }>(
        `SELECT params, progress FROM operations WHERE id = $1 AND tenant_id = $2 AND kind = 'promote'`,
        [id, tenant.id],
      );
      const promo = rows[0];
      if (!promo || promo.progress.cleanedUp || promo.progress.rolledBack) continue;
      await this.engine.cleanupPromotion(this.stepTenant(tenant), promo.params, id);
      await this.db.tx(async (q) => {
        await q.query(
          `UPDATE operations SET progress = progress || jsonb_build_object('cleanedUp', true, 'cleanedUpBy', $2::text) WHERE id = $1`,
          [id, op.id],
        );
        await q.query('SELECT graphile_worker.remove_job($1)', [`cleanup:${id}`]);
        await appendAudit(q, {
          actor: SYSTEM_ACTOR,
          action: 'tenant.promotion.source-deleted',
          tenantId: tenant.id,
          tenantSlug: tenant.slug,
          operationId: id,
          details: { fromTier: promo.params.fromTier, by: op.id },
        });
      });
    }
    return undefined;
  }

  private stepTenant(tenant: Tenant) {
    return { id: tenant.id, slug: tenant.slug, tier: tenant.tier, templateVersion: tenant.templateVersion };
  }

  /** Merges into the operation's progress, durably (fenced by the lease). */
  private async report(op: Claimed, patch: Record<string, unknown>): Promise<void> {
    Object.assign(op.progress, patch);
    await this.db.query(
      `UPDATE operations SET progress = progress || $3::jsonb, updated_at = now() WHERE id = $1 AND lease_owner = $2`,
      [op.id, this.runnerId, JSON.stringify(patch)],
    );
  }

  private observeStep(kind: string, step: string, outcome: string, started: bigint): void {
    this.metrics.stepDuration.observe(
      { kind, step, outcome },
      Number(process.hrtime.bigint() - started) / 1e9,
    );
  }

  private async requeue(id: string, steps: OperationStep[]): Promise<void> {
    await this.db.query(
      `UPDATE operations SET status = 'queued', steps = $3::jsonb, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
        WHERE id = $1 AND lease_owner = $2`,
      [id, this.runnerId, JSON.stringify(steps)],
    );
  }

  private async succeed(op: Claimed, tenant: Tenant, steps: OperationStep[], log: Logger): Promise<void> {
    this.resourceFlush.delete(op.id);
    if (op.kind === 'promote') return this.succeedPromotion(op, tenant, steps, log);
    const status = op.kind === 'offboard' ? 'offboarded' : 'active';
    // One statement: the operation ends, the tenant changes state, and the audit record is written.
    await this.db.query(
      `WITH o AS (
         UPDATE operations SET status = 'succeeded', steps = $2::jsonb, lease_owner = NULL, lease_expires_at = NULL,
                finished_at = now(), updated_at = now()
          WHERE id = $1 AND lease_owner = $6 RETURNING id),
       t AS (UPDATE tenants SET status = $4, updated_at = now() WHERE id = $3 AND EXISTS (SELECT 1 FROM o) RETURNING id)
       INSERT INTO audit_log (actor_id, actor_name, role, action, tenant_id, tenant_slug, operation_id, details)
       SELECT NULL, $7, 'system', $8, $3, $5, $1, jsonb_build_object('tenantStatus', $4::text) FROM t`,
      [
        op.id,
        JSON.stringify(steps),
        tenant.id,
        status,
        tenant.slug,
        this.runnerId,
        SYSTEM_ACTOR.name,
        `operation.${op.kind}.succeeded`,
      ],
    );
    this.metrics.operations.inc({ kind: op.kind, status: 'succeeded' });
    this.metrics.acceptToDone.observe(
      { kind: op.kind, tier: tenant.tier },
      (Date.now() - op.created_at.getTime()) / 1000,
    );
    log.info({ tenantStatus: status }, 'operation succeeded');
  }

  /**
   * A promotion's cutover is recorded with its operation: the tier changes, the change is audited,
   * and the source's deletion is scheduled after the rollback window (or, for a rollback, cancelled).
   */
  private async succeedPromotion(
    op: Claimed,
    tenant: Tenant,
    steps: OperationStep[],
    log: Logger,
  ): Promise<void> {
    const params = op.params as unknown as PromotionParams;
    const done = await this.db.tx(async (q) => {
      // Fenced by the lease: a runner that lost it records nothing.
      const { rowCount } = await q.query(
        `UPDATE operations SET status = 'succeeded', steps = $2::jsonb, lease_owner = NULL, lease_expires_at = NULL,
                finished_at = now(), updated_at = now() WHERE id = $1 AND lease_owner = $3 AND status = 'running'`,
        [op.id, JSON.stringify(steps), this.runnerId],
      );
      if ((rowCount ?? 0) === 0) return false;
      await q.query(
        `UPDATE tenants SET tier = $2, outputs = outputs - 'tier', updated_at = now() WHERE id = $1`,
        [tenant.id, params.toTier],
      );
      if (params.rollbackOf) {
        await q.query(`SELECT graphile_worker.remove_job($1)`, [`cleanup:${params.rollbackOf}`]);
        await q.query(
          `UPDATE operations SET progress = progress || '{"rolledBack": true}'::jsonb WHERE id = $1`,
          [params.rollbackOf],
        );
      } else {
        const until = String(op.progress.rollbackUntil ?? new Date().toISOString());
        await q.query(
          `SELECT graphile_worker.add_job($1, json_build_object('operationId', $2::text), run_at := $3::timestamptz,
                  job_key := $4, max_attempts := 25)`,
          [PROMOTION_CLEANUP_TASK, op.id, until, `cleanup:${op.id}`],
        );
      }
      await appendAudit(q, {
        actor: SYSTEM_ACTOR,
        action: params.rollbackOf ? 'tenant.promotion.rolled-back' : 'tenant.promotion.cutover',
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        operationId: op.id,
        details: {
          fromTier: params.fromTier,
          toTier: params.toTier,
          writeFreezeMs: op.progress.writeFreezeMs ?? null,
          ...(params.rollbackOf
            ? { rollbackOf: params.rollbackOf }
            : { rollbackUntil: op.progress.rollbackUntil }),
        },
      });
      return true;
    });
    if (!done) {
      log.warn('lease lost before the promotion was recorded; its new runner records it');
      return;
    }
    this.metrics.operations.inc({ kind: op.kind, status: 'succeeded' });
    log.info({ fromTier: params.fromTier, toTier: params.toTier }, 'promotion cut over');
  }

  /**
   * Deletes a promotion's source placement once its rollback window is over, unless it was rolled
   * back, whatever the tenant's tier is by then (a later promotion may have moved it on; the engine
   * never deletes the placement the tenant is routed to). Serialized with the tenant's operations:
   * with one in flight, it waits for a later retry; two runs of one cleanup never overlap.
   */
  async cleanupPromotion(operationId: string): Promise<void> {
    const { rows } = await this.db.query<{
      tenant_id: string;
      params: PromotionParams;
      progress: Record<string, unknown>;
      busy: boolean;
    }>(
      `SELECT o.tenant_id, o.params, o.progress,
              EXISTS (SELECT 1 FROM operations x WHERE x.tenant_id = o.tenant_id AND x.status IN ('queued', 'running')) AS busy
         FROM operations o WHERE o.id = $1 AND o.kind = 'promote' AND o.status = 'succeeded'`,
      [operationId],
    );
    const r = rows[0];
    if (!r || r.progress.rolledBack || r.progress.cleanedUp) return;
    if (r.busy) throw new Error('tenant has an operation in flight; cleanup retries later');
    const tenant = await findTenantById(this.db, r.tenant_id);
    if (!tenant || tenant.status === 'offboarded') return;
    // Another run of this cleanup under way holds the lock: this one simply ends.
    await this.db.withSessionLock(`tenantry.cleanup.${operationId}`, async () => {
      await this.engine.cleanupPromotion(this.stepTenant(tenant), r.params, operationId, async (patch) => {
        await this.db.query(`UPDATE operations SET progress = progress || $2::jsonb WHERE id = $1`, [
          operationId,
          JSON.stringify(patch),
        ]);
      });
      await this.db.tx(async (q) => {
        await q.query(
          `UPDATE operations SET progress = progress || '{"cleanedUp": true}'::jsonb WHERE id = $1`,
          [operationId],
        );
        await appendAudit(q, {
          actor: SYSTEM_ACTOR,
          action: 'tenant.promotion.source-deleted',
          tenantId: tenant.id,
          tenantSlug: tenant.slug,
          operationId,
          details: { fromTier: r.params.fromTier },
        });
      });
    });
  }

  /**
   * Replication slots and publications left by crashed or finished promotions; the slot of a
   * promotion waiting for a retry once it holds more WAL than the limit; and cleanups whose job
   * died with its worker (graphile-worker keeps a crashed worker's job locked for hours).
   */
  async sweepPromotionOrphans(): Promise<string[]> {
    const { rows } = await this.db.query<{ id: string; status: string }>(
      `SELECT id, status FROM operations WHERE kind = 'promote' AND status IN ('queued', 'running')`,
    );
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
    await this.db.query(
      `SELECT graphile_worker.add_job($1, json_build_object('operationId', o.id), job_key := 'cleanup:' || o.id, max_attempts := 25)
         FROM operations o
        WHERE o.kind = 'promote' AND o.status = 'succeeded' AND NOT (o.params ? 'rollbackOf')
          AND NOT (o.progress ? 'cleanedUp') AND NOT (o.progress ? 'rolledBack')
          AND (o.progress->>'rollbackUntil')::timestamptz < now() - interval '1 second'
          AND NOT EXISTS (SELECT 1 FROM graphile_worker._private_jobs j
                           WHERE j.key = 'cleanup:' || o.id AND j.locked_at IS NULL)`,
      [PROMOTION_CLEANUP_TASK],
    );
    if ('error' in dropped) throw dropped.error;
    return dropped.names;
  }

  /**
   * Runs compensating steps best-effort, recording each on the operation. `ok` is false if any
   * failed; `forward` when a step refused because the operation is past its point of no return
   * (a promotion whose routing already flipped), so it must be resumed rather than undone.
   */
  private async compensate(
    op: Claimed,
    tenant: Tenant,
    steps: OperationStep[],
    kind: 'offboard' | 'promote',
    names: string[],
    prefix: string,
    signal: AbortSignal,
  ): Promise<{ ok: boolean; forward: boolean }> {
    let ok = true;
    let forward = false;
    for (const name of names) {
      if (signal.aborted) return { ok: false, forward }; // lease lost: the new owner decides
      const step: OperationStep = {
        name: `${prefix}${name}`,
        status: 'running',
        startedAt: new Date().toISOString(),
        finishedAt: null,
      };
      steps.push(step);
      try {
        await this.engine.runStep({
          operationId: op.id,
          kind,
          step: name,
          tenant: this.stepTenant(tenant),
          signal,
          params: op.params,
          progress: op.progress,
          report: (patch) => this.report(op, patch),
        });
        step.status = 'succeeded';
      } catch (e) {
        step.status = 'failed';
        step.error = safeMessage(e);
        ok = false;
        if (isForwardOnly(e)) {
          forward = true;
          steps.pop(); // nothing was undone: the operation resumes where it failed
          break;
        }
      }
      step.finishedAt = new Date().toISOString();
    }
    return { ok, forward };
  }

  /**
   * Checks, in one transaction on the operation's row, that this runner still holds the lease, and
   * extends it: a runner that lost its lease must not undo or finish what another runner now owns.
   */
  private async holdLease(op: Claimed): Promise<boolean> {
    return this.db.tx(async (q) => {
      const { rows } = await q.query<{ lease_owner: string | null; status: string }>(
        'SELECT lease_owner, status FROM operations WHERE id = $1 FOR UPDATE',
        [op.id],
      );
      if (rows[0]?.lease_owner !== this.runnerId || rows[0]?.status !== 'running') return false;
      await q.query(
        `UPDATE operations SET lease_expires_at = now() + make_interval(secs => $2::double precision / 1000) WHERE id = $1`,
        [op.id, this.opts.leaseMs],
      );
      return true;
    });
  }

  /**
   * A terminal failure. A failed onboarding is rolled back through the same providers (where the
   * engine does that), so nothing is left half-created, and the tenant is marked `failed`, never
   * `active`; a failed promotion is aborted, the tenant staying active on its source. A failure past
   * a promotion's routing flip is not undone: the operation is kept, resumable from its failed step
   * (POST /v1/operations/{id}/resume), as is an onboarding the engine does not roll back.
   * Everything here is fenced by the lease.
   */
  private async fail(
    op: Claimed,
    tenant: Tenant,
    steps: OperationStep[],
    log: Logger,
    cause: unknown,
    signal: AbortSignal,
  ): Promise<void> {
    this.resourceFlush.delete(op.id);
    if (!(await this.holdLease(op))) {
      log.warn(
        { err: safeMessage(cause) },
        'lease lost before failing; the operation is left to its new runner',
      );
      return;
    }
    const reason = safeMessage(cause);
    let cleanup = '';
    let forward = op.kind === 'promote' && isForwardOnly(cause);
    if (
      op.kind === 'onboard' &&
      this.engine.rollsBackFailedOnboarding &&
      this.engine.supportsTier(tenant.tier)
    ) {
      const { ok } = await this.compensate(
        op,
        tenant,
        steps,
        'offboard',
        this.engine.steps('offboard', tenant.tier),
        'rollback:',
        signal,
      );
      if (!ok) cleanup = '; rollback incomplete, offboard the tenant to finish cleaning up';
    }
    if (op.kind === 'promote' && !forward) {
      const names = this.engine.promotionAbortSteps(op.params as unknown as PromotionParams);
      const out = await this.compensate(op, tenant, steps, 'promote', names, '', signal);
      forward = out.forward;
      if (!out.ok && !forward) cleanup = '; abort incomplete, see the abort step';
    }
    const resumable = forward || (op.kind === 'onboard' && !this.engine.rollsBackFailedOnboarding);
    if (forward) {
      cleanup = `; routing already points at the new placement, so the promotion is not undone: resume it (POST /v1/operations/${op.id}/resume) to finish the cutover`;
    } else if (resumable) {
      cleanup = `; kept as it is: resume it (POST /v1/operations/${op.id}/resume) once the cause is fixed`;
    }
    // A failed promotion or repair leaves the tenant active (on its source, or routed forward).
    const tenantStatus =
      op.kind === 'offboard'
        ? 'offboarding'
        : op.kind === 'promote' || op.kind === 'reconcile'
          ? 'active'
          : 'failed';
    const recorded = await this.db.tx(async (q) => {
      const { rowCount } = await q.query(
        `UPDATE operations SET status = 'failed', error = $2, steps = $3::jsonb, lease_owner = NULL, lease_expires_at = NULL,
                progress = progress || $5::jsonb, finished_at = now(), updated_at = now()
          WHERE id = $1 AND lease_owner = $4 AND status = 'running'`,
        [op.id, `${reason}${cleanup}`, JSON.stringify(steps), this.runnerId, JSON.stringify({ resumable })],
      );
      if ((rowCount ?? 0) === 0) return false;
      await setTenantStatus(q, tenant.id, tenantStatus);
      await appendAudit(q, {
        actor: SYSTEM_ACTOR,
        action: `operation.${op.kind}.failed`,
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        operationId: op.id,
        details: { error: reason, resumable },
      });
      return true;
    });
    if (!recorded) {
      log.warn({ err: reason }, 'lease lost while failing; the operation is left to its new runner');
      return;
    }
    this.metrics.operations.inc({ kind: op.kind, status: 'failed' });
    log.error({ err: reason, resumable }, 'operation failed');
  }

  /**
   * Requeues operations whose runner died (kill -9): their lease expired without a heartbeat.
   * Runs at start and periodically. The next claim counts an attempt, so a poisoned operation
   * ends `failed` after maxAttempts instead of looping forever.
   */
  async reapExpiredLeases(): Promise<string[]> {
    return this.db.tx(async (q) => {
      const { rows } = await q.query<{ id: string }>(
        `UPDATE operations SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          WHERE id IN (SELECT id FROM operations WHERE status = 'running' AND lease_expires_at < now() FOR UPDATE SKIP LOCKED)
          RETURNING id`,
      );
      for (const r of rows) await enqueueOperationJob(q, r.id, this.opts.maxAttempts + 2);
      return rows.map((r) => r.id);
    });
  }
}
