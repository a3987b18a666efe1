import type { Queryable } from '../domain/queryable.js';
import type { Tier } from '../domain/tiers.js';
import type { Manifest } from '../export/format.js';

/** Tenant exports (migration 0017): one row per archive, what its manifest says and until when it is kept. */

export type ExportStatus = 'pending' | 'ready' | 'failed' | 'expired';

export interface ExportRecord {
  id: string;
  tenantId: string;
  tenantSlug: string;
  tier: Tier;
  operationId: string;
  status: ExportStatus;
  final: boolean;
  /** Where the archive is (the local target's data directory). Internal: the API never shows it. */
  path: string;
  bytes: number | null;
  sha256: string | null;
  manifest: Manifest | null;
  error: string | null;
  createdBy: string | null;
  createdAt: string;
  readyAt: string | null;
  expiresAt: string;
}

interface ExportRow {
  id: string;
  tenant_id: string;
  tenant_slug: string;
  tier: Tier;
  operation_id: string;
  status: ExportStatus;
  final: boolean;
  path: string;
  bytes: string | null;
  sha256: string | null;
  manifest: Manifest | null;
  error: string | null;
  created_by: string | null;
  created_at: Date;
  ready_at: Date | null;
  expires_at: Date;
}

const toExport = (r: ExportRow): ExportRecord => ({
  id: r.id,
  tenantId: r.tenant_id,
  tenantSlug: r.tenant_slug,
  tier: r.tier,
  operationId: r.operation_id,
  status: r.status,
  final: r.final,
  path: r.path,
  bytes: r.bytes === null ? null : Number(r.bytes),
  sha256: r.sha256,
  manifest: r.manifest,
  error: r.error,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  readyAt: r.ready_at?.toISOString() ?? null,
  expiresAt: r.expires_at.toISOString(),
});

export async function insertExport(
  q: Queryable,
  e: {
    id: string;
    tenantId: string;
    tenantSlug: string;
    tier: Tier;
    operationId: string;
    final: boolean;
    path: string;
    createdBy: string | null;
    retentionMs: number;
  },
): Promise<ExportRecord> {
  const { rows } = await q.query<ExportRow & Record<string, unknown>>(
    `INSERT INTO exports (id, tenant_id, tenant_slug, tier, operation_id, status, final, path, created_by, expires_at)
     VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, now() + make_interval(secs => $9::double precision / 1000))
     RETURNING *`,
    [e.id, e.tenantId, e.tenantSlug, e.tier, e.operationId, e.final, e.path, e.createdBy, e.retentionMs],
  );
  return toExport(rows[0] as ExportRow);
}

export async function findExport(
  q: Queryable,
  id: string,
  opts: { forShare?: boolean } = {},
): Promise<ExportRecord | null> {
  const { rows } = await q.query<ExportRow & Record<string, unknown>>(
    `SELECT * FROM exports WHERE id = $1 ${opts.forShare ? 'FOR SHARE' : ''}`,
    [id],
  );
  return rows[0] ? toExport(rows[0] as ExportRow) : null;
}

/** A tenant's exports, newest first (by id, which sorts by time). */
export async function listExports(
  q: Queryable,
  tenantId: string,
  f: { limit: number; before?: string },
): Promise<ExportRecord[]> {
  const { rows } = await q.query<ExportRow & Record<string, unknown>>(
    `SELECT * FROM exports WHERE tenant_id = $1 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3`,
    [tenantId, f.before ?? null, f.limit],
  );
  return rows.map((r) => toExport(r as ExportRow));
}

/** The archive is written: its size, digest and manifest. Idempotent; false if it was not pending. */
export async function markExportReady(
  q: Queryable,
  id: string,
  a: { bytes: number; sha256: string; manifest: Record<string, unknown> },
): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE exports SET status = 'ready', bytes = $2, sha256 = $3, manifest = $4::jsonb, ready_at = now()
      WHERE id = $1 AND status = 'pending'`,
    [id, a.bytes, a.sha256, JSON.stringify(a.manifest)],
  );
  return (rowCount ?? 0) > 0;
}

/** The exports an operation was writing, failed with it. */
export async function failExportsOf(q: Queryable, operationId: string, error: string): Promise<void> {
  await q.query(
    `UPDATE exports SET status = 'failed', error = $2 WHERE operation_id = $1 AND status = 'pending'`,
    [operationId, error],
  );
}

/** Exports past their retention, marked expired; returns their archives' paths for deletion. */
export async function expireExports(q: Queryable, limit = 100): Promise<{ id: string; path: string }[]> {
  const { rows } = await q.query<{ id: string; path: string }>(
    `UPDATE exports SET status = 'expired'
      WHERE id IN (SELECT id FROM exports WHERE status IN ('ready', 'failed') AND expires_at < now()
                    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
      RETURNING id, path`,
    [limit],
  );
  return rows;
}
