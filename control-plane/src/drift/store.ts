import { randomBytes } from 'node:crypto';
import type { Queryable } from '../domain/queryable.js';
import type { LimitOverrides } from '../domain/tenant.js';
import type { Tier } from '../domain/tiers.js';
import type { PolicyRow } from './policy.js';
import type { DriftMode, Finding, SkippedTenant, TenantRecord } from './types.js';

/** `dr_<12 hex of ms time><16 hex random>`, sortable like operation ids. */
export const newDriftRunId = (): string =>
  `dr_${Date.now().toString(16).padStart(12, '0')}${randomBytes(8).toString('hex')}`;
export const DRIFT_RUN_ID_PATTERN = '^dr_[0-9a-f]{28}$';

export type RunTrigger = 'schedule' | 'api' | 'manual';
export type RunStatus = 'queued' | 'running' | 'succeeded' | 'failed';

export interface RemediationRecord {
  tenantId: string | null;
  tenantSlug: string | null;
  operationId: string | null;
  /** in-progress: the operation had not ended when the sweep stopped waiting; the next sweep judges it. */
  status: 'succeeded' | 'failed' | 'skipped' | 'in-progress';
  steps: string[];
  repaired: number;
  remaining: number;
  reason?: string;
}

export interface RunSummary {
  findings: number;
  open: number;
  repaired: number;
  unrepaired: number;
  ignored: number;
  byKind: Record<string, number>;
  byCategory: Record<string, number>;
  /** Checks the sweep could not make, with why (the credentials check without pg_authid, say). */
  notChecked?: { check: string; reason: string }[];
}

export interface DriftRun {
  id: string;
  trigger: RunTrigger;
  requestedBy: string | null;
  status: RunStatus;
  target: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  durationMs: number | null;
  tenantsChecked: number;
  skipped: SkippedTenant[];
  remediation: RemediationRecord[];
  summary: Partial<RunSummary>;
  timings: Record<string, number>;
  error: string | null;
}

export interface StoredFinding extends Finding {
  resolution: 'open' | 'repaired' | 'unrepaired';
  operationId: string | null;
  /** `platform`: a platform resource's finding (no tenant, not an orphan); `tenant`: the rest. */
  scope: 'tenant' | 'platform';
}

interface RunRow {
  id: string;
  trigger: RunTrigger;
  requested_by: string | null;
  status: RunStatus;
  target: string;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  duration_ms: number | null;
  tenants_checked: number;
  skipped: SkippedTenant[];
  remediation: RemediationRecord[];
  summary: Partial<RunSummary>;
  timings: Record<string, number>;
  error: string | null;
}

const toRun = (r: RunRow): DriftRun => ({
  id: r.id,
  trigger: r.trigger,
  requestedBy: r.requested_by,
  status: r.status,
  target: r.target,
  createdAt: r.created_at.toISOString(),
  startedAt: r.started_at?.toISOString() ?? null,
  finishedAt: r.finished_at?.toISOString() ?? null,
  durationMs: r.duration_ms,
  tenantsChecked: r.tenants_checked,
  skipped: r.skipped,
  remediation: r.remediation,
  summary: r.summary,
  timings: r.timings,
  error: r.error,
});

export async function insertRun(
  q: Queryable,
  run: { id: string; trigger: RunTrigger; requestedBy: string | null; status: RunStatus; target: string },
): Promise<DriftRun> {
  const { rows } = await q.query<RunRow & Record<string, unknown>>(
    `INSERT INTO drift_runs (id, trigger, requested_by, status, target, started_at)
     VALUES ($1, $2, $3, $4, $5, CASE WHEN $4 = 'running' THEN now() END) RETURNING *`,
    [run.id, run.trigger, run.requestedBy, run.status, run.target],
  );
  return toRun(rows[0] as RunRow);
}

export async function pendingRun(q: Queryable): Promise<DriftRun | null> {
  const { rows } = await q.query<RunRow & Record<string, unknown>>(
    `SELECT * FROM drift_runs WHERE status IN ('queued', 'running') LIMIT 1`,
  );
  return rows[0] ? toRun(rows[0] as RunRow) : null;
}

/** Starts a queued run (the given one, or any): null when there is none left to start. */
export async function claimQueuedRun(q: Queryable, id: string | undefined): Promise<DriftRun | null> {
  const { rows } = await q.query<RunRow & Record<string, unknown>>(
    `UPDATE drift_runs SET status = 'running', started_at = now()
      WHERE id = (SELECT id FROM drift_runs WHERE status = 'queued' AND ($1::text IS NULL OR id = $1)
                   ORDER BY created_at LIMIT 1)
      RETURNING *`,
    [id ?? null],
  );
  return rows[0] ? toRun(rows[0] as RunRow) : null;
}

