import type { Queryable } from '../domain/queryable.js';
import type {
  FleetMember,
  OnError,
  RolloutStatus,
  RolloutTenantStatus,
  RolloutTier,
  Wave,
} from '../domain/rollout.js';

/**
 * The control-database SQL of fleet schema rollouts: the rollout, its ledger (`rollout_tenants`,
 * one row per tenant), the `migrate` operation each tenant's migration holds, the pool's recorded
 * version. The ledger and the operations change together, set-based, one statement per batch.
 */

/** Who the runner is in the audit log. */
export const ROLLOUT_ACTOR = { id: null, name: 'tenantry-rollout', role: 'system' };

/** A wave as the rollout records it: the request, and when it started and finished. */
export interface WaveRecord extends Wave {
  startedAt: string | null;
  finishedAt: string | null;
}

/** The pool's shared tables, migrated once before the first wave. */
export interface PlatformStep {
  status: 'pending' | 'running' | 'succeeded' | 'failed' | 'skipped';
  fromVersion?: number;
  version?: number;
  startedAt?: string;
  finishedAt?: string;
  durationMs?: number;
  error?: string;
  note?: string;
}

export interface Verification {
  checkedAt: string;
  checked: number;
  /** Tenants not compared (an operation in flight moves their placement). */
  busy: number;
  mismatched: { slug: string; tier: string; recorded: number; actual: number | null }[];
  mismatchCount: number;
}

export interface RolloutRow {
  id: string;
  toVersion: number;
  status: RolloutStatus;
  onError: OnError;
  maxFailures: number;
  waves: WaveRecord[];
  currentWave: number;
  platform: PlatformStep | Record<string, never>;
  verification: Verification | Record<string, never>;
  pauseReason: string | null;
  createdBy: string | null;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

const ROLLOUT_COLUMNS = `id, to_version AS "toVersion", status, on_error AS "onError", max_failures AS "maxFailures",
  waves, current_wave AS "currentWave", platform, verification, pause_reason AS "pauseReason",
  created_by AS "createdBy", created_at AS "createdAt", updated_at AS "updatedAt",
  started_at AS "startedAt", finished_at AS "finishedAt"`;

type Dated = Record<string, unknown>;
const iso = (v: unknown) => (v instanceof Date ? v.toISOString() : (v as string | null));
const toRollout = (r: Dated): RolloutRow =>
  ({
    ...r,
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
    startedAt: iso(r.startedAt),
    finishedAt: iso(r.finishedAt),
  }) as RolloutRow;

/** Every tenant a rollout can migrate: not offboarded or failed, on a tier the data plane holds. */
export async function liveFleet(q: Queryable): Promise<FleetMember[]> {
  const { rows } = await q.query<FleetMember & Dated>(
    `SELECT id, slug, tier, template_version AS version FROM tenants
      WHERE status IN ('active', 'provisioning', 'offboarding') AND tier <> 'account'`,
  );
  return rows;
}

export async function insertRollout(
  q: Queryable,
  r: {
    id: string;
    toVersion: number;
    onError: OnError;
    maxFailures: number;
    waves: WaveRecord[];
    createdBy: string | null;
  },
): Promise<void> {
  await q.query(
    `INSERT INTO rollouts (id, to_version, status, on_error, max_failures, waves, created_by)
     VALUES ($1, $2, 'running', $3, $4, $5::jsonb, $6)`,
    [r.id, r.toVersion, r.onError, r.maxFailures, JSON.stringify(r.waves), r.createdBy],
  );
}

export interface LedgerInsert {
  tenantId: string;
  slug: string;
  tier: RolloutTier;
  wave: number;
  status: 'pending' | 'skipped';
  fromVersion: number;
  note: string | null;
}

/**
 * A Postgres array literal of `xs`, each element quoted (null as NULL), for `$n::type[]`. pg's own
 * array serialization takes each element through its value preparation: 30 to 55 ms for the seven
 * arrays of a 10,000-tenant ledger, on the path of every POST, against 11 to 19 ms here.
 */
export const arrayLiteral = (xs: readonly (string | number | null)[]): string =>
  `{${xs.map((x) => (x === null ? 'NULL' : `"${String(x).replace(/["\\]/g, '\\$&')}"`)).join(',')}}`;

