import type { Queryable } from '../domain/queryable.js';

/** The audit log: one record per privileged action, written in the action's own transaction. */

export interface Actor {
  id: string | null;
  name: string;
  role: string;
}

export interface AuditEntry {
  actor: Actor;
  action: string;
  tenantId?: string | null;
  tenantSlug?: string | null;
  requestId?: string | null;
  operationId?: string | null;
  details?: Record<string, unknown>;
}

const AUDIT_INSERT =
  'INSERT INTO audit_log (actor_id, actor_name, role, action, tenant_id, tenant_slug, request_id, operation_id, details)';
/** The record's values, typed (a SELECT's parameters get no type from the columns they go in). */
const auditExprs = (p: (i: number) => string) =>
  `${p(1)}::text, ${p(2)}::text, ${p(3)}::text, ${p(4)}::text, ${p(5)}::uuid, ${p(6)}::text, ${p(7)}::text, ${p(8)}::text, ${p(9)}::jsonb`;
const auditValues = (p: (i: number) => string) => `VALUES (${auditExprs(p)})`;
const auditRow = (e: AuditEntry): unknown[] => [
  e.actor.id,
  e.actor.name,
  e.actor.role,
  e.action,
  e.tenantId ?? null,
  e.tenantSlug ?? null,
  e.requestId ?? null,
  e.operationId ?? null,
  JSON.stringify(e.details ?? {}),
];

export async function appendAudit(q: Queryable, e: AuditEntry): Promise<void> {
  await q.query(`${AUDIT_INSERT} ${auditValues((i) => `$${i}`)}`, auditRow(e));
}

/**
 * An audit record as a CTE `<name>` of a caller's statement (it runs whether read or not), its
 * parameters numbered from `first`. With `from` (a FROM clause: `t WHERE t.id = $2`, say) the record
 * is written once for each row that clause yields, so none when it yields none.
 */
export function auditCte(
  name: string,
  e: AuditEntry,
  first: number,
  from?: string,
): { sql: string; params: unknown[] } {
  const p = (i: number) => `$${first + i - 1}`;
  const rows = from === undefined ? auditValues(p) : `SELECT ${auditExprs(p)} FROM ${from}`;
  return { sql: `${name} AS (${AUDIT_INSERT} ${rows} RETURNING 1)`, params: auditRow(e) };
}

export interface AuditRecord {
  id: number;
  at: string;
  actorId: string | null;
  actorName: string | null;
  role: string | null;
  action: string;
  tenantId: string | null;
  tenantSlug: string | null;
  requestId: string | null;
  operationId: string | null;
  details: Record<string, unknown>;
}

export async function listAudit(
  q: Queryable,
  f: { tenantId?: string; limit: number; after?: number },
): Promise<AuditRecord[]> {
  const params: unknown[] = [];
  const where: string[] = [];
  // By id, never by slug: an offboarded tenant's slug can be taken again by a new tenant.
  if (f.tenantId) where.push(`tenant_id = $${params.push(f.tenantId)}::uuid`);
  if (f.after) where.push(`id > $${params.push(f.after)}`);
  const lim = params.push(f.limit);
  const { rows } = await q.query<{
    id: string;
    at: Date;
    actor_id: string | null;
    actor_name: string | null;
    role: string | null;
    action: string;
    tenant_id: string | null;
    tenant_slug: string | null;
    request_id: string | null;
    operation_id: string | null;
    details: Record<string, unknown>;
  }>(
    `SELECT * FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id LIMIT $${lim}`,
    params,
  );
  return rows.map((r) => ({
    id: Number(r.id),
    at: r.at.toISOString(),
    actorId: r.actor_id,
    actorName: r.actor_name,
    role: r.role,
    action: r.action,
    tenantId: r.tenant_id,
    tenantSlug: r.tenant_slug,
    requestId: r.request_id,
    operationId: r.operation_id,
    details: r.details,
  }));
}