/** Runs left `running` by a process that died (the caller holds the sweep lock, so none is alive). */
export async function failInterruptedRuns(q: Queryable): Promise<string[]> {
  const { rows } = await q.query<{ id: string }>(
    `UPDATE drift_runs SET status = 'failed', error = 'interrupted: the process running the sweep stopped',
            finished_at = now() WHERE status = 'running' RETURNING id`,
  );
  return rows.map((r) => r.id);
}

export async function finishRun(
  q: Queryable,
  id: string,
  r: {
    status: 'succeeded' | 'failed';
    durationMs: number;
    tenantsChecked: number;
    skipped: SkippedTenant[];
    remediation: RemediationRecord[];
    summary: Partial<RunSummary>;
    timings: Record<string, number>;
    error: string | null;
  },
): Promise<void> {
  await q.query(
    `UPDATE drift_runs SET status = $2, finished_at = now(), duration_ms = $3, tenants_checked = $4,
            skipped = $5::jsonb, remediation = $6::jsonb, summary = $7::jsonb, timings = $8::jsonb, error = $9
      WHERE id = $1`,
    [
      id,
      r.status,
      Math.round(r.durationMs),
      r.tenantsChecked,
      JSON.stringify(r.skipped),
      JSON.stringify(r.remediation),
      JSON.stringify(r.summary),
      JSON.stringify(r.timings),
      r.error,
    ],
  );
}

/** All findings of a run in one statement (json_to_recordset), whatever their number. */
export async function insertFindings(q: Queryable, runId: string, findings: Finding[]): Promise<void> {
  if (findings.length === 0) return;
  const rows = findings.map((f, i) => ({
    seq: i + 1,
    tenant_id: f.tenantId,
    tenant_slug: f.tenantSlug,
    resource: f.resource,
    name: f.name,
    kind: f.kind,
    field: f.field,
    desired: f.desired,
    actual: f.actual,
    category: f.category,
    affects: f.affects ?? null,
  }));
  await q.query(
    `INSERT INTO drift_findings (run_id, seq, tenant_id, tenant_slug, resource, name, kind, field, desired, actual, category, affects)
     SELECT $1, x.seq, x.tenant_id, x.tenant_slug, x.resource, x.name, x.kind, x.field, x.desired, x.actual, x.category, x.affects
       FROM jsonb_to_recordset($2::jsonb) AS x(seq int, tenant_id uuid, tenant_slug text, resource text, name text,
            kind text, field text, desired jsonb, actual jsonb, category text, affects text[])`,
    [runId, JSON.stringify(rows)],
  );
}

/**
 * Names the operation that acts on these findings (by their 1-based position in the run): called in
 * the transaction that creates it, so a finding never lacks the operation the run lists for it.
 */
export async function assignOperation(
  q: Queryable,
  runId: string,
  seqs: number[],
  operationId: string,
): Promise<void> {
  if (seqs.length === 0) return;
  await q.query('UPDATE drift_findings SET operation_id = $3 WHERE run_id = $1 AND seq = ANY ($2::int[])', [
    runId,
    seqs,
    operationId,
  ]);
}

/** Marks findings (by their 1-based position in the run) as repaired or unrepaired by an operation. */
export async function resolveFindings(
  q: Queryable,
  runId: string,
  updates: { seq: number; resolution: 'repaired' | 'unrepaired'; operationId: string | null }[],
): Promise<void> {
  if (updates.length === 0) return;
  await q.query(
    `UPDATE drift_findings f SET resolution = x.resolution, operation_id = x.operation_id
       FROM jsonb_to_recordset($2::jsonb) AS x(seq int, resolution text, operation_id text)
      WHERE f.run_id = $1 AND f.seq = x.seq`,
    [runId, JSON.stringify(updates)],
  );
}

export async function findRun(q: Queryable, id: string): Promise<DriftRun | null> {
  const { rows } = await q.query<RunRow & Record<string, unknown>>('SELECT * FROM drift_runs WHERE id = $1', [
    id,
  ]);
  return rows[0] ? toRun(rows[0] as RunRow) : null;
}

export async function listRuns(q: Queryable, limit: number): Promise<DriftRun[]> {
  const { rows } = await q.query<RunRow & Record<string, unknown>>(
    'SELECT * FROM drift_runs ORDER BY created_at DESC, id DESC LIMIT $1',
    [limit],
  );
  return rows.map((r) => toRun(r as RunRow));
}