/** The ledger's rows, in one statement. */
export async function insertLedger(q: Queryable, rolloutId: string, rows: LedgerInsert[]): Promise<void> {
  if (rows.length === 0) return;
  await q.query(
    `INSERT INTO rollout_tenants (rollout_id, tenant_id, slug, tier, wave, status, from_version, version, note, finished_at)
     SELECT $1, x.tenant_id, x.slug, x.tier, x.wave, x.status, x.from_version, x.from_version, x.note,
            CASE WHEN x.status = 'skipped' THEN now() END
       FROM unnest($2::uuid[], $3::text[], $4::text[], $5::int[], $6::text[], $7::int[], $8::text[])
         AS x(tenant_id, slug, tier, wave, status, from_version, note)`,
    [
      rolloutId,
      arrayLiteral(rows.map((r) => r.tenantId)),
      arrayLiteral(rows.map((r) => r.slug)),
      arrayLiteral(rows.map((r) => r.tier)),
      arrayLiteral(rows.map((r) => r.wave)),
      arrayLiteral(rows.map((r) => r.status)),
      arrayLiteral(rows.map((r) => r.fromVersion)),
      arrayLiteral(rows.map((r) => r.note)),
    ],
  );
}

export async function findRollout(
  q: Queryable,
  id: string,
  opts: { forUpdate?: boolean } = {},
): Promise<RolloutRow | null> {
  const { rows } = await q.query<Dated>(
    `SELECT ${ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1 ${opts.forUpdate ? 'FOR UPDATE' : ''}`,
    [id],
  );
  return rows[0] ? toRollout(rows[0]) : null;
}

/** The rollout running or paused, if any. */
export async function openRollout(q: Queryable): Promise<RolloutRow | null> {
  const { rows } = await q.query<Dated>(
    `SELECT ${ROLLOUT_COLUMNS} FROM rollouts WHERE status IN ('running', 'paused') LIMIT 1`,
  );
  return rows[0] ? toRollout(rows[0]) : null;
}

export async function listRollouts(q: Queryable, limit: number): Promise<RolloutRow[]> {
  const { rows } = await q.query<Dated>(
    `SELECT ${ROLLOUT_COLUMNS} FROM rollouts ORDER BY created_at DESC, id DESC LIMIT $1`,
    [limit],
  );
  return rows.map(toRollout);
}

/**
 * Fresh planner statistics on the ledger, once a rollout's rows are in it. Without them the planner
 * takes a new rollout's id for a value it has never seen (about one row) while it has 10,000: from the
 * second rollout on, the runner's set-based statements chose plans that scan every ledger row of the
 * rollout for each row they write (the pool tenants' batches went from 45 ms to 550 ms each, the
 * result batches from 40 ms to 120 ms). ANALYZE samples at most 30,000 rows, whatever the table's size.
 */
export async function analyzeLedger(q: Queryable): Promise<void> {
  await q.query('ANALYZE rollout_tenants');
}

/** A rollout's status alone (the runner's check for a pause or cancel between batches). */
export async function rolloutStatus(q: Queryable, id: string): Promise<RolloutStatus | null> {
  const { rows } = await q.query<{ status: RolloutStatus }>('SELECT status FROM rollouts WHERE id = $1', [
    id,
  ]);
  return rows[0]?.status ?? null;
}

/** Rollouts whose runner must be (re)started: the running ones. */
export async function runningRolloutIds(q: Queryable): Promise<string[]> {
  const { rows } = await q.query<{ id: string }>(`SELECT id FROM rollouts WHERE status = 'running'`);
  return rows.map((r) => r.id);
}

/** Tenants per wave and status. */
export async function waveCounts(
  q: Queryable,
  rolloutIds: string[],
): Promise<{ rolloutId: string; wave: number; status: RolloutTenantStatus; n: number }[]> {
  const { rows } = await q.query<{ rolloutId: string; wave: number; status: RolloutTenantStatus; n: number }>(
    `SELECT rollout_id AS "rolloutId", wave, status, count(*)::int AS n FROM rollout_tenants
      WHERE rollout_id = ANY($1::text[]) GROUP BY 1, 2, 3`,
    [rolloutIds],
  );
  return rows;
}

/** Per wave: the seconds its tenants' migrations took (first start to last finish). */
export async function waveTimings(
  q: Queryable,
  rolloutId: string,
): Promise<{ wave: number; firstStartedAt: string | null; lastFinishedAt: string | null }[]> {
  const { rows } = await q.query<Dated>(
    `SELECT wave, min(started_at) AS "firstStartedAt", max(finished_at) AS "lastFinishedAt"
       FROM rollout_tenants WHERE rollout_id = $1 GROUP BY wave`,
    [rolloutId],
  );
  return rows.map((r) => ({
    wave: r.wave as number,
    firstStartedAt: iso(r.firstStartedAt),
    lastFinishedAt: iso(r.lastFinishedAt),
  }));
}

