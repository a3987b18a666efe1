import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { TenantryError } from '../domain/errors.js';
import { tenantObjectName } from '../domain/naming.js';
import type { Tier } from '../domain/tiers.js';
import type { DataPlane } from '../engine/dataplane.js';
import { ensureMeta, ident, inTransaction, literal, type Queryable } from '../providers/postgres/index.js';
import { decode, type PgOutputMessage, type Relation, type TupleValue } from './pgoutput.js';

/** Where a tenant's tables live on a tier. */
export interface Placement {
  tier: Tier;
  database: string;
  schema: string;
  /** Pool tables are shared: every statement filters on tenant_id. */
  shared: boolean;
}

export function placementOf(dp: DataPlane, slug: string, tier: Tier): Placement {
  const name = tenantObjectName(slug);
  switch (tier) {
    case 'pool':
      return { tier, database: dp.names.database, schema: dp.names.poolSchema, shared: true };
    case 'bridge':
      return { tier, database: dp.names.database, schema: name, shared: false };
    case 'silo':
      return { tier, database: name, schema: dp.names.siloSchema, shared: false };
    default:
      throw new TenantryError(
        'TIER_NOT_AVAILABLE_ON_TARGET',
        `tier ${tier} has no Postgres placement on this target`,
      );
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Names of the replication objects of one promotion: derived from the operation id, found again after a crash. */
export function replicationNames(operationId: string): { slot: string; publication: string } {
  const m = /^op_([0-9a-f]{28})$/.exec(operationId);
  if (!m) throw new Error(`bad operation id ${operationId}`);
  return { slot: `tenantry_promo_${m[1]}`, publication: `tenantry_promo_${m[1]}` };
}

export async function tablesOf(db: Queryable, schema: string): Promise<string[]> {
  const { rows } = await db.query<{ t: string }>(
    `SELECT c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`,
    [schema],
  );
  return rows.map((r) => r.t);
}

/* ------------------------------------------------------------------ freeze */

const FREEZE_FN = 'tenantry_meta.refuse_frozen_write';

/**
 * The write freeze lives in the database, so no client can bypass it: BEFORE triggers on the
 * tenant's tables, with a WHEN clause on this tenant's id, that raise a clear, retryable error
 * (SQLSTATE 25006 read_only_sql_transaction). Other tenants' writes never fire them.
 * CREATE TRIGGER waits for in-flight writers of the table, so no earlier write is left uncommitted.
 */
/** Trigger names carry the tenant, so concurrent promotions of two pool tenants never touch each other's. */
const triggerBase = (tenantId: string) => `tenantry_freeze_${tenantId.replaceAll('-', '').slice(0, 32)}`;

export async function freeze(db: Queryable, p: Placement, tenantId: string): Promise<void> {
  if (!UUID.test(tenantId)) throw new Error('bad tenant id');
  const base = triggerBase(tenantId);
  await ensureMeta(db);
  await db.query(`CREATE OR REPLACE FUNCTION ${FREEZE_FN}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'tenant % is read-only while it moves to another tier; retry after the cutover', TG_ARGV[0]
        USING ERRCODE = '25006', HINT = 'tenantry promotion freeze';
    END $$`);
  const t = literal(tenantId);
  for (const table of await tablesOf(db, p.schema)) {
    const q = `${ident(p.schema)}.${ident(table)}`;
    await inTransaction(db, async () => {
      await db.query(`SET LOCAL lock_timeout = '5s'`);
      for (const op of ['ins', 'upd', 'del'])
        await db.query(`DROP TRIGGER IF EXISTS ${ident(`${base}_${op}`)} ON ${q}`);
      await db.query(
        `CREATE TRIGGER ${ident(`${base}_ins`)} BEFORE INSERT ON ${q} FOR EACH ROW WHEN (NEW.tenant_id = ${t}::uuid) EXECUTE FUNCTION ${FREEZE_FN}(${t})`,
      );
      await db.query(
        `CREATE TRIGGER ${ident(`${base}_upd`)} BEFORE UPDATE ON ${q} FOR EACH ROW WHEN (OLD.tenant_id = ${t}::uuid OR NEW.tenant_id = ${t}::uuid) EXECUTE FUNCTION ${FREEZE_FN}(${t})`,
      );
      await db.query(
        `CREATE TRIGGER ${ident(`${base}_del`)} BEFORE DELETE ON ${q} FOR EACH ROW WHEN (OLD.tenant_id = ${t}::uuid) EXECUTE FUNCTION ${FREEZE_FN}(${t})`,
      );
    });
  }
}

export async function unfreeze(db: Queryable, p: Placement, tenantId: string): Promise<void> {
  const base = triggerBase(tenantId);
  for (const table of await tablesOf(db, p.schema)) {
    const q = `${ident(p.schema)}.${ident(table)}`;
    await db.query(
      ['ins', 'upd', 'del'].map((op) => `DROP TRIGGER IF EXISTS ${ident(`${base}_${op}`)} ON ${q}`).join(';'),
    );
  }
}

export async function isFrozen(db: Queryable, p: Placement, tenantId: string): Promise<boolean> {
  const { rows } = await db.query(
    `SELECT 1 FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND g.tgname = $2 LIMIT 1`,
    [p.schema, `${triggerBase(tenantId)}_ins`],
  );
  return rows.length > 0;
}

/* ------------------------------------------------------------ deferred DDL */

/**
 * Secondary indexes, unique and foreign-key constraints of the target, captured and dropped
 * before the bulk copy (an initial copy into indexed tables is slow), rebuilt afterwards.
 * Primary keys stay: they carry tenant_id and are what replication applies changes by.
 */
export interface DeferredDdl {
  create: string[];
  drop: string[];
}

/** Lists the target's secondary indexes and constraints (to persist before dropping them). */
export async function listSecondary(db: Queryable, schema: string): Promise<DeferredDdl> {
  const { rows } = await db.query<{ ddl: string; drop: string }>(
    `SELECT format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)) AS ddl,
            format('ALTER TABLE %I.%I DROP CONSTRAINT IF EXISTS %I', n.nspname, c.relname, k.conname) AS drop,
            CASE k.contype WHEN 'u' THEN 1 ELSE 2 END AS ord
       FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND k.contype IN ('u', 'f')
     UNION ALL
     SELECT pg_get_indexdef(i.indexrelid), format('DROP INDEX IF EXISTS %I.%I', n.nspname, ic.relname), 0
       FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
      WHERE n.nspname = $1 AND NOT i.indisprimary
        AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
     ORDER BY ord`,
    [schema],
  );
  // Rebuild plain indexes, then unique constraints, then foreign keys; drop in the reverse order.
  return { create: rows.map((r) => r.ddl), drop: rows.map((r) => r.drop).reverse() };
}

export async function dropSecondary(db: Queryable, d: DeferredDdl): Promise<void> {
  for (const stmt of d.drop) await db.query(stmt);
}

export async function applyDeferred(db: Queryable, ddl: string[]): Promise<void> {
  for (const stmt of ddl) {
    await db.query(stmt).catch((e: { code?: string }) => {
      // Already rebuilt by an earlier attempt.
      if (!['42P07', '42710'].includes(e.code ?? '')) throw e;
    });
  }
}

/* -------------------------------------------------------------------- copy */

/** Streams one table's tenant rows with binary COPY; memory stays flat whatever the size. */
export async function copyTable(
  source: pg.PoolClient | pg.Client,
  target: pg.PoolClient | pg.Client,
  from: Placement,
  to: Placement,
  table: string,
  tenantId: string,
  opts: { truncate?: boolean } = {},
): Promise<number> {
  if (!UUID.test(tenantId)) throw new Error('bad tenant id');
  const src = `${ident(from.schema)}.${ident(table)}`;
  const dst = `${ident(to.schema)}.${ident(table)}`;
  if (opts.truncate !== false) await target.query(`TRUNCATE ${dst}`);
  const out = source.query(
    copyTo(`COPY (SELECT * FROM ${src} WHERE tenant_id = ${literal(tenantId)}) TO STDOUT (FORMAT binary)`),
  );
  const inp = target.query(copyFrom(`COPY ${dst} FROM STDIN (FORMAT binary)`));
  await pipeline(out, inp);
  return Number(inp.rowCount ?? 0);
}

/* -------------------------------------------------------------- replication */

export async function ensureReplication(
  db: Queryable,
  from: Placement,
  tenantId: string,
  names: { slot: string; publication: string },
): Promise<void> {
  const { rows: wal } = await db.query<{ wal_level: string }>('SHOW wal_level');
  if (wal[0]?.wal_level !== 'logical') {
    throw new TenantryError('PROVIDER_FAILED', 'promotion needs wal_level=logical on the data-plane cluster');
  }
  const pub = await db.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [names.publication]);
  if (pub.rows.length === 0) {
    const tables = await tablesOf(db, from.schema);
    const filter = from.shared ? ` WHERE (tenant_id = ${literal(tenantId)}::uuid)` : '';
    const list = tables.map((t) => `${ident(from.schema)}.${ident(t)}${filter}`).join(', ');
    await db.query(
      `CREATE PUBLICATION ${ident(names.publication)} FOR TABLE ${list} WITH (publish = 'insert, update, delete, truncate')`,
    );
  }
}

/**
 * Creates the slot over a replication connection with an exported snapshot, and copies every
 * table in that very snapshot: the slot then streams exactly the changes the copy does not hold,
 * with no overlap (so constraints hold while replaying) and no gap. A rerun (after a crash during
 * the copy) drops the slot and starts both again.
 */
export async function createSlotAndCopy(
  adminUrl: string,
  source: pg.Client,
  target: pg.Client,
  from: Placement,
  to: Placement,
  tenantId: string,
  names: { slot: string; publication: string },
  onTable: (table: string, rows: number) => Promise<void>,
): Promise<{ copyMs: number; bulkVerifyMs: number }> {
  await source.query(
    `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`,
    [names.slot],
  );
  await ensureTouchedTable(target);
  await target.query('DELETE FROM tenantry_meta.promotion_touched WHERE slot = $1', [names.slot]);
  const repl = new pg.Client({ connectionString: adminUrl, replication: 'database' } as pg.ClientConfig);
  repl.on('error', () => {});
  await repl.connect();
  try {
    const created = await repl.query(
      `CREATE_REPLICATION_SLOT ${ident(names.slot)} LOGICAL pgoutput (SNAPSHOT 'export')`,
    );
    const snapshot = String((created.rows[0] as { snapshot_name?: string }).snapshot_name);
    await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    try {
      await source.query(`SET TRANSACTION SNAPSHOT ${literal(snapshot)}`);
      const tables = await tablesOf(source, from.schema);
      const t0 = performance.now();
      for (const table of tables) {
        await onTable(table, await copyTable(source, target, from, to, table, tenantId));
      }
      const t1 = performance.now();
      // Bulk verification, outside any freeze: the source in the copy's snapshot against the fresh copy.
      const [a, b] = await Promise.all([
        digest(source, from, tenantId, tables),
        digest(target, to, tenantId, tables),
      ]);
      assertSameDigests(a, b, 'bulk copy');
      await source.query('COMMIT');
      return { copyMs: Math.round(t1 - t0), bulkVerifyMs: Math.round(performance.now() - t1) };
    } catch (e) {
      await source.query('ROLLBACK').catch(() => undefined);
      throw e;
    }
  } finally {
    await repl.end().catch(() => undefined);
  }
}

/** Fresh copies have no visibility map yet: vacuum them so the in-freeze counts are index-only scans. */
export async function vacuumTables(db: Queryable, schema: string): Promise<void> {
  for (const t of await tablesOf(db, schema)) await db.query(`VACUUM (ANALYZE) ${ident(schema)}.${ident(t)}`);
}

export async function dropReplication(
  db: Queryable,
  names: { slot: string; publication: string },
): Promise<void> {
  await db.query(
    `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`,
    [names.slot],
  );
  await db.query(`DROP PUBLICATION IF EXISTS ${ident(names.publication)}`);
}

export async function slotLagBytes(db: Queryable, slot: string): Promise<number | null> {
  const { rows } = await db.query<{ lag: string | null }>(
    `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text AS lag FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  return rows[0]?.lag == null ? null : Number(rows[0].lag);
}

/**
 * A WAL position that is a record boundary and already flushed, with everything before it:
 * logical decoding only reads flushed WAL, and with synchronous_commit=off a commit can be
 * acknowledged before it is. A transactional message committed with synchronous_commit=on
 * flushes the WAL up to it.
 */
async function syncPoint(db: Queryable): Promise<string> {
  return inTransaction(db, async () => {
    await db.query('SET LOCAL synchronous_commit = on');
    const { rows } = await db.query<{ lsn: string }>(
      `SELECT pg_logical_emit_message(true, 'tenantry.promotion', '')::text AS lsn`,
    );
    return rows[0]!.lsn;
  });
}

/**
 * A slot's restart point only moves at a running-transactions WAL record (every 15 s by default);
 * until then every peek decodes again from the old point. Logging one first lets each advance
 * move it, so each pass decodes only new WAL.
 */
async function logRunningXacts(db: Queryable): Promise<void> {
  await db.query('SELECT pg_log_standby_snapshot()').catch(() => undefined);
}

interface Txn {
  endLsn: string;
  changes: PgOutputMessage[];
}

/**
 * Applies the slot's pending changes to the target, one source transaction per target
 * transaction, then advances the slot past what was applied. Changes are peeked, not consumed:
 * a crash between applying and advancing replays them, and every apply is idempotent (upsert by
 * primary key, delete by key), which is also what makes replaying changes older than the copy safe.
 */
export async function applyPending(
  source: Queryable,
  target: Queryable,
  to: Placement,
  names: { slot: string; publication: string },
  batch = 10_000,
): Promise<{ changes: number; transactions: number }> {
  const relations = new Map<number, Relation>();
  let changes = 0;
  let transactions = 0;
  for (;;) {
    // Decode up to a fresh WAL record boundary; when that is all read, the slot moves past it
    // (other tenants' WAL included), so it neither holds WAL nor re-decodes it next time.
    // pg_current_wal_lsn() would not do: it can fall inside a commit record that is still being
    // written, and a slot advanced past a commit record's start skips that transaction forever.
    const upto = await syncPoint(source);
    const { rows } = await source.query<{ lsn: string; data: Buffer }>(
      `SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, $4::pg_lsn, $2, 'proto_version', '1', 'publication_names', $3)`,
      [names.slot, batch, names.publication, upto],
    );
    if (rows.length === 0) {
      await logRunningXacts(source);
      await source.query(
        `SELECT pg_replication_slot_advance($1, $2::pg_lsn) FROM pg_replication_slots
          WHERE slot_name = $1 AND confirmed_flush_lsn < $2::pg_lsn`,
        [names.slot, upto],
      );
      break;
    }
    const txns: Txn[] = [];
    let cur: PgOutputMessage[] | null = null;
    for (const r of rows) {
      const m = decode(r.data);
      if (m.tag === 'begin') cur = [];
      else if (m.tag === 'commit') {
        if (cur) txns.push({ endLsn: m.endLsn, changes: cur });
        cur = null;
      } else if (m.tag === 'relation') relations.set(m.relation.oid, m.relation);
      else if (cur && m.tag !== 'other') cur.push(m);
    }
    // The whole batch goes in one target transaction, sent as a few multi-statement strings
    // (values as escaped literals): apply must outrun the tenant's writers for catch-up to converge.
    const statements: string[] = [];
    for (const t of txns) {
      for (const c of t.changes) {
        const sql = changeSql(names.slot, to, relations, c);
        if (sql) statements.push(...sql);
      }
      changes += t.changes.length;
      transactions++;
    }
    if (statements.length > 0) {
      await inTransaction(target, async () => {
        for (let i = 0; i < statements.length; i += 500)
          await target.query(statements.slice(i, i + 500).join(';\n'));
      });
    }
    // A partial batch read everything up to `upto`; a full one stops at its last transaction.
    const done = rows.length < batch;
    const last = txns[txns.length - 1];
    const advanceTo = done ? upto : last?.endLsn;
    if (advanceTo) {
      await logRunningXacts(source);
      await source.query(
        `SELECT pg_replication_slot_advance($1, $2::pg_lsn) FROM pg_replication_slots
          WHERE slot_name = $1 AND confirmed_flush_lsn < $2::pg_lsn`,
        [names.slot, advanceTo],
      );
    }
    if (done) break;
  }
  return { changes, transactions };
}

/**
 * Keys the change stream touched, recorded on the target in the same transaction as the change.
 * Rows untouched since the copy were verified in bulk right after it; inside the freeze only
 * these rows are compared, so the write freeze scales with the rate of change, not the size.
 */
export async function ensureTouchedTable(db: Queryable): Promise<void> {
  await ensureMeta(db);
  await db.query(`CREATE TABLE IF NOT EXISTS tenantry_meta.promotion_touched (
    slot text NOT NULL, tbl text NOT NULL, key jsonb NOT NULL, PRIMARY KEY (slot, tbl, key))`);
}

function touchedSql(slot: string, rel: Relation, tuple: TupleValue[]): string {
  const key = rel.columns.map((c, i) => (c.key ? tuple[i] : undefined)).filter((v) => v !== undefined);
  return `INSERT INTO tenantry_meta.promotion_touched (slot, tbl, key) VALUES (${literal(slot)}, ${literal(rel.name)}, ${literal(JSON.stringify(key))}::jsonb) ON CONFLICT DO NOTHING`;
}

const val = (v: TupleValue | undefined): string =>
  v === null || v === undefined ? 'NULL' : literal(v as string);

/** The statements that apply one decoded change idempotently (upsert or delete by primary key). */
function changeSql(
  slot: string,
  to: Placement,
  relations: Map<number, Relation>,
  c: PgOutputMessage,
): string[] | null {
  if (c.tag === 'truncate') {
    throw new TenantryError(
      'PROVIDER_FAILED',
      'a TRUNCATE reached the promoted tables during the move; promotion aborted',
    );
  }
  if (c.tag !== 'insert' && c.tag !== 'update' && c.tag !== 'delete') return null;
  const rel = relations.get(c.relationOid);
  if (!rel) throw new Error(`pgoutput: change for unknown relation ${c.relationOid}`);
  const table = `${ident(to.schema)}.${ident(rel.name)}`;
  const where = (tuple: TupleValue[]) =>
    rel.columns
      .map((col, i) => (col.key ? `${ident(col.name)} = ${val(tuple[i])}` : null))
      .filter((x) => x !== null)
      .join(' AND ');
  if (c.tag === 'delete')
    return [`DELETE FROM ${table} WHERE ${where(c.oldKey)}`, touchedSql(slot, rel, c.oldKey)];
  const tuple = c.newTuple;
  const out: string[] = [touchedSql(slot, rel, tuple)];
  // The key changed: remove the old row first.
  if (c.tag === 'update' && c.oldKey) {
    out.push(`DELETE FROM ${table} WHERE ${where(c.oldKey)}`, touchedSql(slot, rel, c.oldKey));
  }
  const present = rel.columns
    .map((col, i) => ({ col, v: tuple[i] }))
    .filter((x) => typeof x.v !== 'object' || x.v === null);
  if (present.length === rel.columns.length) {
    const cols = present.map((x) => ident(x.col.name));
    const keys = rel.columns.filter((x) => x.key).map((x) => ident(x.name));
    const sets = present
      .filter((x) => !x.col.key)
      .map((x) => `${ident(x.col.name)} = EXCLUDED.${ident(x.col.name)}`);
    out.push(
      `INSERT INTO ${table} (${cols.join(', ')}) VALUES (${present.map((x) => val(x.v)).join(', ')}) ` +
        `ON CONFLICT (${keys.join(', ')}) DO ${sets.length ? `UPDATE SET ${sets.join(', ')}` : 'NOTHING'}`,
    );
    return out;
  }
  // An update that left TOASTed values out: update the columns that were sent, by key.
  const setCols = present.filter((x) => !x.col.key);
  out.push(
    `UPDATE ${table} SET ${setCols.map((x) => `${ident(x.col.name)} = ${val(x.v)}`).join(', ')} WHERE ${where(tuple)}`,
  );
  return out;
}

/* ------------------------------------------------------------------ verify */

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

/** Row counts of the tenant's rows per table (index-only scans where the visibility map allows). */
export async function counts(
  db: Queryable,
  p: Placement,
  tenantId: string,
  tables: string[],
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of tables) {
    const { rows } = await db.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM ${ident(p.schema)}.${ident(t)} WHERE tenant_id = $1`,
      [tenantId],
    );
    out[t] = Number(rows[0]?.n ?? 0);
  }
  return out;
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

/** Digests of the rows the change stream touched, on both sides (keys read from the target). */
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

/** Brings every sequence of the target schema at least as far as the source's. Replication carries none. */
export async function syncSequences(
  source: Queryable,
  target: Queryable,
  from: Placement,
  to: Placement,
): Promise<number> {
  const { rows } = await source.query<{ name: string; last: string | null }>(
    `SELECT sequencename AS name, last_value::text AS last FROM pg_sequences WHERE schemaname = $1`,
    [from.schema],
  );
  let n = 0;
  for (const r of rows) {
    if (r.last == null) continue;
    const t = await target.query(`SELECT 1 FROM pg_sequences WHERE schemaname = $1 AND sequencename = $2`, [
      to.schema,
      r.name,
    ]);
    if (t.rows.length === 0) continue;
    await target.query(
      `SELECT setval($1::regclass, greatest($2::bigint, (SELECT coalesce(last_value, 1) FROM pg_sequences WHERE schemaname = $3 AND sequencename = $4)))`,
      [`${ident(to.schema)}.${ident(r.name)}`, r.last, to.schema, r.name],
    );
    n++;
  }
  return n;
}
