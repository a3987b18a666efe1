import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import { failExportsOf } from '../db/exports.js';
import { enqueueOperationJob } from '../db/jobs.js';
import { appendEvent } from '../db/outbox.js';
import { findTenantById, setTenantStatus, tenantFromJson } from '../db/repo.js';
import {
  type ClaimedOperation as Claimed,
  claimOperation,
  extendLease,
  holdLease,
  markFailed,
  markSucceeded,
  mergeProgress,
  recordSuccess,
  requeueExpiredLeases,
  requeueOperation,
  saveSteps,
  WORKER_ACTOR,
} from '../db/runs.js';
import { isTenantryError, TenantryError } from '../domain/errors.js';
import { runLeaseOwner } from '../domain/ids.js';
import { type Engine, type PromotionParams, type StepTenant, stepTenantOf } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import { isRotationParams } from '../domain/rotation.js';
import { isOnboardResourceStep } from '../domain/steps.js';
import { type OperationStep, RELEASE_PROMOTION_SOURCES_STEP, type Tenant } from '../domain/tenant.js';
import type { DriftRemediator, Finding } from '../drift/types.js';
import { safeMessage } from '../lib/errors.js';
import type { Metrics } from '../lib/metrics.js';
import { isTransient } from '../lib/transient.js';
import { PromotionLifecycle } from '../promotion/lifecycle.js';
import { recordRotation } from '../rotation/lifecycle.js';
import {
  completionEvent,
  EXPORT_STEP,
  recordExportReady,
  statusAfterFailure,
  statusAfterSuccess,
} from './lifecycle.js';
import { StepRecords } from './step-records.js';

/**
 * An onboarding's step records: at most one per quarter second. A person watching the console sees
 * each step start and end within it; an onboarding shorter than that writes only its claim and its end.
 */
const RECORD_EVERY_MS = 250;

/** A step's error as its record keeps it: the message, and the stable code when it has one. */
function failStep(step: OperationStep, e: unknown): void {
  step.error = safeMessage(e);
  if (isTenantryError(e)) step.errorCode = e.code;
  else delete step.errorCode;
}

/** An error past an operation's point of no return: retried, or resumed, but never undone. */
export function isForwardOnly(e: unknown): boolean {
  return isTenantryError(e) && e.context.forwardOnly === true;
}

/** A domain error says itself whether it is worth another attempt; anything else is judged as transient or not. */
export function isRetryable(e: unknown): boolean {
  return isTenantryError(e) ? e.retryable : isTransient(e);
}

/** Runs the step of a `migrate` operation: a tenant's part of a fleet schema rollout (rollout/index.ts). */
export interface TenantMigrator {
  runStep(
    tenant: StepTenant,
    step: string,
    params: Record<string, unknown>,
    ctx: { signal: AbortSignal; operationId: string },
  ): Promise<void>;
}

export interface ExecutorOptions {
  maxAttempts: number;
  leaseMs: number;
  /** At most one step record per this many ms while an operation runs (worker/step-records.ts; 0: every start and success). */
  recordEveryMs?: number;
  /** Runs the steps of `reconcile` operations (drift remediation); without it they fail with a reason. */
  reconciler?: DriftRemediator;
  /** Runs the step of `migrate` operations (a rollout's, resumed after a crash); without it they fail with a reason. */
  migrator?: TenantMigrator;
}

/**
 * Runs operations as resumable state machines. Progress is stored behind every step, so a crash
 * re-runs at most the step that was in flight (every step is idempotent); an onboarding's resource
 * steps share records within a quarter second, and a crash re-runs those its lost records held. A
 * lease with a heartbeat marks who is running an operation; the reaper requeues expired leases.
 */
export class OperationExecutor {
  readonly runnerId = `runner_${randomBytes(6).toString('hex')}`;

  constructor(
    private readonly db: Db,
    private readonly engine: Engine,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly opts: ExecutorOptions,
  ) {
    this.promotions = new PromotionLifecycle(db, engine);
  }

  /** A promotion's cutover bookkeeping, its source's deletion and the orphan sweep. */
  private readonly promotions: PromotionLifecycle;

