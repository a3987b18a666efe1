import pg from 'pg';
import { TenantryError } from '../domain/errors.js';
import type { Queryable } from '../domain/queryable.js';
import { ensureMeta, ident, inTransaction, literal } from '../providers/postgres/index.js';
import { decode, type PgOutputMessage, type Relation, type TupleValue } from './pgoutput.js';
import { type Placement, tablesOf } from './placement.js';

/**
 * Logical replication of one promotion: its publication and slot (named after the operation), how
 * much WAL the slot holds, the pgoutput changes applied to the target as idempotent upserts and
 * deletes, the promotion's bookkeeping on the target (touched keys, last source transaction
 * applied), and the sequences replication does not carry.
 */

/** Names of the replication objects of one promotion: derived from the operation id, found again after a crash. */
export function replicationNames(operationId: string): { slot: string; publication: string } {
  const m = /^op_([0-9a-f]{28})$/.exec(operationId);
  if (!m) throw new Error(`bad operation id ${operationId}`);
  return { slot: `tenantry_promo_${m[1]}`, publication: `tenantry_promo_${m[1]}` };
}

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

/** A replication-protocol connection (slot creation with an exported snapshot). */
export async function replicationClient(adminUrl: string): Promise<pg.Client> {
  const repl = new pg.Client({ connectionString: adminUrl, replication: 'database' } as pg.ClientConfig);
  repl.on('error', () => {});
  await repl.connect();
  return repl;
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

export async function slotExists(db: Queryable, slot: string): Promise<boolean> {
  const { rows } = await db.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slot]);
  return rows.length > 0;
}