interface FindingRow {
  tenant_id: string | null;
  tenant_slug: string | null;
  resource: Finding['resource'];
  name: string;
  kind: Finding['kind'];
  field: string;
  desired: Finding['desired'];
  actual: Finding['actual'];
  category: Finding['category'];
  resolution: StoredFinding['resolution'];
  operation_id: string | null;
  affects: Tier[] | null;
}

const toFinding = (r: FindingRow): StoredFinding => ({
  tenantId: r.tenant_id,
  tenantSlug: r.tenant_slug,
  resource: r.resource,
  name: r.name,
  kind: r.kind,
  field: r.field,
  desired: r.desired,
  actual: r.actual,
  category: r.category,
  resolution: r.resolution,
  operationId: r.operation_id,
  ...(r.affects ? { affects: r.affects } : {}),
  scope: r.tenant_id === null && r.category !== 'orphan' ? 'platform' : 'tenant',
});

/**
 * A run's findings, or one tenant's: those naming it and, with `tier`, the platform findings that
 * affect that tier (a pool tenant loses its isolation with the pool tables' forced RLS).
 */
export async function runFindings(
  q: Queryable,
  runId: string,
  opts: { tenantId?: string; tier?: Tier; openOnly?: boolean; limit: number },
): Promise<StoredFinding[]> {
  const { rows } = await q.query<FindingRow & Record<string, unknown>>(
    `SELECT tenant_id, tenant_slug, resource, name, kind, field, desired, actual, category, resolution, operation_id, affects
       FROM drift_findings
      WHERE run_id = $1
        AND ($2::uuid IS NULL OR tenant_id = $2 OR (tenant_id IS NULL AND $5::text = ANY (affects)))
        AND (NOT $3 OR resolution <> 'repaired')
      ORDER BY seq LIMIT $4`,
    [runId, opts.tenantId ?? null, opts.openOnly ?? false, opts.limit, opts.tier ?? null],
  );
  return rows.map((r) => toFinding(r as FindingRow));
}

/**
 * Forgets runs (and, by cascade, their findings) older than the retention, never the latest finished
 * one: at a sweep every 15 minutes, a month is about 3,000 runs.
 */
export async function pruneRuns(q: Queryable, retentionDays: number): Promise<number> {
  const { rowCount } = await q.query(
    `DELETE FROM drift_runs
      WHERE created_at < now() - make_interval(days => $1)
        AND status IN ('succeeded', 'failed')
        AND id <> coalesce((SELECT id FROM drift_runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1), '')`,
    [retentionDays],
  );
  return rowCount ?? 0;
}

/** The latest finished sweep. */
export async function latestFinishedRun(q: Queryable): Promise<DriftRun | null> {
  const { rows } = await q.query<RunRow & Record<string, unknown>>(
    `SELECT * FROM drift_runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1`,
  );
  return rows[0] ? toRun(rows[0] as RunRow) : null;
}

/* ---------- policies */

export async function loadPolicies(q: Queryable): Promise<PolicyRow[]> {
  const { rows } = await q.query<{
    tier: Tier | null;
    tenant_id: string | null;
    mode: DriftMode | null;
    ignore_fields: string[];
  }>('SELECT tier, tenant_id, mode, ignore_fields FROM drift_policies');
  return rows.map((r) => ({
    tier: r.tier,
    tenantId: r.tenant_id,
    mode: r.mode,
    ignoreFields: r.ignore_fields,
  }));
}

export interface PolicyView {
  scope: 'global' | 'tier' | 'tenant';
  tier: Tier | null;
  tenantSlug: string | null;
  mode: DriftMode | null;
  ignoreFields: string[];
  updatedAt: string;
  updatedBy: string | null;
}

export async function listPolicies(q: Queryable): Promise<PolicyView[]> {
  const { rows } = await q.query<{
    tier: Tier | null;
    slug: string | null;
    tenant_id: string | null;
    mode: DriftMode | null;
    ignore_fields: string[];
    updated_at: Date;
    updated_by: string | null;
  }>(
    `SELECT p.tier, p.tenant_id, t.slug, p.mode, p.ignore_fields, p.updated_at, p.updated_by
       FROM drift_policies p LEFT JOIN tenants t ON t.id = p.tenant_id
      ORDER BY (p.tenant_id IS NOT NULL), (p.tier IS NOT NULL), p.tier, t.slug`,
  );
  return rows.map((r) => ({
    scope: r.tenant_id ? 'tenant' : r.tier ? 'tier' : 'global',
    tier: r.tier,
    tenantSlug: r.slug,
    mode: r.mode,
    ignoreFields: r.ignore_fields,
    updatedAt: r.updated_at.toISOString(),
    updatedBy: r.updated_by,
  }));
}

