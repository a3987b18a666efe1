import type { Logger } from 'pino';
import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import { enqueueOperationJob } from '../db/jobs.js';
import { newOperationId } from '../domain/ids.js';
import type { OperationStep } from '../domain/tenant.js';
import { mapLimit } from '../lib/concurrency.js';
import { safeMessage } from '../lib/errors.js';
import { collectAfterBatch } from '../lib/memory.js';
import { appendDriftEvents } from './events.js';
import type { DriftMetrics } from './metrics.js';
import { isIgnored, PolicyBook } from './policy.js';
import {
  assignOperation,
  claimQueuedRun,
  type DriftRun,
  failInterruptedRuns,
  finishRun,
  insertFindings,
  insertRun,
  loadPolicies,
  newDriftRunId,
  pruneRuns,
  type RemediationRecord,
  type RunSummary,
  type RunTrigger,
  readSnapshot,
  readSweepStart,
  resolveFindings,
  type Snapshot,
} from './store.js';
import {
  type DetectInput,
  type DriftDetector,
  type DriftRemediator,
  type Finding,
  findingKey,
  type SkippedTenant,
  type TenantRecord,
} from './types.js';

const ACTOR = { id: null, name: 'tenantry-drift', role: 'system' };
const SWEEP_LOCK = 'tenantry.drift-sweep';

export interface SweepResult {
  run: DriftRun;
  findings: (Finding & { resolution: 'open' | 'repaired' | 'unrepaired' })[];
}

export interface SweeperOptions {
  /** Reconcile operations this sweep drives at once (the job queue's workers may run others). */
  remediationConcurrency?: number;
  /** How long a sweep waits for its reconcile operations before recording them as still in progress. */
  remediationTimeoutMs?: number;
  /** Attempts of a reconcile operation's job, like any other operation's. */
  maxAttempts?: number;
  /**
   * Runs one operation in this process (the executor's `run`): the sweep drives its own reconcile
   * operations rather than wait for a free worker slot. The job queue holds a job for each too, so a
   * crash of this process leaves them to another worker; the executor's claim makes one runner win.
   */
  runOperation?: (operationId: string) => Promise<void>;
  /** Runs and their findings are kept this long (the latest finished one always). */
  retentionDays?: number;
}

interface Group {
  tenant: TenantRecord | null;
  items: { f: Finding; seq: number }[];
}

interface Started {
  group: Group;
  operationId: string | null;
  /** For the platform group, run by the sweep itself. */
  steps: string[];
  status: 'queued' | 'skipped' | 'succeeded' | 'failed';
  reason?: string;
}

/**
 * One drift sweep: observe the fleet in batch, diff, apply policy, record the run and its findings,
 * remediate where policy says so (one `reconcile` operation per tenant, run by the executor through
 * the job queue and serialized with the tenant's other operations), then re-observe once to confirm.
 * A session advisory lock makes sweeps exclusive across processes; the job queue's cron starts at
 * most one per tick.
 */
export class DriftSweeper {
  constructor(
    private readonly db: Db,
    private readonly detector: DriftDetector,
    private readonly remediator: DriftRemediator,
    private readonly metrics: DriftMetrics,
    private readonly log: Logger,
    private readonly opts: SweeperOptions = {},
  ) {}

  /**
   * Runs a sweep: the queued run `runId` (an API request), else any queued run, else a new one.
   * Returns null when another sweep holds the lock (a scheduled tick then simply skips) or the
   * requested run was already done.
   */
  async run(opts: {
    runId?: string;
    trigger: RunTrigger;
    requestedBy?: string | null;
  }): Promise<SweepResult | null> {
    let swept = false;
    try {
      const out = await this.db.withSessionLock(SWEEP_LOCK, async () => {
        // Under the lock nothing else is sweeping: a run still `running` belongs to a dead process.
        const interrupted = await failInterruptedRuns(this.db);
        if (interrupted.length > 0)
          this.log.warn({ driftRunIds: interrupted }, 'failed drift runs interrupted by a crash');
        const run =
          (await claimQueuedRun(this.db, opts.runId)) ??
          (opts.runId
            ? null
            : await insertRun(this.db, {
                id: newDriftRunId(),
                trigger: opts.trigger,
                requestedBy: opts.requestedBy ?? null,
                status: 'running',
                target: this.detector.target,
              }));
        if (!run) return null;
        swept = true;
        return await this.sweep(run);
      });
      // Another sweep holds the lock: a scheduled tick then simply skips.
      return out ?? null;
    } finally {
      // The observed fleet is garbage now: give it back before the next sweep stacks on it.
      if (swept) collectAfterBatch();
    }
  }