/** How far the slot's consumer is behind the current WAL position (what catch-up still has to apply). */
export async function slotLagBytes(db: Queryable, slot: string): Promise<number | null> {
  const { rows } = await db.query<{ lag: string | null }>(
    `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text AS lag FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  return rows[0]?.lag == null ? null : Number(rows[0].lag);
}

/**
 * How much WAL the slot keeps the cluster from recycling: everything since its restart point, for
 * every tenant of the cluster. This is what the lag limit bounds.
 */
export async function retainedWalBytes(db: Queryable, slot: string): Promise<number | null> {
  const { rows } = await db.query<{ held: string | null }>(
    `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::text AS held FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  return rows[0]?.held == null ? null : Number(rows[0].held);
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

/**
 * The tenant's row changes still in the slot (the publication is filtered to the tenant): after
 * a drain, every one of them is a write the source took past the drain point. Reads up to a
 * flushed sync point, so a commit acknowledged with synchronous_commit = off is counted too.
 */
export async function lateChanges(
  db: Queryable,
  names: { slot: string; publication: string },
): Promise<number> {
  const upto = await syncPoint(db);
  const { rows } = await db.query<{ data: Buffer }>(
    `SELECT data FROM pg_logical_slot_peek_binary_changes($1, $3::pg_lsn, NULL, 'proto_version', '1', 'publication_names', $2)`,
    [names.slot, names.publication, upto],
  );
  let n = 0;
  for (const r of rows) {
    const tag = decode(r.data).tag;
    if (tag === 'insert' || tag === 'update' || tag === 'delete' || tag === 'truncate') n++;
  }
  return n;
}

/** A pg_lsn as a number, for ordering. */
export function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

interface Txn {
  endLsn: string;
  changes: PgOutputMessage[];
}

export interface ApplyOptions {
  batch?: number;
  /** Apply only transactions that commit before this LSN (default: a fresh flushed sync point). */
  upto?: string;
  fault?: (point: string) => Promise<void>;
}

/**
 * Applies the slot's pending changes to the target, a batch of source transactions per target
 * transaction, then advances the slot past what was applied. Changes are peeked, not consumed,
 * so a crash between applying and advancing replays them; the target records the end LSN of the
 * last transaction it applied in the same transaction as the changes, and a replay skips every
 * transaction at or below it (replaying an insert of a row deleted since could otherwise break a
 * unique constraint that the row's successor now holds).
 */
export async function applyPending(
  source: Queryable,
  target: Queryable,
  to: Placement,
  names: { slot: string; publication: string },
  opts: ApplyOptions = {},
): Promise<{ changes: number; transactions: number; skipped: number }> {
  const batch = opts.batch ?? 10_000;
  const relations = new Map<number, Relation>();
  let changes = 0;
  let transactions = 0;
  let skipped = 0;
  await ensurePromotionMeta(target);
  let applied = await appliedLsn(target, names.slot);
  for (;;) {
    // Decode up to a fresh WAL record boundary; when that is all read, the slot moves past it
    // (other tenants' WAL included), so it neither holds WAL nor re-decodes it next time.
    // pg_current_wal_lsn() would not do: it can fall inside a commit record that is still being
    // written, and a slot advanced past a commit record's start skips that transaction forever.
    const upto = opts.upto ?? (await syncPoint(source));
    const { rows } = await source.query<{ lsn: string; data: Buffer }>(
      `SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, $4::pg_lsn, $2, 'proto_version', '1', 'publication_names', $3)`,
      [names.slot, batch, names.publication, upto],
    );
    if (rows.length === 0) {
      await logRunningXacts(source);
      await advance(source, names.slot, upto);
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
    let last: string | null = null;
    for (const t of txns) {
      if (applied !== null && lsnValue(t.endLsn) <= applied) {
        skipped++;
        continue;
      }
      for (const c of t.changes) {
        const sql = changeSql(names.slot, to, relations, c);
        if (sql) statements.push(...sql);
      }
      changes += t.changes.length;
      transactions++;
      last = t.endLsn;
    }
    if (last) {
      const lastLsn = last;
      await inTransaction(target, async () => {
        // Past the target's own freeze; foreign keys hold on the source already.
        await target.query('SET LOCAL session_replication_role = replica');
        for (let i = 0; i < statements.length; i += 500)
          await target.query(statements.slice(i, i + 500).join(';\n'));
        await target.query(
          `INSERT INTO tenantry_meta.promotion_applied (slot, lsn) VALUES ($1, $2::pg_lsn)
           ON CONFLICT (slot) DO UPDATE SET lsn = EXCLUDED.lsn, applied_at = now()`,
          [names.slot, lastLsn],
        );
      });
      applied = lsnValue(lastLsn);
      await opts.fault?.('apply:before-advance');
    }
    // A partial batch read everything up to `upto`; a full one stops at its last transaction.
    const done = rows.length < batch;
    const advanceTo = done ? upto : txns[txns.length - 1]?.endLsn;
    if (advanceTo) {
      await logRunningXacts(source);
      await advance(source, names.slot, advanceTo);
    }
    if (done) break;
  }
  return { changes, transactions, skipped };
}

async function advance(source: Queryable, slot: string, to: string): Promise<void> {
  await source.query(
    `SELECT pg_replication_slot_advance($1, $2::pg_lsn) FROM pg_replication_slots
      WHERE slot_name = $1 AND confirmed_flush_lsn < $2::pg_lsn`,
    [slot, to],
  );
}

/**
 * The promotion's bookkeeping on the target: the keys the change stream touched since the last
 * full verification (compared again inside the freeze), and the last source transaction applied.
 * Deleted at the cutover or the abort.
 */
export async function ensurePromotionMeta(db: Queryable): Promise<void> {
  const { rows } = await db.query<{ ok: boolean }>(
    `SELECT to_regclass('tenantry_meta.promotion_touched') IS NOT NULL
        AND to_regclass('tenantry_meta.promotion_applied') IS NOT NULL AS ok`,
  );
  if (rows[0]?.ok) return;
  await ensureMeta(db);
  await db.query(`
    CREATE TABLE IF NOT EXISTS tenantry_meta.promotion_touched (
      slot text NOT NULL, tbl text NOT NULL, key jsonb NOT NULL, PRIMARY KEY (slot, tbl, key));
    CREATE TABLE IF NOT EXISTS tenantry_meta.promotion_applied (
      slot text PRIMARY KEY, lsn pg_lsn NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
}

async function appliedLsn(db: Queryable, slot: string): Promise<bigint | null> {
  const { rows } = await db.query<{ lsn: string }>(
    'SELECT lsn::text AS lsn FROM tenantry_meta.promotion_applied WHERE slot = $1',
    [slot],
  );
  return rows[0] ? lsnValue(rows[0].lsn) : null;
}

/** Removes the promotion's bookkeeping (it holds the tenant's key values) from a database. */
export async function clearPromotionMeta(db: Queryable, slot: string): Promise<void> {
  const { rows } = await db.query<{ t: boolean; a: boolean }>(
    `SELECT to_regclass('tenantry_meta.promotion_touched') IS NOT NULL AS t,
            to_regclass('tenantry_meta.promotion_applied') IS NOT NULL AS a`,
  );
  if (rows[0]?.t) await db.query('DELETE FROM tenantry_meta.promotion_touched WHERE slot = $1', [slot]);
  if (rows[0]?.a) await db.query('DELETE FROM tenantry_meta.promotion_applied WHERE slot = $1', [slot]);
}

function touchedSql(slot: string, rel: Relation, tuple: TupleValue[]): string {
  const key = rel.columns.map((c, i) => (c.key ? tuple[i] : undefined)).filter((v) => v !== undefined);
  return `INSERT INTO tenantry_meta.promotion_touched (slot, tbl, key) VALUES (${literal(slot)}, ${literal(rel.name)}, ${literal(JSON.stringify(key))}::jsonb) ON CONFLICT DO NOTHING`;
}

const val = (v: TupleValue | undefined): string =>
  v === null || v === undefined ? 'NULL' : literal(v as string);

/** The statements that apply one decoded change idempotently (upsert or delete by primary key). */
export function changeSql(
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
  const where = (tuple: TupleValue[], alias = '') =>
    rel.columns
      .map((col, i) => (col.key ? `${alias}${ident(col.name)} = ${val(tuple[i])}` : null))
      .filter((x) => x !== null)
      .join(' AND ');
  if (c.tag === 'delete')
    return [`DELETE FROM ${table} WHERE ${where(c.oldKey)}`, touchedSql(slot, rel, c.oldKey)];
  const tuple = c.newTuple;
  const out: string[] = [touchedSql(slot, rel, tuple)];
  const oldKey = c.tag === 'update' ? c.oldKey : null;
  if (oldKey) out.push(touchedSql(slot, rel, oldKey));
  const cols = rel.columns.map((x) => ident(x.name));
  const keys = rel.columns.filter((x) => x.key).map((x) => ident(x.name));
  const sets = rel.columns.filter((x) => !x.key).map((x) => `${ident(x.name)} = EXCLUDED.${ident(x.name)}`);
  const upsert = `ON CONFLICT (${keys.join(', ')}) DO ${sets.length ? `UPDATE SET ${sets.join(', ')}` : 'NOTHING'}`;
  const unchanged = tuple.some((v) => typeof v === 'object' && v !== null);
  if (!unchanged) {
    // The key changed: remove the old row first.
    if (oldKey) out.push(`DELETE FROM ${table} WHERE ${where(oldKey)}`);
    out.push(`INSERT INTO ${table} (${cols.join(', ')}) VALUES (${tuple.map(val).join(', ')}) ${upsert}`);
    return out;
  }
  if (oldKey) {
    // The key changed and TOASTed values were left out (unchanged): they are the old row's, which
    // the target holds as of this change. Build the new row from it, then remove it.
    const exprs = rel.columns.map((col, i) => {
      const v = tuple[i];
      return typeof v === 'object' && v !== null ? `o.${ident(col.name)}` : val(v);
    });
    out.push(
      `INSERT INTO ${table} (${cols.join(', ')}) SELECT ${exprs.join(', ')} FROM ${table} o WHERE ${where(oldKey, 'o.')} ${upsert}`,
      `DELETE FROM ${table} WHERE ${where(oldKey)}`,
    );
    return out;
  }
  // An update that left TOASTed values out: update the columns that were sent, by key.
  const setCols = rel.columns
    .map((col, i) => ({ col, v: tuple[i] }))
    .filter((x) => !x.col.key && (typeof x.v !== 'object' || x.v === null));
  if (setCols.length > 0) {
    out.push(
      `UPDATE ${table} SET ${setCols.map((x) => `${ident(x.col.name)} = ${val(x.v)}`).join(', ')} WHERE ${where(tuple)}`,
    );
  }
  return out;
}

/**
 * Brings every sequence of the target schema at least as far as the source's (never backwards: a
 * shared pool sequence serves other tenants too). Replication carries no sequences.
 */
export async function syncSequences(
  source: Queryable,
  target: Queryable,
  from: Placement,
  to: Placement,
): Promise<Record<string, string>> {
  const { rows } = await source.query<{ name: string; last: string | null }>(
    `SELECT sequencename AS name, last_value::text AS last FROM pg_sequences WHERE schemaname = $1`,
    [from.schema],
  );
  const out: Record<string, string> = {};
  for (const r of rows) {
    if (r.last == null) continue;
    const t = await target.query(`SELECT 1 FROM pg_sequences WHERE schemaname = $1 AND sequencename = $2`, [
      to.schema,
      r.name,
    ]);
    if (t.rows.length === 0) continue;
    const { rows: set } = await target.query<{ v: string }>(
      `SELECT setval($1::regclass, greatest($2::bigint, (SELECT coalesce(last_value, 1) FROM pg_sequences WHERE schemaname = $3 AND sequencename = $4)))::text AS v`,
      [`${ident(to.schema)}.${ident(r.name)}`, r.last, to.schema, r.name],
    );
    out[r.name] = set[0]?.v ?? r.last;
  }
  return out;
}