  /** Entry point for the job queue. Throws only to ask the queue for a retry with backoff. */
  async run(operationId: string): Promise<void> {
    // The lease is this run's, not this process's: after a late heartbeat let the reaper requeue the
    // operation, a second job may claim it in another worker slot of this process, and the first run
    // must then find its lease gone (its heartbeat and every write fail) instead of running beside it.
    const op = await this.claim(operationId, runLeaseOwner(this.runnerId));
    if (!op) return; // finished already, or leased by a live runner
    const tenant = op.tenant ? tenantFromJson(op.tenant) : await findTenantById(this.db, op.tenant_id);
    if (!tenant) throw new Error(`tenant ${op.tenant_id} of ${operationId} is missing`);
    const log = this.log.child({ operationId, tenantId: tenant.id, kind: op.kind });
    const abort = new AbortController();
    const heartbeat = setInterval(
      () => {
        this.extendLease(op).then(
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

  private async claim(operationId: string, owner: string): Promise<Claimed | null> {
    return claimOperation({ query: this.db.relaxedQuery }, operationId, owner, this.opts.leaseMs);
  }

  private async extendLease(op: Claimed): Promise<boolean> {
    return extendLease({ query: this.db.relaxedQuery }, op.id, op.owner, this.opts.leaseMs);
  }

  /** Persists step progress (and a step's outputs on the tenant) atomically, in one round trip. */
  private async saveSteps(
    q: Queryable,
    op: Claimed,
    steps: OperationStep[],
    tenantId: string,
    outputs: Record<string, unknown> | undefined,
  ): Promise<void> {
    await saveSteps(q, op.id, op.owner, steps, tenantId, outputs);
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
      delete x.errorCode;
    };
    // Step records are written behind the steps (worker/step-records.ts). An onboarding's are sent at
    // most one per recordEveryMs: a step's start and success as they happen unless a record went out
    // less than that ago, and whatever is left goes with the operation's end, so an onboarding shorter
    // than the interval writes none between its claim and its end.
    // Only an onboarding's resource steps may share a record; every other run records each step.
    const deferrable = op.kind === 'onboard' && todo.every((x) => isOnboardResourceStep(x.name));
    const records = new StepRecords(
      steps,
      (snapshot, outputs) =>
        this.saveSteps({ query: this.db.relaxedQuery }, op, snapshot, tenant.id, outputs),
      deferrable ? (this.opts.recordEveryMs ?? RECORD_EVERY_MS) : 0,
    );
    const memo = new Map<string, unknown>();
    try {
      if (todo[0]) {
        markRunning(todo[0]);
        records.note();
      }
      for (const [i, step] of todo.entries()) {
        if (signal.aborted) throw new Error('lease lost; another runner will resume');
        const started = process.hrtime.bigint();
        try {
          const outputs =
            op.kind === 'reconcile'
              ? await this.reconcileStep(op, tenant, step.name, signal)
              : op.kind === 'migrate'
                ? await this.migrateStep(op, tenant, step.name, signal)
                : step.name === RELEASE_PROMOTION_SOURCES_STEP
                  ? await this.releasePromotionSources(op, tenant)
                  : await this.engine.runStep({
                      operationId: op.id,
                      kind: op.kind,
                      step: step.name,
                      tenant: stepTenantOf(tenant),
                      signal,
                      params: op.params,
                      progress: op.progress,
                      report: (patch) => this.report(op, patch),
                      onResourceEvent: (e) => this.resourceEvent(op, step.name, e),
                      memo,
                    });
          await this.flushResources(op);
          // The archive an export step wrote is recorded ready (with its event) before the step is.
          if (step.name === EXPORT_STEP) await this.db.tx((q) => recordExportReady(q, op, tenant));
          // A record that failed while this step ran fails it, as a failed write in it would.
          const lost = await records.settle();
          if (lost) throw lost;
          step.status = 'succeeded';
          step.finishedAt = new Date().toISOString();
          const next = todo[i + 1];
          if (next) markRunning(next);
          // The last step's success, when it has no outputs, goes with the operation's end (a crash
          // before that re-runs it, as one before its record would).
          if (next || (outputs !== undefined && Object.keys(outputs).length > 0)) records.note(step, outputs);
          this.observeStep(op.kind, step.name, 'succeeded', started);
          log.debug({ step: step.name }, 'step succeeded');
        } catch (e) {
          // What waits is recorded before the run is handed back or failed (those write the steps
          // again); if that fails too, the steps it carried run again on resume, their outputs lost.
          if (await records.flush()) records.revertUnlanded();
          await this.flushResources(op);
          this.observeStep(op.kind, step.name, 'failed', started);
          failStep(step, e);
          if (isRetryable(e) && op.attempts < this.opts.maxAttempts) {
            step.status = 'pending';
            await this.requeue(op, steps);
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
      // A record that failed at the end is not retried on its own: the end writes every step and
      // every output not yet on the tenant, in its one statement.
      const { outputs } = await records.close();
      await this.succeed(op, tenant, steps, log, outputs);
    } finally {
      records.stop();
    }
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
        limits: tenant.limits,
      },
      step,
      findings,
      { signal, operationId: op.id },
    );
    return undefined;
  }

  /** The step of a rollout's `migrate` operation (its params name the rollout and the version). */
  private async migrateStep(
    op: Claimed,
    tenant: Tenant,
    step: string,
    signal: AbortSignal,
  ): Promise<undefined> {
    const migrator = this.opts.migrator;
    if (!migrator)
      throw new TenantryError('PROVIDER_FAILED', 'this process has no migrator for migrate operations');
    await migrator.runStep(stepTenantOf(tenant), step, op.params, { signal, operationId: op.id });
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

  /** Offboarding inside promotions' rollback windows: their source placements go first. */
  private async releasePromotionSources(op: Claimed, tenant: Tenant): Promise<undefined> {
    const ids = (op.params.promotionWindows as string[] | undefined) ?? [];
    await this.promotions.releaseSources(tenant, ids, op.id);
    return undefined;
  }

  /** Merges into the operation's progress, durably (fenced by the lease). */
  private async report(op: Claimed, patch: Record<string, unknown>): Promise<void> {
    Object.assign(op.progress, patch);
    await mergeProgress(this.db, op.id, op.owner, patch);
  }

  private observeStep(kind: string, step: string, outcome: string, started: bigint): void {
    this.metrics.stepDuration.observe(
      { kind, step, outcome },
      Number(process.hrtime.bigint() - started) / 1e9,
    );
  }

  private async requeue(op: Claimed, steps: OperationStep[]): Promise<void> {
    await requeueOperation(this.db, op.id, op.owner, steps);
  }

  /** `outputs`: those of steps whose record never went (the end writes them). */
  private async succeed(
    op: Claimed,
    tenant: Tenant,
    steps: OperationStep[],
    log: Logger,
    outputs: Record<string, unknown>,
  ): Promise<void> {
    this.resourceFlush.delete(op.id);
    if (op.kind === 'promote' || op.kind === 'rotate') {
      // Their ends write no tenant outputs: a record carries them first (these runs are long anyway).
      if (Object.keys(outputs).length > 0) await this.saveSteps(this.db, op, steps, tenant.id, outputs);
      return op.kind === 'promote'
        ? this.succeedPromotion(op, tenant, steps, log)
        : this.succeedRotation(op, tenant, steps, log);
    }
    const status = statusAfterSuccess(op.kind, tenant.status);
    // The operation ends, the tenant changes state, the audit record and the lifecycle event are written,
    // in one statement (all of it only if this run still holds the lease).
    await recordSuccess(this.db, { id: op.id, kind: op.kind, steps }, op.owner, tenant, status, {
      event: completionEvent(op, tenant, status),
      clearSuspension: op.kind === 'reactivate',
      outputs,
    });
    this.metrics.operations.inc({ kind: op.kind, status: 'succeeded' });
    this.metrics.acceptToDone.observe(
      { kind: op.kind, tier: tenant.tier },
      (Date.now() - op.created_at.getTime()) / 1000,
    );
    log.info({ tenantStatus: status }, 'operation succeeded');
  }

  /**
   * A promotion's cutover is recorded with its operation, in one transaction fenced by the lease
   * (a runner that lost it records nothing): see `PromotionLifecycle.recordCutover`.
   */
  private async succeedPromotion(
    op: Claimed,
    tenant: Tenant,
    steps: OperationStep[],
    log: Logger,
  ): Promise<void> {
    const params = op.params as unknown as PromotionParams;
    const done = await this.db.tx(async (q) => {
      if (!(await markSucceeded(q, op.id, op.owner, steps))) return false;
      await this.promotions.recordCutover(q, { id: op.id, params, progress: op.progress }, tenant);
      await appendEvent(q, {
        type: params.rollbackOf ? 'tenant.rolled_back' : 'tenant.promoted',
        tenant,
        operationId: op.id,
        data: {
          fromTier: params.fromTier,
          toTier: params.toTier,
          ...(params.rollbackOf ? { rollbackOf: params.rollbackOf } : {}),
          ...(typeof op.progress.rollbackUntil === 'string'
            ? { rollbackUntil: op.progress.rollbackUntil }
            : {}),
        },
        dedupeKey: `promotion:${op.id}`,
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
   * A rotation is recorded with its operation, in one transaction fenced by the lease: the login it
   * made current and the grace period of the old one (rotation/lifecycle.ts). The tenant is untouched.
   */
  private async succeedRotation(
    op: Claimed,
    tenant: Tenant,
    steps: OperationStep[],
    log: Logger,
  ): Promise<void> {
    const done = await this.db.tx(async (q) => {
      if (!(await markSucceeded(q, op.id, op.owner, steps))) return false;
      await recordRotation(q, op, tenant);
      return true;
    });
    if (!done) {
      log.warn('lease lost before the rotation was recorded; its new runner records it');
      return;
    }
    this.metrics.operations.inc({ kind: op.kind, status: 'succeeded' });
    log.info({ rotate: op.params.rotate, subject: op.params.subject }, 'rotation done');
  }

  /** The promotion-cleanup job: see `PromotionLifecycle.cleanup`. */
  async cleanupPromotion(operationId: string): Promise<void> {
    await this.promotions.cleanup(operationId);
  }

  /** The periodic promotion orphan sweep: see `PromotionLifecycle.sweepOrphans`. */
  async sweepPromotionOrphans(): Promise<string[]> {
    return this.promotions.sweepOrphans();
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
    kind: 'offboard' | 'promote' | 'rotate',
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
          tenant: stepTenantOf(tenant),
          signal,
          params: op.params,
          progress: op.progress,
          report: (patch) => this.report(op, patch),
        });
        step.status = 'succeeded';
      } catch (e) {
        step.status = 'failed';
        failStep(step, e);
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
    return this.db.tx((q) => holdLease(q, op.id, op.owner, this.opts.leaseMs));
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
    if (op.kind === 'rotate' && isRotationParams(op.params)) {
      // Whatever a password rotation enabled and did not publish is disabled again.
      const names = this.engine.rotationAbortSteps?.(op.params) ?? [];
      const out = await this.compensate(op, tenant, steps, 'rotate', names, 'abort:', signal);
      if (!out.ok) cleanup = '; abort incomplete, see the abort step';
    }
    const resumable = forward || (op.kind === 'onboard' && !this.engine.rollsBackFailedOnboarding);
    if (forward) {
      cleanup = `; routing already points at the new placement, so the promotion is not undone: resume it (POST /v1/operations/${op.id}/resume) to finish the cutover`;
    } else if (resumable) {
      cleanup = `; kept as it is: resume it (POST /v1/operations/${op.id}/resume) once the cause is fixed`;
    }
    // What a failure leaves the tenant as (worker/lifecycle.ts: a suspended tenant stays suspended).
    const tenantStatus = statusAfterFailure(op.kind, tenant.status);
    const recorded = await this.db.tx(async (q) => {
      if (!(await markFailed(q, op.id, op.owner, steps, `${reason}${cleanup}`, resumable))) return false;
      await setTenantStatus(q, tenant.id, tenantStatus);
      await appendAudit(q, {
        actor: WORKER_ACTOR,
        action: `operation.${op.kind}.failed`,
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        operationId: op.id,
        details: { error: reason, resumable },
      });
      await failExportsOf(q, op.id, reason);
      await appendEvent(q, {
        type: 'operation.failed',
        tenant,
        operationId: op.id,
        data: { kind: op.kind, error: `${reason}${cleanup}`, resumable, tenantStatus },
        onlyIf: { operationId: op.id, status: 'failed' },
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
      const ids = await requeueExpiredLeases(q);
      for (const id of ids) await enqueueOperationJob(q, id, this.opts.maxAttempts + 2);
      return ids;
    });
  }
}