export async function upsertPolicy(
  q: Queryable,
  p: {
    tier: Tier | null;
    tenantId: string | null;
    mode: DriftMode | null;
    ignoreFields: string[];
    by: string;
  },
): Promise<void> {
  await q.query(
    `INSERT INTO drift_policies (tier, tenant_id, mode, ignore_fields, updated_by) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (coalesce(tier, ''), coalesce(tenant_id::text, ''))
     DO UPDATE SET mode = excluded.mode, ignore_fields = excluded.ignore_fields, updated_at = now(),
                   updated_by = excluded.updated_by`,
    [p.tier, p.tenantId, p.mode, p.ignoreFields, p.by],
  );
}

/* ---------- the control plane's view, read once per sweep */

export interface Snapshot {
  tenants: TenantRecord[];
  /** tenant id → the operation that makes it busy (active, or created/finished since the sweep began) */
  busy: Map<string, { operationId: string; kind: string; status: string }>;
  /** tenant id → the tiers whose placements are kept for promotions' rollback windows */
  retained: Map<string, Set<Tier>>;
}

/** What the sweep reads before it observes: the database's clock and the operations then in flight. */
export interface SweepStart {
  since: Date;
  active: Map<string, { operationId: string; kind: string; status: string }>;
}

export async function readSweepStart(q: Queryable): Promise<SweepStart> {
  const { rows } = await q.query<{
    now: Date;
    tenant_id: string | null;
    id: string | null;
    kind: string;
    status: string;
  }>(
    `SELECT c.now, o.tenant_id, o.id, o.kind, o.status
       FROM (SELECT clock_timestamp() AS now) c
       LEFT JOIN operations o ON o.status IN ('queued', 'running')`,
  );
  const active = new Map<string, { operationId: string; kind: string; status: string }>();
  for (const r of rows) {
    if (r.tenant_id && r.id) active.set(r.tenant_id, { operationId: r.id, kind: r.kind, status: r.status });
  }
  return { since: rows[0]?.now ?? new Date(), active };
}

/**
 * The control plane's view, read after the catalogs. A tenant is busy when an operation was in flight
 * as observation began, is in flight now, or was created or finished since: `created_at` and
 * `finished_at` are the writing transaction's start, so an operation whose transaction straddles the
 * start is either seen in flight by `readSweepStart` or stamped at or after `since`.
 */
export async function readSnapshot(q: Queryable, start: SweepStart): Promise<Snapshot> {
  const [tenants, ops, retained] = await Promise.all([
    q.query<{
      id: string;
      slug: string;
      tier: Tier;
      status: string;
      template_version: number;
      outputs: Record<string, unknown>;
      limits: LimitOverrides | null;
    }>(
      // Only the outputs a diff compares (the key id, the login the descriptor names): the rest is not
      // read, so not parsed. A tenant's limit overrides are expected state (docs/lifecycle.md); none is
      // the common case, read as null.
      `SELECT id, slug, tier, status, template_version,
              jsonb_strip_nulls(jsonb_build_object('keyId', outputs->'keyId', 'user', outputs->'user')) AS outputs,
              nullif(limits, '{}'::jsonb) AS limits
         FROM tenants`,
    ),
    q.query<{ tenant_id: string; id: string; kind: string; status: string }>(
      `SELECT DISTINCT ON (tenant_id) tenant_id, id, kind, status FROM operations
        WHERE status IN ('queued', 'running') OR created_at >= $1 OR finished_at >= $1
           -- A failed operation kept to be resumed (a promotion past its routing flip) holds both placements.
           OR (status = 'failed' AND (progress ->> 'resumable') = 'true')
        ORDER BY tenant_id, (status IN ('queued', 'running')) DESC, created_at DESC`,
      [start.since],
    ),
    q.query<{ tenant_id: string; from_tier: Tier }>(
      `SELECT tenant_id, params->>'fromTier' AS from_tier FROM operations
        WHERE kind = 'promote' AND status = 'succeeded' AND NOT (params ? 'rollbackOf')
          AND NOT (progress ? 'cleanedUp') AND NOT (progress ? 'rolledBack')`,
    ),
  ]);
  const busy = new Map(start.active);
  for (const r of ops.rows) busy.set(r.tenant_id, { operationId: r.id, kind: r.kind, status: r.status });
  const kept = new Map<string, Set<Tier>>();
  for (const r of retained.rows) kept.set(r.tenant_id, (kept.get(r.tenant_id) ?? new Set()).add(r.from_tier));
  return {
    tenants: tenants.rows.map((r) => ({
      id: r.id,
      slug: r.slug,
      tier: r.tier,
      status: r.status,
      templateVersion: r.template_version,
      outputs: r.outputs,
      ...(r.limits ? { limits: r.limits } : {}),
    })),
    busy,
    retained: kept,
  };
}
