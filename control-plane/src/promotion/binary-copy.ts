import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import type { Queryable } from '../domain/queryable.js';
import { ident, literal } from '../providers/postgres/index.js';
import { type Placement, tablesOf } from './placement.js';
import { clearPromotionMeta, ensurePromotionMeta, replicationClient } from './replication.js';

/**
 * The bulk copy of a promotion: the target's secondary indexes and constraints deferred past it,
 * the slot created with an exported snapshot and every table streamed with binary COPY inside that
 * snapshot, a row counter reading the binary stream as it passes (progress), and the vacuum after.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

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

/**
 * Counts the tuples of a binary COPY stream as it passes, unchanged (format: 19-byte header and
 * extension area, then per tuple an int16 field count and per field an int32 length and its bytes,
 * then an int16 -1 trailer). Calls `onRows` every `every` rows.
 */
export class BinaryRowCounter extends Transform {
  rows = 0;
  private state: 'header' | 'ext' | 'tuple' | 'field' | 'skip' | 'done' = 'header';
  private need = 19;
  private scratch = Buffer.alloc(19);
  private have = 0;
  private skip = 0;
  private fieldsLeft = 0;

  constructor(
    private readonly period = 0,
    private readonly notify?: (rows: number) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null, data?: Buffer) => void) {
    try {
      this.scan(chunk);
      done(null, chunk);
    } catch (e) {
      done(e as Error);
    }
  }

  private scan(b: Buffer): void {
    let i = 0;
    while (i < b.length && this.state !== 'done') {
      if (this.state === 'skip' || this.state === 'ext') {
        const n = Math.min(this.skip, b.length - i);
        this.skip -= n;
        i += n;
        if (this.skip === 0) this.state = this.state === 'ext' || this.fieldsLeft === 0 ? 'tuple' : 'field';
        if (this.state === 'tuple') this.need = 2;
        else if (this.state === 'field') this.need = 4;
        continue;
      }
      // Gather `need` bytes (a header, a field count or a field length), across chunks if need be.
      let v: Buffer;
      let at: number;
      if (this.have === 0 && b.length - i >= this.need) {
        v = b;
        at = i;
        i += this.need;
      } else {
        const n = Math.min(this.need - this.have, b.length - i);
        b.copy(this.scratch, this.have, i, i + n);
        this.have += n;
        i += n;
        if (this.have < this.need) break;
        v = this.scratch;
        at = 0;
        this.have = 0;
      }
      if (this.state === 'header') {
        this.skip = v.readUInt32BE(at + 15);
        this.state = this.skip > 0 ? 'ext' : 'tuple';
        this.need = 2;
      } else if (this.state === 'tuple') {
        const fields = v.readInt16BE(at);
        if (fields < 0) {
          this.state = 'done';
          break;
        }
        this.rows++;
        if (this.period > 0 && this.rows % this.period === 0) this.notify?.(this.rows);
        this.fieldsLeft = fields;
        this.state = fields > 0 ? 'field' : 'tuple';
        this.need = fields > 0 ? 4 : 2;
      } else {
        const len = v.readInt32BE(at);
        this.fieldsLeft--;
        if (len > 0) {
          this.skip = len;
          this.state = 'skip';
        } else {
          this.state = this.fieldsLeft > 0 ? 'field' : 'tuple';
          this.need = this.fieldsLeft > 0 ? 4 : 2;
        }
      }
    }
  }
}

/** Streams one table's tenant rows with binary COPY; memory stays flat whatever the size. */
export async function copyTable(
  source: pg.PoolClient | pg.Client,
  target: pg.PoolClient | pg.Client,
  from: Placement,
  to: Placement,
  table: string,
  tenantId: string,
  opts: { truncate?: boolean; every?: number; onRows?: (rows: number) => void } = {},
): Promise<number> {
  if (!UUID.test(tenantId)) throw new Error('bad tenant id');
  const src = `${ident(from.schema)}.${ident(table)}`;
  const dst = `${ident(to.schema)}.${ident(table)}`;
  if (opts.truncate !== false) await target.query(`TRUNCATE ${dst}`);
  const out = source.query(
    copyTo(`COPY (SELECT * FROM ${src} WHERE tenant_id = ${literal(tenantId)}) TO STDOUT (FORMAT binary)`),
  );
  const inp = target.query(copyFrom(`COPY ${dst} FROM STDIN (FORMAT binary)`));
  await pipeline(out, new BinaryRowCounter(opts.every ?? 0, opts.onRows), inp);
  return Number(inp.rowCount ?? 0);
}

export interface CopyHooks {
  /** Rows copied so far into `table`; `done` once the table is complete. Called every `every` rows. */
  onRows: (table: string, rows: number, done: boolean) => void | Promise<void>;
  every?: number;
  /** A named point inside the step (fault injection in crash tests). */
  fault?: (point: string) => Promise<void>;
}

/**
 * Creates the slot over a replication connection with an exported snapshot, and copies every
 * table in that very snapshot: the slot then streams exactly the changes the copy does not hold,
 * with no overlap (so constraints hold while replaying) and no gap. A rerun (after a crash during
 * the copy) drops the slot and starts both again. The target is written in replica mode: past its
 * own freeze (it is frozen until the cutover), without firing triggers row by row.
 */
export async function createSlotAndCopy(
  adminUrl: string,
  source: pg.Client,
  target: pg.Client,
  from: Placement,
  to: Placement,
  tenantId: string,
  names: { slot: string; publication: string },
  hooks: CopyHooks,
): Promise<{ copyMs: number }> {
  await source.query(
    `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`,
    [names.slot],
  );
  await ensurePromotionMeta(target);
  await clearPromotionMeta(target, names.slot);
  await target.query('SET session_replication_role = replica');
  const repl = await replicationClient(adminUrl);
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
      for (const [i, table] of tables.entries()) {
        const n = await copyTable(source, target, from, to, table, tenantId, {
          every: hooks.every ?? 50_000,
          onRows: (rows) => void hooks.onRows(table, rows, false),
        });
        await hooks.onRows(table, n, true);
        if (i === 0) await hooks.fault?.('copy:after-first-table');
      }
      await source.query('COMMIT');
      return { copyMs: Math.round(performance.now() - t0) };
    } catch (e) {
      await source.query('ROLLBACK').catch(() => undefined);
      throw e;
    }
  } finally {
    await repl.end().catch(() => undefined);
  }
}

/** Fresh copies have no visibility map yet: vacuum them so the in-freeze lookups are index-only. */
export async function vacuumTables(db: Queryable, schema: string): Promise<void> {
  for (const t of await tablesOf(db, schema)) await db.query(`VACUUM (ANALYZE) ${ident(schema)}.${ident(t)}`);
}