  private async sweep(run: DriftRun): Promise<SweepResult> {
    const started = performance.now();
    const log = this.log.child({ driftRunId: run.id });
    try {
      // Operations in flight when observation begins, and any created or finished after, make their
      // tenant busy: the catalogs may show a tenant half-changed. Both read on the database's clock.
      const start = await readSweepStart(this.db);
      let skipped: SkippedTenant[] = [];
      const snapshot = async (): Promise<DetectInput> => {
        const judged = selectTenantsToCheck(await readSnapshot(this.db, start), this.detector.target);
        skipped = judged.skipped;
        return judged.input;
      };
      const detected = await this.detector.detect(snapshot);
      const tDetected = performance.now();
      const policies = new PolicyBook(await loadPolicies(this.db));
      const byId = new Map(detected.input.known.map((t) => [t.id, t]));
      const judgedById = new Map(detected.input.tenants.map((t) => [t.id, t]));
      const policyOf = (f: Finding) => {
        const t = f.tenantId ? byId.get(f.tenantId) : undefined;
        return policies.resolve(t ? { id: t.id, tier: t.tier } : null);
      };
      const kept: Finding[] = [];
      let ignored = 0;
      for (const f of detected.findings) {
        if (isIgnored(f, policyOf(f).ignoreFields)) ignored++;
        else kept.push(f);
      }
      const t1 = performance.now();
      // The findings and their drift.findings events (one per tenant with any, one for the platform's),
      // in one transaction.
      await this.db.tx(async (q) => {
        await insertFindings(q, run.id, kept);
        await appendDriftEvents(q, run.id, kept, byId);
      });
      const t2 = performance.now();

      // Remediation: group what policy allows and remediation can act on, per tenant (or the platform).
      const groups = new Map<string, Group>();
      kept.forEach((f, i) => {
        if (!this.remediator.remediable(f) || policyOf(f).mode !== 'remediate') return;
        const tenant = f.tenantId ? (judgedById.get(f.tenantId) ?? null) : null;
        if (f.tenantId && !tenant) return; // not judged (an orphan's former owner): report only
        const key = tenant?.id ?? 'platform';
        const g = groups.get(key) ?? { tenant, items: [] };
        g.items.push({ f, seq: i + 1 });
        groups.set(key, g);
      });
      const remediation: RemediationRecord[] = [];
      const resolutions = new Map<number, 'repaired' | 'unrepaired'>();
      const opOf = new Map<number, string | null>();
      if (groups.size > 0) {
        const outcomes = await this.remediateAll([...groups.values()], start.since, run.id, log);
        const re = await this.detector.detect(async () => detected.input);
        const still = new Set(re.findings.map(findingKey));
        for (const o of outcomes) {
          const g = o.group;
          const base = {
            tenantId: g.tenant?.id ?? null,
            tenantSlug: g.tenant?.slug ?? null,
            operationId: o.operationId,
            steps: o.steps,
          };
          if (o.status === 'skipped' || o.status === 'queued') {
            // Skipped: never started. Queued: still in flight at the timeout; the next sweep judges it.
            remediation.push({
              ...base,
              status: o.status === 'queued' ? 'in-progress' : 'skipped',
              repaired: 0,
              remaining: g.items.length,
              ...(o.reason ? { reason: o.reason } : {}),
            });
            continue;
          }
          let repaired = 0;
          for (const { f, seq } of g.items) {
            const ok = !still.has(findingKey(f));
            resolutions.set(seq, ok ? 'repaired' : 'unrepaired');
            opOf.set(seq, o.operationId);
            if (ok) repaired++;
          }
          const remaining = g.items.length - repaired;
          const status = o.status === 'failed' || remaining > 0 ? 'failed' : 'succeeded';
          const reason =
            o.reason ??
            (remaining > 0 ? `${remaining} finding(s) still present after remediation` : undefined);
          this.metrics.remediations.inc({ outcome: status });
          remediation.push({ ...base, status, repaired, remaining, ...(reason ? { reason } : {}) });
        }
        await resolveFindings(
          this.db,
          run.id,
          [...resolutions.entries()].map(([seq, resolution]) => ({
            seq,
            resolution,
            operationId: opOf.get(seq) ?? null,
          })),
        );
      }
      const t3 = performance.now();

      const findings = kept.map((f, i) => ({
        ...f,
        resolution: resolutions.get(i + 1) ?? ('open' as const),
      }));
      const open = findings.filter((f) => f.resolution !== 'repaired');
      const count = (key: (f: Finding) => string) =>
        open.reduce<Record<string, number>>((acc, f) => {
          acc[key(f)] = (acc[key(f)] ?? 0) + 1;
          return acc;
        }, {});
      const summary: RunSummary = {
        findings: kept.length,
        open: findings.filter((f) => f.resolution === 'open').length,
        repaired: findings.filter((f) => f.resolution === 'repaired').length,
        unrepaired: findings.filter((f) => f.resolution === 'unrepaired').length,
        ignored,
        byKind: count((f) => f.kind),
        byCategory: count((f) => f.category),
        ...(detected.notChecked ? { notChecked: detected.notChecked } : {}),
      };
      if (detected.notChecked) log.warn({ notChecked: detected.notChecked }, 'drift checks not made');
      const durationMs = performance.now() - started;
      const timings = {
        ...roundAll(detected.timings),
        policyMs: round(t1 - tDetected),
        recordMs: round(t2 - t1),
        remediationMs: round(t3 - t2),
      };
      const done = {
        status: 'succeeded' as const,
        durationMs,
        tenantsChecked: detected.input.tenants.length,
        skipped,
        remediation,
        summary,
        timings,
        error: null,
      };
      await finishRun(this.db, run.id, done);
      await pruneRuns(this.db, this.opts.retentionDays ?? 30);
      this.metrics.sweepDuration.observe({ trigger: run.trigger, outcome: 'succeeded' }, durationMs / 1000);
      log.info(
        {
          tenants: detected.input.tenants.length,
          skipped: skipped.length,
          ...summary,
          durationMs: round(durationMs),
        },
        'drift sweep finished',
      );
      return {
        run: { ...run, ...done, durationMs: Math.round(durationMs), error: null },
        findings,
      };
    } catch (e) {
      const durationMs = performance.now() - started;
      await finishRun(this.db, run.id, {
        status: 'failed',
        durationMs,
        tenantsChecked: 0,
        skipped: [],
        remediation: [],
        summary: {},
        timings: {},
        error: safeMessage(e),
      }).catch(() => undefined);
      this.metrics.sweepDuration.observe({ trigger: run.trigger, outcome: 'failed' }, durationMs / 1000);
      log.error({ err: safeMessage(e) }, 'drift sweep failed');
      throw e;
    }
  }

