import { Transform } from 'node:stream';
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
  /**
   * A shared placement's row-level security context: every session on it sets this tenant, so an
   * admin that does not bypass RLS (an RDS master user) sees and writes the tenant's rows.
   */
  context?: { setting: string; tenantId: string };
  /** The login roles that can write the placement (whose older transactions a freeze waits for). */
  writers: string[];
  /** The role owning the freeze guard; unset: the schema's owner. */
  owner?: string;
  /**
   * The server holding the placement when it is not the source's cluster (an RDS instance on the
   * aws target): admin URLs of its databases. Unset: the promotion's data plane.
   */
  server?: { urlFor(database: string): string };
  /**
   * Roles, grants and routing of the placement belong to someone else (the tenant's Pulumi stack
   * on the aws target): the promotion moves rows and freezes, nothing more.
   */
  managed?: boolean;
}

export function placementOf(dp: DataPlane, slug: string, tier: Tier): Placement {
  const name = tenantObjectName(slug);
  const owner = dp.names.ownerRole;
  switch (tier) {
    case 'pool':
      return {
        tier,
        database: dp.names.database,
        schema: dp.names.poolSchema,
        shared: true,
        writers: [dp.names.poolRole],
        owner,
      };
    case 'bridge':
      return { tier, database: dp.names.database, schema: name, shared: false, writers: [name], owner };
    case 'silo':
      return { tier, database: name, schema: dp.names.siloSchema, shared: false, writers: [name], owner };
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

/** A replication-protocol connection (slot creation with an exported snapshot). */
async function replicationClient(adminUrl: string): Promise<pg.Client> {
  const repl = new pg.Client({ connectionString: adminUrl, replication: 'database' } as pg.ClientConfig);
  repl.on('error', () => {});
  await repl.connect();
  return repl;
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

export function lagExceeded(slot: string, bytes: number, max: number): TenantryError {
  return new TenantryError(
    'PROVIDER_FAILED',
    `replication lag: slot ${slot} retains ${bytes} bytes of WAL, past the ${max}-byte limit; promotion aborted so the shared database's WAL is not held hostage`,
    { context: { retainedWalBytes: bytes, maxLagBytes: max } },
  );
}

/**
 * Watches the WAL a slot retains while a long step runs (copy, index builds, catch-up, the full
 * verification): past the limit it records the breach, runs `onBreach` (which cancels the step's
 * statements), and `check()` then throws.
 */
export class LagWatch {
  private timer: NodeJS.Timeout | undefined;
  private breach: TenantryError | null = null;
  /** The measurement in flight, if any. */
  private inflight: Promise<void> | null = null;

  constructor(
    private readonly slot: string,
    private readonly max: number,
    private readonly probe: () => Promise<number | null>,
    private readonly onSample: (bytes: number | null) => Promise<void>,
    private readonly onBreach: () => Promise<void>,
  ) {}

  start(intervalMs: number): this {
    // A breach is raised by check() in the step itself; the timer only records it, and skips a
    // tick while a measurement is still in flight.
    this.timer = setInterval(() => {
      if (!this.inflight) void this.measure().catch(() => undefined);
    }, intervalMs);
    this.timer.unref();
    return this;
  }

  /**
   * One measurement taken after this call started; throws if the limit is passed. A measurement
   * already in flight may have read the slot before the caller's last write, so it is waited for
   * and a fresh one taken: the step's closing check never reuses a stale reading.
   */
  async sample(): Promise<void> {
    while (this.inflight) await this.inflight.catch(() => undefined);
    await this.measure();
    this.check();
  }

  private measure(): Promise<void> {
    if (this.breach) return Promise.resolve();
    const run = (async () => {
      const bytes = await this.probe().catch(() => null);
      await this.onSample(bytes).catch(() => undefined);
      if (bytes !== null && bytes > this.max) {
        this.breach = lagExceeded(this.slot, bytes, this.max);
        await this.onBreach().catch(() => undefined);
      }
    })().finally(() => {
      if (this.inflight === run) this.inflight = null;
    });
    this.inflight = run;
    return run;
  }

  check(): void {
    if (this.breach) throw this.breach;
  }

  stop(): void {
    clearInterval(this.timer);
  }
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
