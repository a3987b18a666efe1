import type pg from 'pg';
import { TenantryError } from '../domain/errors.js';
import type { Queryable } from '../domain/queryable.js';
import { ident, inTransaction, literal } from '../providers/postgres/index.js';
import { type Placement, tablesOf } from './placement.js';
import { applyPending, replicationClient } from './replication.js';

/**
 * What verification compares: per table, the tenant's row count and an order-independent checksum,
 * over every row at a consistent point (outside the freeze) or over the keys the change stream
 * touched since (inside it).
 */

export interface TableDigest {
  rows: number;
  sum: string;
}

/** Row count and an order-independent checksum over the tenant's rows of each table. */
export async function digest(
  db: Queryable,
  p: Placement,
  tenantId: string,
  tables: string[],
): Promise<Record<string, TableDigest>> {
  const out: Record<string, TableDigest> = {};
  for (const t of tables) {
    const { rows } = await db.query<{ n: string; s: string }>(
      `SELECT count(*)::text AS n, coalesce(sum(hashtextextended(x::text, 0)), 0)::text AS s
         FROM ${ident(p.schema)}.${ident(t)} x WHERE tenant_id = $1`,
      [tenantId],
    );
    out[t] = { rows: Number(rows[0]?.n ?? 0), sum: rows[0]?.s ?? '0' };
  }
  return out;
}

/**
 * The full verification, outside the freeze, on a consistent pair of states: a temporary slot
 * exports a snapshot of the source at its consistent point C; the promotion's own slot is applied
 * to the target up to exactly C (transactions committed before C, which are those the snapshot
 * sees); then every row of every table is counted and checksummed on both sides. The touched-key
 * record restarts at C, so the freeze only has to compare rows changed after this point.
 */
export async function verifyConsistent(
  adminUrl: string,
  peek: Queryable,
  snap: pg.Client,
  target: pg.Client,
  from: Placement,
  to: Placement,
  tenantId: string,
  names: { slot: string; publication: string },
  fault?: (point: string) => Promise<void>,
): Promise<{ source: Record<string, TableDigest>; target: Record<string, TableDigest>; at: string }> {
  const repl = await replicationClient(adminUrl);
  let at: string;
  try {
    const created = await repl.query(
      `CREATE_REPLICATION_SLOT ${ident(`${names.slot}_v`)} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')`,
    );
    const row = created.rows[0] as { snapshot_name?: string; consistent_point?: string };
    at = String(row.consistent_point);
    await snap.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await snap.query(`SET TRANSACTION SNAPSHOT ${literal(String(row.snapshot_name))}`);
  } finally {
    // The snapshot is imported: the temporary slot is no longer needed.
    await repl.end().catch(() => undefined);
  }
  try {
    await applyPending(peek, target, to, names, { upto: at });
    await fault?.('verify-full:after-apply');
    const tables = await tablesOf(snap, from.schema);
    const [a, b] = await Promise.all([
      digest(snap, from, tenantId, tables),
      inTransaction(target, async () => {
        await target.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY');
        return digest(target, to, tenantId, tables);
      }),
    ]);
    await snap.query('COMMIT');
    assertSameDigests(a, b, `every row, at ${at}`);
    await target.query('DELETE FROM tenantry_meta.promotion_touched WHERE slot = $1', [names.slot]);
    return { source: a, target: b, at };
  } catch (e) {
    await snap.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

/** Primary-key columns of a table, in key order. */
async function keyColumns(
  db: Queryable,
  schema: string,
  table: string,
): Promise<{ col: string; type: string }[]> {
  const { rows } = await db.query<{ col: string; type: string }>(
    `SELECT a.attname AS col, format_type(a.atttypid, a.atttypmod) AS type FROM pg_index i
       JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) ON true
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
      WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary ORDER BY k.ord`,
    [schema, table],
  );
  return rows;
}

/**
 * Digests of the rows the change stream touched since the full verification, on both sides (keys
 * read from the target). Every other row was verified then and has not changed since on either side
 * (the source's changes all reach the stream; the target is frozen to everyone but the promotion).
 */
export async function touchedDigests(
  source: Queryable,
  target: Queryable,
  from: Placement,
  to: Placement,
  tables: string[],
  slot: string,
): Promise<{ source: Record<string, TableDigest>; target: Record<string, TableDigest>; keys: number }> {
  const out = {
    source: {} as Record<string, TableDigest>,
    target: {} as Record<string, TableDigest>,
    keys: 0,
  };
  for (const table of tables) {
    const { rows } = await target.query<{ keys: unknown[] }>(
      `SELECT coalesce(jsonb_agg(key), '[]'::jsonb) AS keys FROM tenantry_meta.promotion_touched WHERE slot = $1 AND tbl = $2`,
      [slot, table],
    );
    const keys = JSON.stringify(rows[0]?.keys ?? []);
    out.keys += (rows[0]?.keys ?? []).length;
    const cols = await keyColumns(target, to.schema, table);
    // Typed key lookups (the primary key's index), not a per-row expression over the whole table.
    const typeOk = (t: string) => /^[a-z][a-z0-9 ()_,]*$/.test(t);
    if (!cols.every((c) => typeOk(c.type))) throw new Error(`unexpected key type in ${table}`);
    const keyCols = cols.map((c) => `x.${ident(c.col)}`).join(', ');
    const keyVals = cols.map((c, i) => `(k ->> ${i})::${c.type}`).join(', ');
    const q = (p: Placement) =>
      `SELECT count(*)::text AS n, coalesce(sum(hashtextextended(x::text, 0)), 0)::text AS s
         FROM ${ident(p.schema)}.${ident(table)} x
        WHERE (${keyCols}) IN (SELECT ${keyVals} FROM jsonb_array_elements($1::jsonb) k)`;
    const [a, b] = await Promise.all([
      source.query<{ n: string; s: string }>(q(from), [keys]),
      target.query<{ n: string; s: string }>(q(to), [keys]),
    ]);
    out.source[table] = { rows: Number(a.rows[0]?.n ?? 0), sum: a.rows[0]?.s ?? '0' };
    out.target[table] = { rows: Number(b.rows[0]?.n ?? 0), sum: b.rows[0]?.s ?? '0' };
  }
  return out;
}

export function assertSameDigests(
  a: Record<string, TableDigest>,
  b: Record<string, TableDigest>,
  what: string,
): void {
  for (const table of Object.keys(a)) {
    if (a[table]?.rows !== b[table]?.rows || a[table]?.sum !== b[table]?.sum) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        `verification failed on table ${table} (${what}): source ${a[table]?.rows} rows / ${a[table]?.sum}, target ${b[table]?.rows} rows / ${b[table]?.sum}`,
      );
    }
  }
}