  /**
   * Starts one reconcile operation per tenant group (queued, with its job and audit record, in one
   * transaction), runs the platform's repairs itself, drives the operations and waits for them.
   */
  private async remediateAll(groups: Group[], since: Date, runId: string, log: Logger): Promise<Started[]> {
    const out: Started[] = [];
    const ops: Started[] = [];
    for (const g of groups) {
      const findings = g.items.map((x) => x.f);
      const plan = this.remediator.plan(g.tenant, findings);
      if (plan.length === 0) {
        out.push({ group: g, operationId: null, steps: [], status: 'skipped', reason: 'nothing to run' });
        continue;
      }
      if (!g.tenant) {
        out.push(await this.remediatePlatform(g, plan, runId, log));
        continue;
      }
      const operationId = await this.startOperation(
        g.tenant,
        plan,
        findings,
        g.items.map((x) => x.seq),
        since,
        runId,
      );
      const s: Started = operationId
        ? { group: g, operationId, steps: plan, status: 'queued' }
        : {
            group: g,
            operationId: null,
            steps: [],
            status: 'skipped',
            reason:
              'the tenant has an operation in flight (or had one since the sweep began); the next sweep retries',
          };
      out.push(s);
      if (operationId) ops.push(s);
    }
    if (ops.length === 0) return out;
    const run = this.opts.runOperation;
    if (run) {
      await mapLimit(ops, this.opts.remediationConcurrency ?? 4, async (o) => {
        // A transient failure asks the job queue for a retry; the wait below sees how it ends.
        await run(o.operationId as string).catch((e: unknown) =>
          log.warn(
            { operationId: o.operationId, err: safeMessage(e) },
            'reconcile attempt failed; the queue retries',
          ),
        );
      });
    }
    const ends = await this.waitForOperations(
      ops.map((o) => o.operationId as string),
      this.opts.remediationTimeoutMs ?? 300_000,
    );
    for (const o of ops) {
      const end = ends.get(o.operationId as string);
      if (!end) continue; // still in flight: recorded as in progress
      o.status = end.status === 'succeeded' ? 'succeeded' : 'failed';
      if (end.error) o.reason = end.error;
    }
    return out;
  }

  /** The platform's resources (pool tables, pool and owner roles) have no tenant and no operation. */
  private async remediatePlatform(g: Group, plan: string[], runId: string, log: Logger): Promise<Started> {
    const findings = g.items.map((x) => x.f);
    let error: string | undefined;
    for (const step of plan) {
      try {
        await this.remediator.runStep(null, step, findings);
      } catch (e) {
        error = `${step}: ${safeMessage(e)}`;
        log.warn({ step, err: error }, 'platform remediation step failed');
        break;
      }
    }
    await appendAudit(this.db, {
      actor: ACTOR,
      action: `drift.platform.remediation.${error ? 'failed' : 'succeeded'}`,
      details: { driftRunId: runId, steps: plan, findings: findings.length, ...(error ? { error } : {}) },
    });
    return {
      group: g,
      operationId: null,
      steps: plan,
      status: error ? 'failed' : 'succeeded',
      ...(error ? { reason: error } : {}),
    };
  }

