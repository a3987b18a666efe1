import { type NamedStatement, named, type Queryable } from '../domain/queryable.js';
import type {
  Operation,
  OperationInFlight,
  OperationKind,
  OperationStatus,
  OperationStep,
  Tenant,
  TenantStatus,
} from '../domain/tenant.js';
import type { Tier } from '../domain/tiers.js';
import { type AuditEntry, auditCte } from './audit.js';
import { addOperationJobSql, RUN_OPERATION_TASK } from './jobs.js';
import { eventCtes, type NewEvent } from './outbox.js';
import { queryText, type TextRow } from './text-rows.js';

/* ---------- tenants ---------- */

interface TenantRow {
  id: string;
  slug: string;
  name: string;
  tier: Tier;
  status: TenantStatus;
  region: string | null;
  plan: string | null;
  contact_email: string | null;
  template_version: number;
  outputs: Tenant['outputs'];
  version: number;
  labels: Tenant['labels'] | null;
  limits: Tenant['limits'] | null;
  suspension: Tenant['suspension'];
  created_at: Date;
  updated_at: Date;
}

const toTenant = (r: TenantRow): Tenant => ({
  id: r.id,
  slug: r.slug,
  name: r.name,
  tier: r.tier,
  status: r.status,
  region: r.region,
  plan: r.plan,
  contactEmail: r.contact_email,
  templateVersion: r.template_version,
  outputs: r.outputs,
  // A row written by a build before migration 0016 (read through to_jsonb) lacks these.
  version: r.version ?? 1,
  labels: r.labels ?? {},
  limits: r.limits ?? {},
  suspension: r.suspension ?? null,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

/** A tenant row read as JSON (to_jsonb), e.g. joined into another statement's RETURNING. */
export function tenantFromJson(j: Record<string, unknown>): Tenant {
  const r = j as unknown as Omit<TenantRow, 'created_at' | 'updated_at'> & {
    created_at: string;
    updated_at: string;
  };
  return toTenant({ ...r, created_at: new Date(r.created_at), updated_at: new Date(r.updated_at) });
}

/** A tenant's columns, named for a prepared statement: a column added later cannot change its result. */
const TENANT_COLUMNS = `id, slug, name, tier, status, region, plan, contact_email, template_version, outputs, version,
  labels, limits, suspension, created_at, updated_at`;

/** Prepared once per connection. */
const INSERT_TENANT: NamedStatement = {
  name: 'tenantry.insert_tenant',
  text: `INSERT INTO tenants (id, slug, name, tier, status, region, plan, contact_email, template_version, labels)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)
     RETURNING ${TENANT_COLUMNS}`,
};

/** A new tenant's row, as `insertTenant` writes it. */
export type NewTenantRow = Pick<
  Tenant,
  'id' | 'slug' | 'name' | 'tier' | 'status' | 'region' | 'plan' | 'contactEmail' | 'templateVersion'
> & { labels?: Record<string, string> };

/** A new tenant's row as the parameters of INSERT_TENANT's columns, in order. */
function tenantRowValues(t: NewTenantRow): unknown[] {
  return [
    t.id,
    t.slug,
    t.name,
    t.tier,
    t.status,
    t.region,
    t.plan,
    t.contactEmail,
    t.templateVersion,
    JSON.stringify(t.labels ?? {}),
  ];
}

export async function insertTenant(q: Queryable, t: NewTenantRow): Promise<Tenant> {
  const { rows } = await q.query<TenantRow & Record<string, unknown>>(
    named(INSERT_TENANT),
    tenantRowValues(t),
  );
  return toTenant(rows[0] as TenantRow);
}

/** The live tenant with slug $1, or else the most recently offboarded one. */
const TENANT_BY_SLUG = `FROM tenants WHERE slug = $1 ORDER BY (status <> 'offboarded') DESC, created_at DESC LIMIT 1`;

/** The live tenant with this slug, or else the most recently offboarded one. */
export async function findTenantBySlug(
  q: Queryable,
  slug: string,
  opts: { forUpdate?: boolean } = {},
): Promise<Tenant | null> {
  const { rows } = await q.query<TenantRow & Record<string, unknown>>(
    `SELECT * ${TENANT_BY_SLUG}${opts.forUpdate ? ' FOR UPDATE' : ''}`,
    [slug],
  );
  return rows[0] ? toTenant(rows[0] as TenantRow) : null;
}

/**
 * The tenant `slug` names, as `findTenantBySlug` finds it, read FOR SHARE, and `audit` appended by
 * the same statement only when that tenant is still `tenantId` and active: one round trip, its own
 * transaction unless `q` is in one. `audited` says whether the record went in.
 */
export async function findTenantAndAuditRead(
  q: Queryable,
  slug: string,
  tenantId: string,
  audit: AuditEntry,
): Promise<{ tenant: Tenant | null; audited: boolean }> {
  const a = auditCte('a', audit, 3, `t WHERE t.id = $2::uuid AND t.status = 'active'`);
  const { rows } = await q.query<TenantRow & Record<string, unknown> & { audited: boolean }>(
    named({
      name: 'tenantry.audited_tenant_read',
      text: `WITH t AS (SELECT ${TENANT_COLUMNS} ${TENANT_BY_SLUG} FOR SHARE), ${a.sql}
       SELECT t.*, EXISTS (SELECT 1 FROM a) AS audited FROM t`,
    }),
    [slug, tenantId, ...a.params],
  );
  const r = rows[0];
  return { tenant: r ? toTenant(r) : null, audited: r?.audited === true };
}

export async function findTenantById(q: Queryable, id: string): Promise<Tenant | null> {
  const { rows } = await q.query<TenantRow & Record<string, unknown>>('SELECT * FROM tenants WHERE id = $1', [
    id,
  ]);
  return rows[0] ? toTenant(rows[0] as TenantRow) : null;
}

/** A promotion as the tenant view reads it: what the rollback rule needs, and its window. */
export interface PromotionRow {
  id: string;
  status: OperationStatus;
  fromTier: Tier;
  toTier: Tier;
  cutoverAt: string | null;
  rollbackUntil: string | null;
  rolledBack: boolean;
  cleanedUp: boolean;
}

/** The columns `tenantItemJson` renders, in TenantSchema's order. */
const PAGE_COLUMNS = `id, slug, name, tier, status, region, plan, contact_email, template_version, version,
  labels, limits, suspension, outputs, created_at AT TIME ZONE 'UTC', updated_at AT TIME ZONE 'UTC'`;

const jsonString = (v: string | null) => (v === null ? 'null' : JSON.stringify(v));

/** A `timestamp` column's ISO text (DateStyle ISO, as pg's own parser assumes), as `toISOString` writes it. */
const PG_TIMESTAMP = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?$/;
function isoMillis(v: string | null): string {
  const m = v === null ? null : PG_TIMESTAMP.exec(v);
  if (!m) throw new Error(`a tenant timestamp the list cannot render: ${v}`);
  return `"${m[1]}T${m[2]}.${`${m[3] ?? ''}000`.slice(0, 3)}Z"`;
}

/** One tenant of the page: PAGE_COLUMNS as the server's text, as TenantSchema's JSON. */
function tenantItemJson(r: TextRow): string {
  return `{"id":${jsonString(r[0] ?? null)},"slug":${jsonString(r[1] ?? null)},"name":${jsonString(r[2] ?? null)},"tier":${jsonString(r[3] ?? null)},"status":${jsonString(r[4] ?? null)},"region":${jsonString(r[5] ?? null)},"plan":${jsonString(r[6] ?? null)},"contactEmail":${jsonString(r[7] ?? null)},"templateVersion":${r[8]},"version":${r[9] ?? 1},"labels":${r[10] ?? '{}'},"limits":${r[11] ?? '{}'},"suspension":${r[12] ?? 'null'},"outputs":${r[13] ?? '{}'},"createdAt":${isoMillis(r[14] ?? null)},"updatedAt":${isoMillis(r[15] ?? null)}}`;
}

/**
 * GET /v1/tenants/{slug}'s one statement, prepared once per connection. Planned for every request, its
 * two subqueries made planning most of the server's work for the read: under ten concurrent reads on
 * two cores, the `bind` step (where an unnamed statement is planned) took 25 to 150 ms for a few
 * requests a second (log_min_duration_statement; docs/benchmarks.md). Its columns are named, so a
 * column added to tenants later cannot change the cached plan's result. The tenant is rendered from
 * its columns' text as a page of the list renders it (`tenantItemJson`).
 */
const TENANT_DETAIL: NamedStatement = {
  name: 'tenantry.tenant_detail',
  text: `SELECT ${PAGE_COLUMNS},
            (SELECT jsonb_build_object('id', o.id, 'kind', o.kind, 'status', o.status, 'steps', o.steps)
               FROM operations o WHERE o.tenant_id = t.id AND o.status IN ('queued', 'running')) AS active,
            (SELECT jsonb_build_object('id', o.id, 'status', o.status,
                      'fromTier', o.params->>'fromTier', 'toTier', o.params->>'toTier',
                      'cutoverAt', o.progress->>'cutoverAt', 'rollbackUntil', o.progress->>'rollbackUntil',
                      'rolledBack', o.progress ? 'rolledBack', 'cleanedUp', o.progress ? 'cleanedUp')
               FROM operations o
              WHERE o.tenant_id = t.id AND o.kind = 'promote' AND o.status = 'succeeded' AND NOT (o.params ? 'rollbackOf')
              ORDER BY o.created_at DESC, o.id DESC LIMIT 1) AS promotion
       FROM tenants t WHERE t.slug = $1 ORDER BY (t.status <> 'offboarded') DESC, t.created_at DESC LIMIT 1`,
};

/** TenantDetailSchema's JSON: the rendered tenant with its operation in flight and promotion summary. */
export const tenantDetailJson = (tenantJson: string, activeOperation: unknown, promotion: unknown): string =>
  `${tenantJson.slice(0, -1)},"activeOperation":${JSON.stringify(activeOperation)},"promotion":${JSON.stringify(promotion)}}`;

/** GET /v1/tenants/{slug}'s read: the tenant already rendered, and what the service adds to it. */
export interface TenantDetailRead {
  /** The tenant as TenantSchema's JSON: exactly what a page of the list holds for it. */
  tenantJson: string;
  tier: Tier;
  status: TenantStatus;
  version: number;
  activeOperation: OperationInFlight | null;
  promotion: PromotionRow | null;
}

/**
 * One round trip for GET /v1/tenants/{slug}: the tenant (as findTenantBySlug picks it), its
 * operation in flight (the partial unique index holds at most one) and its latest succeeded
 * promotion that is not itself a rollback.
 */
export async function findTenantDetail(q: Queryable, slug: string): Promise<TenantDetailRead | null> {
  const r = (await queryText(q, TENANT_DETAIL, [slug]))[0];
  if (!r) return null;
  const active = r[16] ?? null;
  const promotion = r[17] ?? null;
  const op = active === null ? null : (JSON.parse(active) as OperationInFlight & { steps: OperationStep[] });
  return {
    tenantJson: tenantItemJson(r),
    tier: r[3] as Tier,
    status: r[4] as TenantStatus,
    version: Number(r[9]),
    activeOperation: op && {
      id: op.id,
      kind: op.kind,
      status: op.status,
      currentStep: currentStepOf(op.steps),
    },
    promotion: promotion === null ? null : (JSON.parse(promotion) as PromotionRow),
  };
}

/**
 * A page of the tenant list, already rendered as the API's JSON body (`Page(TenantSchema)`).
 * The list is the API's hottest read: a page of 50 parsed into Dates and objects and serialized again
 * cost the control plane more CPU than Postgres spent answering it. Here the columns come as the
 * server's text and are written straight into the body: strings escaped, jsonb text (already JSON)
 * as is, timestamps read in UTC and cut to the milliseconds `toISOString` gives. GET /v1/tenants/{slug}
 * renders its tenant the same way, and both are what the row read through pg's own parsers gives
 * (tests/integration/api.test.ts).
 */
export interface TenantPage {
  /** The page's JSON: `{"items":[…],"nextCursor":…}`. */
  json: string;
  count: number;
  nextCursor: string | null;
}

export async function listTenants(
  q: Queryable,
  f: { tier?: Tier; status?: TenantStatus; limit: number; cursor?: string; labels?: [string, string][] },
  /** Where an unfiltered page may be read (Db.reads: its cost is bounded by the index and the limit). */
  reads: Queryable = q,
): Promise<TenantPage> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (f.tier) where.push(`tier = $${params.push(f.tier)}`);
  // Every label given must match (tenants_labels, migration 0016).
  for (const [k, v] of f.labels ?? [])
    where.push(`labels @> $${params.push(JSON.stringify({ [k]: v }))}::jsonb`);
  if (f.status) where.push(`status = $${params.push(f.status)}`);
  if (f.cursor) {
    // Keyset pagination on (created_at, id), read from the row itself: no timestamp precision is lost.
    const c = params.push(f.cursor);
    where.push(`(created_at, id) > (SELECT created_at, id FROM tenants WHERE id = $${c}::uuid)`);
  }
  const lim = params.push(f.limit + 1);
  const text = `SELECT ${PAGE_COLUMNS} FROM tenants ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id LIMIT $${lim}`;
  // The whole fleet's pages (no filter but the cursor) are prepared once per connection; a filtered
  // page is planned for its own values (a rare tier or status wants another plan than the fleet's).
  const filtered = f.tier || f.status || f.labels?.length;
  // (pg prepares a statement only when it has a name: '' is the unnamed statement.)
  const name = filtered ? '' : f.cursor ? 'tenants_page_after' : 'tenants_page';
  const rows = await queryText(filtered ? q : reads, { name, text }, params);
  const items = rows.slice(0, f.limit);
  const last = items[items.length - 1];
  const nextCursor = rows.length > f.limit && last?.[0] ? encodeCursor(last[0]) : null;
  return {
    json: `{"items":[${items.map(tenantItemJson).join(',')}],"nextCursor":${jsonString(nextCursor)}}`,
    count: items.length,
    nextCursor,
  };
}

/** An opaque cursor: the id of the last tenant of the page. */
export function encodeCursor(id: string): string {
  return Buffer.from(`t:${id}`).toString('base64url');
}

export function decodeCursor(c: string): string | null {
  const m = /^t:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(
    Buffer.from(c, 'base64url').toString('utf8'),
  );
  return m?.[1] ?? null;
}

export async function setTenantStatus(q: Queryable, id: string, status: TenantStatus): Promise<void> {
  await q.query('UPDATE tenants SET status = $2, updated_at = now() WHERE id = $1', [id, status]);
}

export async function mergeTenantOutputs(
  q: Queryable,
  id: string,
  outputs: Record<string, unknown>,
): Promise<void> {
  await q.query(
    `UPDATE tenants SET outputs = jsonb_strip_nulls(outputs || $2::jsonb), updated_at = now() WHERE id = $1`,
    [id, JSON.stringify(outputs)],
  );
}

export async function countTenants(q: Queryable): Promise<{ tier: string; status: string; n: number }[]> {
  const { rows } = await q.query<{ tier: string; status: string; n: number }>(
    'SELECT tier, status, count(*)::int AS n FROM tenants GROUP BY 1, 2',
  );
  return rows;
}

/* ---------- operations ---------- */

/** Operations in the database by kind and status (queued and running included), for the metrics gauge. */
export async function countOperations(q: Queryable): Promise<{ kind: string; status: string; n: number }[]> {
  const { rows } = await q.query<{ kind: string; status: string; n: number }>(
    'SELECT kind, status, count(*)::int AS n FROM operations GROUP BY 1, 2',
  );
  return rows;
}

interface OperationRow {
  id: string;
  kind: OperationKind;
  tenant_id: string;
  slug: string;
  status: OperationStatus;
  steps: OperationStep[];
  error: string | null;
  attempts: number;
  params: Record<string, unknown>;
  progress: Record<string, unknown>;
  created_at: Date;
  updated_at: Date;
}

const OP_SELECT = `SELECT o.id, o.kind, o.tenant_id, t.slug, o.status, o.steps, o.error, o.attempts, o.params, o.progress, o.created_at, o.updated_at
                     FROM operations o JOIN tenants t ON t.id = o.tenant_id`;

/** Internal bookkeeping (deferred DDL) stays out of the API. */
function publicProgress(p: Record<string, unknown>): Record<string, unknown> {
  const { deferredDdl: _internal, ...rest } = p;
  return rest;
}

/** The step running now, if any. */
const currentStepOf = (steps: OperationStep[]): string | null =>
  steps.find((x) => x.status === 'running')?.name ?? null;

const toOperation = (r: OperationRow): Operation => ({
  id: r.id,
  kind: r.kind,
  tenantId: r.tenant_id,
  tenantSlug: r.slug,
  status: r.status,
  steps: r.steps,
  ...(r.error ? { error: r.error } : {}),
  attempts: r.attempts,
  params: r.params,
  progress: publicProgress(r.progress),
  currentStep: currentStepOf(r.steps),
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

export async function findOperation(q: Queryable, id: string): Promise<Operation | null> {
  const { rows } = await q.query<OperationRow & Record<string, unknown>>(`${OP_SELECT} WHERE o.id = $1`, [
    id,
  ]);
  return rows[0] ? toOperation(rows[0] as OperationRow) : null;
}

export interface OperationPage {
  items: Operation[];
  nextCursor: string | null;
}

/**
 * Operations newest first, keyset-paginated on (created_at, id) read from the cursor's own row (no
 * timestamp precision is lost, and rows inserted meanwhile never shift a page); the index
 * operations_page (migration 0009) serves the unfiltered walk.
 */
export async function listOperations(
  q: Queryable,
  f: {
    tenantId?: string;
    kinds?: OperationKind[];
    statuses?: OperationStatus[];
    limit: number;
    cursor?: string;
  },
): Promise<OperationPage> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (f.tenantId) where.push(`o.tenant_id = $${params.push(f.tenantId)}::uuid`);
  if (f.kinds?.length) where.push(`o.kind = ANY($${params.push(f.kinds)}::text[])`);
  if (f.statuses?.length) where.push(`o.status = ANY($${params.push(f.statuses)}::text[])`);
  if (f.cursor) {
    const c = params.push(f.cursor);
    where.push(`(o.created_at, o.id) < (SELECT created_at, id FROM operations WHERE id = $${c})`);
  }
  const lim = params.push(f.limit + 1);
  const { rows } = await q.query<OperationRow & Record<string, unknown>>(
    `${OP_SELECT} ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY o.created_at DESC, o.id DESC LIMIT $${lim}`,
    params,
  );
  const items = rows.slice(0, f.limit).map((r) => toOperation(r as OperationRow));
  const last = items[items.length - 1];
  return { items, nextCursor: rows.length > f.limit && last ? encodeOperationCursor(last.id) : null };
}

/** An opaque cursor: the id of the last operation of the page. */
export const encodeOperationCursor = (id: string): string => Buffer.from(`o:${id}`).toString('base64url');

export function decodeOperationCursor(c: string): string | null {
  const m = /^o:(op_[0-9a-f]{28})$/.exec(Buffer.from(c, 'base64url').toString('utf8'));
  return m?.[1] ?? null;
}

export async function activeOperationFor(q: Queryable, tenantId: string): Promise<string | null> {
  const { rows } = await q.query<{ id: string }>(
    `SELECT id FROM operations WHERE tenant_id = $1 AND status IN ('queued', 'running')`,
    [tenantId],
  );
  return rows[0]?.id ?? null;
}

interface NewOperation {
  id: string;
  kind: OperationKind;
  tenantId: string;
  tenantSlug: string;
  steps: string[];
  params?: Record<string, unknown>;
}

/**
 * Inserts the operation and enqueues its job in the caller's transaction: either both
 * happen or neither does. The partial unique index refuses a second active operation.
 */
export async function insertOperationAndEnqueue(
  q: Queryable,
  op: NewOperation,
  maxAttempts: number,
  also: { audit?: AuditEntry; event?: NewEvent } = {},
): Promise<Operation> {
  const { statement, params } = operationStatement(op, maxAttempts, also);
  await q.query(statement, params);
  return newOperation(op);
}

/**
 * A new tenant's row and its first operation, with the operation's job, audit record and event, in
 * one statement (one round trip of the acceptance). The event takes no order lock: no other
 * transaction sees the tenant before this one commits.
 */
export async function insertTenantWithOperation(
  q: Queryable,
  tenant: NewTenantRow,
  op: NewOperation,
  maxAttempts: number,
  also: { audit?: AuditEntry; event?: NewEvent } = {},
): Promise<{ tenant: Tenant; operation: Operation }> {
  const { statement, params } = operationStatement(op, maxAttempts, also, tenant);
  const { rows } = await q.query<{ tenant: Record<string, unknown> }>(statement, params);
  return { tenant: tenantFromJson(rows[0]?.tenant as Record<string, unknown>), operation: newOperation(op) };
}

function operationStatement(
  op: NewOperation,
  maxAttempts: number,
  also: { audit?: AuditEntry; event?: NewEvent },
  tenant?: NewTenantRow,
): { statement: NamedStatement; params: unknown[] } {
  const params: unknown[] = [
    op.id,
    op.kind,
    op.tenantId,
    JSON.stringify(pendingSteps(op.steps)),
    JSON.stringify(op.params ?? {}),
    RUN_OPERATION_TASK,
    maxAttempts,
  ];
  // The tenant's row first, when it is new: the operation, the audit record and the event follow it.
  const t = tenant
    ? `t AS (INSERT INTO tenants (id, slug, name, tier, status, region, plan, contact_email, template_version, labels)
       VALUES (${tenantValues(params, tenant)}) RETURNING *),
     `
    : '';
  // The request's audit record and event in the same statement: one round trip for all of it. The
  // event takes its tenant's row lock first, as every tenant event does (db/outbox.ts), unless the
  // tenant is new here.
  const audit = also.audit ? auditCte('a', also.audit, params.length + 1) : null;
  if (audit) params.push(...audit.params);
  const event = also.event
    ? eventCtes(
        'e',
        tenant ? 't' : '(SELECT 1 FROM tenants WHERE id = $3::uuid FOR NO KEY UPDATE) AS lk',
        also.event,
        params.length + 1,
      )
    : null;
  if (event) params.push(...event.params);
  // The job is added only if the row went in (same transaction either way).
  // Prepared once per connection for each shape (with or without the tenant, the audit record and the event).
  return {
    params,
    statement: named({
      name: `tenantry.insert_operation.${tenant ? 't' : ''}${audit ? 'a' : ''}${event ? 'e' : ''}`,
      text: `WITH ${t}o AS (
       INSERT INTO operations (id, kind, tenant_id, status, steps, params)
       ${tenant ? "SELECT $1, $2, t.id, 'queued', $4::jsonb, $5::jsonb FROM t WHERE t.id = $3::uuid" : "VALUES ($1, $2, $3, 'queued', $4::jsonb, $5::jsonb)"} RETURNING id)${audit ? `,\n     ${audit.sql}` : ''}${
         event ? `,\n     ${event.sql}` : ''
       }
     SELECT ${addOperationJobSql('$6', 'o.id', '$7')}${event ? `, ${event.wake} AS woken` : ''}${tenant ? ', to_jsonb(t) AS tenant' : ''} FROM o${tenant ? ', t' : ''}`,
    }),
  };
}

/** A new tenant row's values as parameters appended to `params` (INSERT_TENANT's columns, in order). */
function tenantValues(params: unknown[], t: NewTenantRow): string {
  const values = tenantRowValues(t);
  const first = params.length + 1;
  params.push(...values);
  return values.map((_, i) => `$${first + i}${i === values.length - 1 ? '::jsonb' : ''}`).join(', ');
}

const pendingSteps = (names: string[]): OperationStep[] =>
  names.map((name) => ({ name, status: 'pending', startedAt: null, finishedAt: null }));

/** The operation as its insert wrote it. */
function newOperation(op: NewOperation): Operation {
  const steps = pendingSteps(op.steps);
  const now = new Date().toISOString();
  return {
    id: op.id,
    kind: op.kind,
    tenantId: op.tenantId,
    tenantSlug: op.tenantSlug,
    status: 'queued',
    steps,
    attempts: 0,
    params: op.params ?? {},
    progress: {},
    currentStep: null,
    createdAt: now,
    updatedAt: now,
  };
}