export interface LedgerRow {
  tenantId: string;
  slug: string;
  tier: RolloutTier;
  wave: number;
  status: RolloutTenantStatus;
  fromVersion: number;
  version: number;
  operationId: string | null;
  attempts: number;
  deferrals: number;
  error: string | null;
  note: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}

const LEDGER_COLUMNS = `tenant_id AS "tenantId", slug, tier, wave, status, from_version AS "fromVersion", version,
  operation_id AS "operationId", attempts, deferrals, error, note, started_at AS "startedAt", finished_at AS "finishedAt"`;
const toLedger = (r: Dated): LedgerRow =>
  ({ ...r, startedAt: iso(r.startedAt), finishedAt: iso(r.finishedAt) }) as LedgerRow;

/** A page of the ledger in slug order, after `afterSlug`. */
export async function ledgerPage(
  q: Queryable,
  rolloutId: string,
  opts: { statuses?: RolloutTenantStatus[]; wave?: number; afterSlug?: string; limit: number },
): Promise<LedgerRow[]> {
  const { rows } = await q.query<Dated>(
    `SELECT ${LEDGER_COLUMNS} FROM rollout_tenants
      WHERE rollout_id = $1 AND ($2::text[] IS NULL OR status = ANY($2::text[])) AND ($3::int IS NULL OR wave = $3)
        AND ($4::text IS NULL OR slug > $4)
      ORDER BY slug LIMIT $5`,
    [rolloutId, opts.statuses ?? null, opts.wave ?? null, opts.afterSlug ?? null, opts.limit],
  );
  return rows.map(toLedger);
}

/** One tenant's row of a rollout's ledger, locked. */
export async function ledgerTenant(q: Queryable, rolloutId: string, slug: string): Promise<LedgerRow | null> {
  const { rows } = await q.query<Dated>(
    `SELECT ${LEDGER_COLUMNS} FROM rollout_tenants WHERE rollout_id = $1 AND slug = $2
      ORDER BY (status <> 'skipped') DESC LIMIT 1 FOR UPDATE`,
    [rolloutId, slug],
  );
  return rows[0] ? toLedger(rows[0]) : null;
}

export async function setRolloutStatus(
  q: Queryable,
  id: string,
  status: RolloutStatus,
  pauseReason: string | null = null,
): Promise<void> {
  await q.query(
    `UPDATE rollouts SET status = $2, pause_reason = $3, updated_at = now(),
            finished_at = CASE WHEN $2 IN ('completed', 'cancelled') THEN now() ELSE NULL END
      WHERE id = $1`,
    [id, status, pauseReason],
  );
}

/** Only while the rollout is still running (a pause or cancel requested meanwhile wins). */
export async function pauseIfRunning(q: Queryable, id: string, reason: string): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE rollouts SET status = 'paused', pause_reason = $2, updated_at = now() WHERE id = $1 AND status = 'running'`,
    [id, reason],
  );
  return (rowCount ?? 0) > 0;
}

/** Completed, if still running with no tenant left to run (a retry may have reopened it meanwhile). */
export async function completeRollout(q: Queryable, id: string): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE rollouts SET status = 'completed', finished_at = now(), updated_at = now()
      WHERE id = $1 AND status = 'running'
        AND NOT EXISTS (SELECT 1 FROM rollout_tenants WHERE rollout_id = $1 AND status IN ('pending', 'running'))`,
    [id],
  );
  return (rowCount ?? 0) > 0;
}

export async function markRolloutStarted(q: Queryable, id: string): Promise<void> {
  await q.query(
    'UPDATE rollouts SET started_at = coalesce(started_at, now()), updated_at = now() WHERE id = $1',
    [id],
  );
}

export async function saveWaves(
  q: Queryable,
  id: string,
  waves: WaveRecord[],
  currentWave: number,
): Promise<void> {
  await q.query(
    'UPDATE rollouts SET waves = $2::jsonb, current_wave = $3, updated_at = now() WHERE id = $1',
    [id, JSON.stringify(waves), currentWave],
  );
}

export async function savePlatform(q: Queryable, id: string, platform: PlatformStep): Promise<void> {
  await q.query('UPDATE rollouts SET platform = $2::jsonb, updated_at = now() WHERE id = $1', [
    id,
    JSON.stringify(platform),
  ]);
}

export async function saveVerification(q: Queryable, id: string, v: Verification): Promise<void> {
  await q.query('UPDATE rollouts SET verification = $2::jsonb, updated_at = now() WHERE id = $1', [
    id,
    JSON.stringify(v),
  ]);
}

