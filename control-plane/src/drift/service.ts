import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import { enqueueDriftRun } from '../db/jobs.js';
import { findTenantBySlug } from '../db/repo.js';
import { TenantryError } from '../domain/errors.js';
import type { Tier } from '../domain/tiers.js';
import {
  type DriftRun,
  findRun,
  insertRun,
  latestFinishedRun,
  listPolicies,
  listRuns,
  newDriftRunId,
  type PolicyView,
  pendingRun,
  runFindings,
  type StoredFinding,
  upsertPolicy,
} from './store.js';
import type { DriftSweeper, SweepResult } from './sweep.js';
import type { DriftMode } from './types.js';

/** The sweep's task name is db/jobs.ts's, with its SQL; re-exported for the job queue's wiring. */

/** Findings returned with one run; the rest are counted in its summary. */
const RUN_FINDINGS_LIMIT = 1000;

interface Ctx {
  actor: { id: string | null; name: string; role: string };
  requestId?: string;
}

export interface TenantDrift {
  tenantSlug: string;
  runId: string | null;
  observedAt: string | null;
  /** Set when the latest sweep skipped this tenant (in mid-operation, say). */
  skipped: { reason: string; detail: string } | null;
  findings: StoredFinding[];
}

/** What routes and the job queue call; no Fastify, no business transactions in handlers. */
export class DriftService {
  constructor(
    private readonly db: Db,
    private readonly sweeper: DriftSweeper,
    readonly target: 'local' | 'aws',
  ) {}

  /**
   * Queues a sweep: the run row, its job and the audit record in one transaction, then 202. While a
   * sweep is queued or running, that one is returned instead (the unique index keeps it at one).
   */
  async requestRun(ctx: Ctx): Promise<{ run: DriftRun; created: boolean }> {
    for (let attempt = 0; ; attempt++) {
      const existing = await pendingRun(this.db);
      if (existing) return { run: existing, created: false };
      try {
        const run = await this.db.tx(async (q) => {
          const r = await insertRun(q, {
            id: newDriftRunId(),
            trigger: 'api',
            requestedBy: ctx.actor.name,
            status: 'queued',
            target: this.target,
          });
          await enqueueDriftRun(q, r.id);
          await appendAudit(q, {
            actor: ctx.actor,
            action: 'drift.run.requested',
            requestId: ctx.requestId ?? null,
            details: { driftRunId: r.id },
          });
          return r;
        });
        return { run, created: true };
      } catch (e) {
        if ((e as { code?: string }).code !== '23505' || attempt > 2) throw e; // lost a race: return the winner
      }
    }
  }

  /** The job queue's entry point (cron ticks carry no run id; API requests do). */
  async runTask(payload: unknown): Promise<void> {
    const runId = (payload as { runId?: unknown } | null)?.runId;
    const res = await this.sweeper.run(
      typeof runId === 'string' ? { runId, trigger: 'api' } : { trigger: 'schedule' },
    );
    if (res === null && typeof runId === 'string') {
      const run = await findRun(this.db, runId);
      // Another sweep holds the lock: fail this attempt so the queue retries it with backoff.
      if (run?.status === 'queued') throw new Error('another drift sweep is running; retrying later');
    }
  }

  /** Runs a sweep in the caller's process (tests, the benchmark, an operator's script). */
  runNow(trigger: 'manual' | 'schedule' = 'manual'): Promise<SweepResult | null> {
    return this.sweeper.run({ trigger });
  }

  async getRun(id: string): Promise<DriftRun & { findings: StoredFinding[]; findingsTruncated: boolean }> {
    const run = await findRun(this.db, id);
    if (!run) throw new TenantryError('OPERATION_NOT_FOUND', `no drift run ${id}`);
    const findings = await runFindings(this.db, id, { limit: RUN_FINDINGS_LIMIT + 1 });
    return {
      ...run,
      findings: findings.slice(0, RUN_FINDINGS_LIMIT),
      findingsTruncated: findings.length > RUN_FINDINGS_LIMIT,
    };
  }

  listRuns(limit: number): Promise<DriftRun[]> {
    return listRuns(this.db, limit);
  }

  /**
   * One tenant's current findings: those of the latest finished sweep not since repaired, its own
   * and the platform's that affect its tier (marked `scope: 'platform'`).
   */
  async tenantDrift(slug: string): Promise<TenantDrift> {
    const tenant = await findTenantBySlug(this.db, slug);
    if (!tenant) throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
    const run = await latestFinishedRun(this.db);
    if (!run) return { tenantSlug: slug, runId: null, observedAt: null, skipped: null, findings: [] };
    const skip = run.skipped.find((s) => s.tenantId === tenant.id);
    return {
      tenantSlug: slug,
      runId: run.id,
      observedAt: run.startedAt,
      skipped: skip ? { reason: skip.reason, detail: skip.detail } : null,
      findings: await runFindings(this.db, run.id, {
        tenantId: tenant.id,
        tier: tenant.tier,
        openOnly: true,
        limit: RUN_FINDINGS_LIMIT,
      }),
    };
  }

  listPolicies(): Promise<PolicyView[]> {
    return listPolicies(this.db);
  }

  /** Sets one policy level (global, a tier, or a tenant), audited in the same transaction. */
  async setPolicy(
    ctx: Ctx,
    p: { tier?: Tier; tenant?: string; mode: DriftMode | null; ignoreFields: string[] },
  ): Promise<PolicyView[]> {
    if (p.tier && p.tenant)
      throw new TenantryError('VALIDATION_FAILED', 'set either tier or tenant, not both', {
        context: { field: 'tenant' },
      });
    await this.db.tx(async (q) => {
      let tenantId: string | null = null;
      if (p.tenant) {
        const t = await findTenantBySlug(q, p.tenant);
        if (!t || t.status === 'offboarded')
          throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${p.tenant}`);
        tenantId = t.id;
      }
      await upsertPolicy(q, {
        tier: p.tier ?? null,
        tenantId,
        mode: p.mode,
        ignoreFields: [...new Set(p.ignoreFields)].sort(),
        by: ctx.actor.name,
      });
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'drift.policy.set',
        tenantId,
        tenantSlug: p.tenant ?? null,
        requestId: ctx.requestId ?? null,
        details: { tier: p.tier ?? null, mode: p.mode, ignoreFields: p.ignoreFields },
      });
    });
    return listPolicies(this.db);
  }
}