  /**
   * Inserts a queued `reconcile` operation, its job and its audit record, in one transaction. The
   * partial unique index refuses it if the tenant has an operation in flight; it is also refused if
   * one was created or finished since the sweep began (the observation may predate its changes).
   * The findings it acts on (`seqs`) name it in the same transaction: a run that lists the operation
   * never shows them without it, however the operation or the sweep ends.
   */
  private async startOperation(
    t: TenantRecord,
    plan: string[],
    findings: Finding[],
    seqs: number[],
    since: Date,
    runId: string,
  ): Promise<string | null> {
    const id = newOperationId();
    const steps: OperationStep[] = plan.map((name) => ({
      name,
      status: 'pending',
      startedAt: null,
      finishedAt: null,
    }));
    try {
      return await this.db.tx(async (q) => {
        const { rowCount } = await q.query(
          `INSERT INTO operations (id, kind, tenant_id, status, steps, params)
           SELECT $1, 'reconcile', $2, 'queued', $3::jsonb, $4::jsonb
            WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $2 AND status = 'active')
              AND NOT EXISTS (SELECT 1 FROM operations WHERE tenant_id = $2
                               AND (status IN ('queued', 'running') OR created_at >= $5 OR finished_at >= $5))`,
          [id, t.id, JSON.stringify(steps), JSON.stringify({ driftRunId: runId, findings }), since],
        );
        if (!rowCount) return null;
        await assignOperation(q, runId, seqs, id);
        await enqueueOperationJob(q, id, this.opts.maxAttempts ?? 8);
        await appendAudit(q, {
          actor: ACTOR,
          action: 'operation.reconcile.requested',
          tenantId: t.id,
          tenantSlug: t.slug,
          operationId: id,
          details: { driftRunId: runId, findings: findings.length, steps: plan },
        });
        return id;
      });
    } catch (e) {
      if ((e as { code?: string }).code === '23505') return null; // another operation won the race
      throw e;
    }
  }

  /** Polls until every operation has ended or the timeout passes; returns those that ended. */
  private async waitForOperations(
    ids: string[],
    timeoutMs: number,
  ): Promise<Map<string, { status: string; error: string | null }>> {
    const ended = new Map<string, { status: string; error: string | null }>();
    const until = Date.now() + timeoutMs;
    for (let delay = 10; ; delay = Math.min(delay * 2, 500)) {
      const { rows } = await this.db.query<{ id: string; status: string; error: string | null }>(
        `SELECT id, status, error FROM operations WHERE id = ANY($1::text[]) AND status NOT IN ('queued', 'running')`,
        [ids.filter((id) => !ended.has(id))],
      );
      for (const r of rows) ended.set(r.id, { status: r.status, error: r.error });
      if (ended.size === ids.length || Date.now() >= until) return ended;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Splits the control plane's view into tenants to judge and tenants to skip (with the reason). */
export function selectTenantsToCheck(
  s: Snapshot,
  target: 'local' | 'aws' = 'local',
): { input: DetectInput; skipped: SkippedTenant[] } {
  const tenants: TenantRecord[] = [];
  const skipped: SkippedTenant[] = [];
  const busy = new Set<string>();
  for (const t of s.tenants) {
    const op = s.busy.get(t.id);
    if (op) {
      busy.add(t.id);
      if (t.status !== 'offboarded')
        skipped.push({
          tenantId: t.id,
          slug: t.slug,
          reason: 'in-flight-operation',
          detail: `${op.kind} ${op.operationId} (${op.status})`,
        });
      continue;
    }
    if (t.status === 'provisioning' || t.status === 'offboarding') {
      busy.add(t.id);
      skipped.push({ tenantId: t.id, slug: t.slug, reason: 'tenant-status', detail: t.status });
      continue;
    }
    if (t.status === 'failed') {
      skipped.push({ tenantId: t.id, slug: t.slug, reason: 'tenant-status', detail: 'failed' });
      continue;
    }
    // A suspended tenant is judged too, against its suspended state (its logins cut off, its pool rows
    // frozen: drift/diff.ts); its drift is reported, never remediated (a reconcile starts only for an
    // active tenant): POST …/suspension again re-applies the suspension.
    if (t.status !== 'active' && t.status !== 'suspended') continue;
    if (t.tier === 'account' && target === 'local') {
      skipped.push({ tenantId: t.id, slug: t.slug, reason: 'tier-not-on-target', detail: t.tier });
      continue;
    }
    tenants.push(t);
  }
  return { input: { tenants, busy, known: s.tenants, retained: s.retained }, skipped };
}

const round = (n: number) => Math.round(n * 10) / 10;
const roundAll = (o: Record<string, number>) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, round(v)]));