/** Failed and parked tenants of a rollout (what counts against maxFailures). */
export async function failureCount(q: Queryable, rolloutId: string): Promise<number> {
  const { rows } = await q.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM rollout_tenants WHERE rollout_id = $1 AND status IN ('failed', 'parked')`,
    [rolloutId],
  );
  return rows[0]?.n ?? 0;
}

/** On resume: the failures that paused the rollout are tried again. */
export async function retryFailed(q: Queryable, rolloutId: string): Promise<number> {
  const { rowCount } = await q.query(
    `UPDATE rollout_tenants SET status = 'pending', note = 'retried on resume', not_before = NULL, finished_at = NULL
      WHERE rollout_id = $1 AND status = 'failed'`,
    [rolloutId],
  );
  return rowCount ?? 0;
}

export async function retryTenant(q: Queryable, rolloutId: string, tenantId: string): Promise<void> {
  await q.query(
    `UPDATE rollout_tenants SET status = 'pending', note = 'retry requested', not_before = NULL, finished_at = NULL
      WHERE rollout_id = $1 AND tenant_id = $2`,
    [rolloutId, tenantId],
  );
}

/** On cancel: the tenants not started stay as they are, recorded as skipped. */
export async function skipPending(q: Queryable, rolloutId: string): Promise<number> {
  const { rowCount } = await q.query(
    `UPDATE rollout_tenants SET status = 'skipped', note = 'the rollout was cancelled', finished_at = now()
      WHERE rollout_id = $1 AND status = 'pending'`,
    [rolloutId],
  );
  return rowCount ?? 0;
}

/** The recorded version of the platform's shared tables (the pool), if known. */
export async function platformVersion(q: Queryable, component: 'pool'): Promise<number | null> {
  const { rows } = await q.query<{ version: number }>(
    'SELECT version FROM platform_schema_versions WHERE component = $1',
    [component],
  );
  return rows[0]?.version ?? null;
}

export async function setPlatformVersion(q: Queryable, component: 'pool', version: number): Promise<void> {
  await q.query(
    `INSERT INTO platform_schema_versions (component, version) VALUES ($1, $2)
     ON CONFLICT (component) DO UPDATE SET version = excluded.version, updated_at = now()`,
    [component, version],
  );
}

/* ---------------------------------------------------------------- the runner */

/** A pending tenant as the runner takes it, with its tenant row's current state. */
export interface Candidate {
  tenantId: string;
  slug: string;
  tier: RolloutTier;
  tenantStatus: string;
  version: number;
  /** Tiers whose placement a promotion keeps for its rollback window (a rollback moves back there). */
  retained: RolloutTier[];
}

/** The tiers of a tenant's placements kept for promotions' rollback windows (the source tiers). */
const RETAINED = (tenant: string) => `coalesce(array(
  SELECT DISTINCT o.params ->> 'fromTier' FROM operations o
   WHERE o.tenant_id = ${tenant} AND o.kind = 'promote' AND o.status = 'succeeded' AND NOT (o.params ? 'rollbackOf')
     AND NOT (o.progress ? 'cleanedUp') AND NOT (o.progress ? 'rolledBack')), '{}')`;

export async function retainedTiers(q: Queryable, tenantId: string): Promise<RolloutTier[]> {
  const { rows } = await q.query<{ retained: RolloutTier[] }>(`SELECT ${RETAINED('$1::uuid')} AS retained`, [
    tenantId,
  ]);
  return rows[0]?.retained ?? [];
}

/**
 * The caller's transaction commits without waiting for its WAL flush: for writes whose loss in a
 * Postgres crash only re-does work (a claim: its tenants go back to pending), as `Db.relaxed` does.
 */
export async function relaxCommit(q: Queryable): Promise<void> {
  await q.query('SET LOCAL synchronous_commit = off');
}

/** Up to `limit` pending tenants of a wave, due now, locked for the caller's transaction: its silos first (migration 0021). */
export async function pendingTenants(
  q: Queryable,
  rolloutId: string,
  wave: number,
  limit: number,
): Promise<Candidate[]> {
  const { rows } = await q.query<Candidate & Dated>(
    `SELECT rt.tenant_id AS "tenantId", t.slug, t.tier, t.status AS "tenantStatus", t.template_version AS version,
            ${RETAINED('t.id')} AS retained
       FROM rollout_tenants rt JOIN tenants t ON t.id = rt.tenant_id
      WHERE rt.rollout_id = $1 AND rt.wave = $2 AND rt.status = 'pending'
        AND (rt.not_before IS NULL OR rt.not_before <= now())
        AND NOT (t.tier = 'pool' AND t.status NOT IN ('offboarded', 'failed'))
      ORDER BY (rt.tier <> 'silo'), rt.slug LIMIT $3 FOR UPDATE OF rt SKIP LOCKED`,
    [rolloutId, wave, limit],
  );
  return rows;
}

/**
 * Live pool tenants of a wave, due now, moved to `toVersion` set-based: their rows live in the shared
 * tables, which the platform step already migrated, so a pool tenant's migration is its record. Each
 * tenant's row is locked (SKIP LOCKED), so an operation cannot start on it meanwhile (every use case
 * takes that lock first); one with an operation in flight, or a promotion stopped past its cutover, is
 * deferred instead. The record, the ledger and the audit record (`rollout.tenant.succeeded`) move in
 * one statement. Returns how many were moved and deferred.
 */
export async function settlePoolTenants(
  q: Queryable,
  rolloutId: string,
  wave: number,
  toVersion: number,
  limit: number,
): Promise<{ moved: number; deferred: number }> {
  const { rows } = await q.query<{ moved: number; deferred: number }>(
    `WITH c AS (
       SELECT rt.tenant_id, t.slug, rt.from_version,
              EXISTS (SELECT 1 FROM operations o WHERE o.tenant_id = t.id AND (o.status IN ('queued', 'running')
                        OR (o.kind = 'promote' AND o.status = 'failed' AND (o.progress ->> 'resumable') = 'true'))) AS busy
         FROM rollout_tenants rt JOIN tenants t ON t.id = rt.tenant_id
        WHERE rt.rollout_id = $1 AND rt.wave = $2 AND rt.status = 'pending' AND t.tier = 'pool'
          AND t.status NOT IN ('offboarded', 'failed') AND (rt.not_before IS NULL OR rt.not_before <= now())
        ORDER BY rt.slug LIMIT $4 FOR UPDATE OF rt, t SKIP LOCKED),
     ten AS (
       UPDATE tenants t SET template_version = greatest(t.template_version, $3), updated_at = now()
         FROM c WHERE t.id = c.tenant_id AND NOT c.busy RETURNING t.id),
     led AS (
       UPDATE rollout_tenants rt SET status = 'succeeded', version = $3, started_at = now(), finished_at = now(),
              error = NULL, note = 'pool: its rows moved with the shared tables'
         FROM c WHERE rt.rollout_id = $1 AND rt.tenant_id = c.tenant_id AND NOT c.busy RETURNING rt.tenant_id),
     audit AS (
       INSERT INTO audit_log (actor_id, actor_name, role, action, tenant_id, tenant_slug, details)
       SELECT NULL, $5, 'system', 'rollout.tenant.succeeded', c.tenant_id, c.slug,
              jsonb_build_object('rolloutId', $1::text, 'fromVersion', c.from_version, 'version', $3::int)
         FROM c WHERE NOT c.busy RETURNING 1),
     def AS (
       UPDATE rollout_tenants rt SET deferrals = rt.deferrals + 1,
              not_before = now() + make_interval(secs => 0.25 * least(rt.deferrals + 1, 8)),
              note = 'waiting for an operation in flight on the tenant'
         FROM c WHERE rt.rollout_id = $1 AND rt.tenant_id = c.tenant_id AND c.busy RETURNING 1)
     SELECT (SELECT count(*)::int FROM led) AS moved, (SELECT count(*)::int FROM def) AS deferred`,
    [rolloutId, wave, toVersion, limit, ROLLOUT_ACTOR.name],
  );
  return rows[0] ?? { moved: 0, deferred: 0 };
}

/**
 * When the earliest deferred tenant of a wave is due (0: now), or null if none waits: among its live
 * pool tenants (`pool`, moved set-based) or its other tenants (`private`).
 */
export async function nextDeferral(
  q: Queryable,
  rolloutId: string,
  wave: number,
  kind: 'pool' | 'private',
): Promise<number | null> {
  const { rows } = await q.query<{ ms: number | null }>(
    `SELECT ceil(extract(epoch FROM min(rt.not_before) - now()) * 1000)::int AS ms
       FROM rollout_tenants rt JOIN tenants t ON t.id = rt.tenant_id
      WHERE rt.rollout_id = $1 AND rt.wave = $2 AND rt.status = 'pending' AND rt.not_before IS NOT NULL
        AND (t.tier = 'pool' AND t.status NOT IN ('offboarded', 'failed')) = ($3 = 'pool')`,
    [rolloutId, wave, kind],
  );
  const ms = rows[0]?.ms;
  return ms === null || ms === undefined ? null : Math.max(0, ms);
}

/**
 * Takes tenants for migration: a `migrate` operation each, running under the runner's lease, and
 * their ledger rows `running`, in one statement. A tenant with another operation in flight (or a
 * promotion stopped past its cutover) gets no operation: the one-active-operation index refuses it.
 * Returns the tenants taken, with their operation ids.
 */
export async function claimTenants(
  q: Queryable,
  c: {
    rolloutId: string;
    toVersion: number;
    runnerId: string;
    leaseMs: number;
    tenants: { tenantId: string; operationId: string }[];
  },
): Promise<Map<string, string>> {
  const now = new Date().toISOString();
  const steps = [{ name: 'migrate', status: 'running', startedAt: now, finishedAt: null }];
  const { rows } = await q.query<{ tenant_id: string; operation_id: string }>(
    `WITH ins AS (
       INSERT INTO operations (id, kind, tenant_id, status, steps, params, attempts, lease_owner, lease_expires_at)
       SELECT x.op, 'migrate', x.tenant_id, 'running', $3::jsonb,
              jsonb_build_object('rolloutId', $4::text, 'toVersion', $5::int), 1, $6,
              now() + make_interval(secs => $7::double precision / 1000)
         FROM unnest($1::text[], $2::uuid[]) AS x(op, tenant_id)
        WHERE NOT EXISTS (SELECT 1 FROM operations p WHERE p.tenant_id = x.tenant_id AND p.kind = 'promote'
                            AND p.status = 'failed' AND (p.progress ->> 'resumable') = 'true')
       ON CONFLICT (tenant_id) WHERE status IN ('queued', 'running') DO NOTHING
       RETURNING id, tenant_id)
     UPDATE rollout_tenants rt SET status = 'running', operation_id = ins.id, attempts = rt.attempts + 1,
            started_at = now(), finished_at = NULL, error = NULL, note = NULL, not_before = NULL
       FROM ins WHERE rt.rollout_id = $4 AND rt.tenant_id = ins.tenant_id
     RETURNING rt.tenant_id, ins.id AS operation_id`,
    [
      c.tenants.map((t) => t.operationId),
      c.tenants.map((t) => t.tenantId),
      JSON.stringify(steps),
      c.rolloutId,
      c.toVersion,
      c.runnerId,
      c.leaseMs,
    ],
  );
  return new Map(rows.map((r) => [r.tenant_id, r.operation_id]));
}

/**
 * Tenants found busy: put back, due again after a backoff that grows with each deferral, with a
 * note naming what they wait for.
 */
export async function deferTenants(q: Queryable, rolloutId: string, tenantIds: string[]): Promise<void> {
  if (tenantIds.length === 0) return;
  await q.query(
    `UPDATE rollout_tenants rt SET deferrals = rt.deferrals + 1,
            not_before = now() + make_interval(secs => 0.25 * least(rt.deferrals + 1, 8)),
            note = coalesce('waiting for operation ' || (SELECT o.id || ' (' || o.kind || ')' FROM operations o
                              WHERE o.tenant_id = rt.tenant_id AND o.status IN ('queued', 'running') LIMIT 1),
                            'waiting for a promotion stopped past its cutover to be resumed')
      WHERE rt.rollout_id = $1 AND rt.tenant_id = ANY($2::uuid[])`,
    [rolloutId, tenantIds],
  );
}

/** A tenant the runner finished (or found nothing to do for), as the ledger records it. */
export interface TenantResult {
  tenantId: string;
  slug: string;
  operationId: string | null;
  status: 'succeeded' | 'failed' | 'parked' | 'skipped';
  fromVersion: number;
  version: number;
  error: string | null;
  note?: string | null;
  startedAt: string | null;
  finishedAt: string;
}

const resultsJson = (rows: TenantResult[]) =>
  JSON.stringify(
    rows.map((r) => ({
      tenant_id: r.tenantId,
      slug: r.slug,
      operation_id: r.operationId,
      status: r.status,
      from_version: r.fromVersion,
      version: r.version,
      error: r.error,
      note: r.note ?? null,
      finished_at: r.finishedAt,
      action: `rollout.tenant.${r.status}`,
      steps: [
        {
          name: 'migrate',
          status: r.status === 'succeeded' || r.status === 'skipped' ? 'succeeded' : 'failed',
          startedAt: r.startedAt,
          finishedAt: r.finishedAt,
          ...(r.error ? { error: r.error } : {}),
        },
      ],
    })),
  );

const RESULTS = `x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(tenant_id uuid, slug text, operation_id text,
  status text, from_version int, version int, error text, note text, finished_at timestamptz, action text, steps jsonb))`;

/**
 * Records finished migrations in one statement, fenced by the runner's lease on their operations:
 * the operation ends, the tenant's recorded version moves forward, the ledger row takes the result,
 * and each tenant's result is audited. Returns the tenants recorded (a lost lease records nothing).
 */
export async function recordResults(
  q: Queryable,
  rolloutId: string,
  runnerId: string,
  results: TenantResult[],
): Promise<Set<string>> {
  if (results.length === 0) return new Set();
  const { rows } = await q.query<{ tenant_id: string }>(
    `WITH ${RESULTS},
     ops AS (
       UPDATE operations o SET status = CASE WHEN x.status = 'succeeded' THEN 'succeeded' ELSE 'failed' END,
              steps = x.steps, error = x.error, lease_owner = NULL, lease_expires_at = NULL,
              finished_at = x.finished_at, updated_at = now()
         FROM x WHERE o.id = x.operation_id AND o.lease_owner = $2 AND o.status = 'running'
       RETURNING o.id),
     ten AS (
       UPDATE tenants t SET template_version = greatest(t.template_version, x.version), updated_at = now()
         FROM x WHERE t.id = x.tenant_id AND x.status = 'succeeded' AND x.operation_id IN (SELECT id FROM ops)
       RETURNING t.id),
     led AS (
       UPDATE rollout_tenants rt SET status = x.status, version = x.version, error = x.error, finished_at = x.finished_at
         FROM x WHERE rt.rollout_id = $3 AND rt.tenant_id = x.tenant_id AND x.operation_id IN (SELECT id FROM ops)
       RETURNING rt.tenant_id)
     INSERT INTO audit_log (actor_id, actor_name, role, action, tenant_id, tenant_slug, operation_id, details)
     SELECT NULL, $4, 'system', x.action, x.tenant_id, x.slug, x.operation_id,
            jsonb_strip_nulls(jsonb_build_object('rolloutId', $3::text, 'fromVersion', x.from_version,
                                                 'version', x.version, 'error', x.error))
       FROM x WHERE x.operation_id IN (SELECT id FROM ops)
     RETURNING tenant_id`,
    [resultsJson(results), runnerId, rolloutId, ROLLOUT_ACTOR.name],
  );
  return new Set(rows.map((r) => r.tenant_id));
}

/**
 * Records results that need no operation of this runner: a tenant found already at the version or
 * gone, or one whose operation another runner finished (after a crash). Audited like the others.
 */
export async function settleTenants(q: Queryable, rolloutId: string, results: TenantResult[]): Promise<void> {
  if (results.length === 0) return;
  await q.query(
    `WITH ${RESULTS},
     ten AS (
       UPDATE tenants t SET template_version = greatest(t.template_version, x.version), updated_at = now()
         FROM x WHERE t.id = x.tenant_id AND x.status = 'succeeded' AND t.template_version < x.version
       RETURNING t.id),
     led AS (
       UPDATE rollout_tenants rt SET status = x.status, version = x.version, error = x.error,
              note = coalesce(x.note, rt.note), finished_at = x.finished_at,
              started_at = coalesce(rt.started_at, x.finished_at)
         FROM x WHERE rt.rollout_id = $2 AND rt.tenant_id = x.tenant_id
       RETURNING rt.tenant_id)
     INSERT INTO audit_log (actor_id, actor_name, role, action, tenant_id, tenant_slug, operation_id, details)
     SELECT NULL, $3, 'system', x.action, x.tenant_id, x.slug, x.operation_id,
            jsonb_strip_nulls(jsonb_build_object('rolloutId', $2::text, 'fromVersion', x.from_version,
                                                 'version', x.version, 'error', x.error, 'note', x.note))
       FROM x`,
    [resultsJson(results), rolloutId, ROLLOUT_ACTOR.name],
  );
}

/** Tenants taken but not started when the runner stops: their operations cancelled, the tenants pending again. */
export async function releaseTenants(
  q: Queryable,
  rolloutId: string,
  runnerId: string,
  operationIds: string[],
): Promise<void> {
  if (operationIds.length === 0) return;
  await q.query(
    `WITH ops AS (
       UPDATE operations SET status = 'cancelled', error = 'not started: the rollout stopped first',
              lease_owner = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now()
        WHERE id = ANY($3::text[]) AND lease_owner = $2 AND status = 'running'
       RETURNING id, tenant_id)
     UPDATE rollout_tenants rt SET status = 'pending', operation_id = NULL, attempts = rt.attempts - 1,
            started_at = NULL
       FROM ops WHERE rt.rollout_id = $1 AND rt.tenant_id = ops.tenant_id`,
    [rolloutId, runnerId, operationIds],
  );
}

/** The heartbeat of every operation the runner holds. */
export async function extendRunnerLeases(q: Queryable, runnerId: string, leaseMs: number): Promise<void> {
  await q.query(
    `UPDATE operations SET lease_expires_at = now() + make_interval(secs => $2::double precision / 1000)
      WHERE lease_owner = $1 AND status = 'running'`,
    [runnerId, leaseMs],
  );
}

/** Ledger rows `running` and where their operation is: what a (re)started runner settles first. */
export async function runningTenants(
  q: Queryable,
  rolloutId: string,
): Promise<
  {
    tenantId: string;
    slug: string;
    fromVersion: number;
    operationId: string | null;
    opStatus: string | null;
    opError: string | null;
    version: number;
    startedAt: string | null;
  }[]
> {
  const { rows } = await q.query<Dated>(
    `SELECT rt.tenant_id AS "tenantId", rt.slug, rt.from_version AS "fromVersion", rt.operation_id AS "operationId",
            o.status AS "opStatus", o.error AS "opError", t.template_version AS version, rt.started_at AS "startedAt"
       FROM rollout_tenants rt JOIN tenants t ON t.id = rt.tenant_id
       LEFT JOIN operations o ON o.id = rt.operation_id
      WHERE rt.rollout_id = $1 AND rt.status = 'running'`,
    [rolloutId],
  );
  return rows.map((r) => ({ ...r, startedAt: iso(r.startedAt) })) as never;
}

/** Ledger rows set back to pending (their operation vanished or was cancelled). */
export async function backToPending(q: Queryable, rolloutId: string, tenantIds: string[]): Promise<void> {
  if (tenantIds.length === 0) return;
  await q.query(
    `UPDATE rollout_tenants SET status = 'pending', operation_id = NULL, started_at = NULL
      WHERE rollout_id = $1 AND tenant_id = ANY($2::uuid[])`,
    [rolloutId, tenantIds],
  );
}

/**
 * Live tenants behind the rollout's version that are not in its ledger (a pool tenant onboarded
 * before the shared tables moved, one a promotion's abort left behind): added to wave `wave`.
 */
export async function addLateTenants(
  q: Queryable,
  rolloutId: string,
  toVersion: number,
  wave: number,
): Promise<number> {
  const { rowCount } = await q.query(
    `INSERT INTO rollout_tenants (rollout_id, tenant_id, slug, tier, wave, status, from_version, version, note)
     SELECT $1, t.id, t.slug, t.tier, $3, 'pending', t.template_version, t.template_version,
            'joined late: behind the version after the rollout was planned'
       FROM tenants t
      WHERE t.status IN ('active', 'provisioning', 'offboarding') AND t.tier <> 'account' AND t.template_version < $2
        AND NOT EXISTS (SELECT 1 FROM rollout_tenants rt WHERE rt.rollout_id = $1 AND rt.tenant_id = t.id)
     ON CONFLICT DO NOTHING`,
    [rolloutId, toVersion, wave],
  );
  return rowCount ?? 0;
}

/** What the verification compares: the ledger's tenants, their recorded version, whether one is busy. */
export async function tenantsToVerify(
  q: Queryable,
  rolloutId: string,
): Promise<{ tenantId: string; slug: string; tier: RolloutTier; recorded: number; busy: boolean }[]> {
  const { rows } = await q.query<Dated>(
    `SELECT t.id AS "tenantId", t.slug, t.tier, t.template_version AS recorded,
            EXISTS (SELECT 1 FROM operations o WHERE o.tenant_id = t.id AND o.status IN ('queued', 'running')) AS busy
       FROM rollout_tenants rt JOIN tenants t ON t.id = rt.tenant_id
      WHERE rt.rollout_id = $1 AND t.status IN ('active', 'offboarding') AND t.tier <> 'account'`,
    [rolloutId],
  );
  return rows as never;
}

/** A tenant's recorded template version, moved forward (never back) to `version`. */
export async function raiseTemplateVersion(q: Queryable, tenantId: string, version: number): Promise<void> {
  await q.query(
    'UPDATE tenants SET template_version = $2, updated_at = now() WHERE id = $1 AND template_version < $2',
    [tenantId, version],
  );
}
