import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { TenantryError } from '../domain/errors.js';
import type { Queryable } from '../domain/queryable.js';
import {
  ARCHIVE_FORMAT,
  ARCHIVE_VERSION,
  ArchiveError,
  type ArchiveHeader,
  countNewlines,
  FrameWriter,
  type Manifest,
  manifestDigest,
  parseJson,
  readFrames,
  type TableManifest,
  walkArchive,
} from './format.js';

/**
 * A tenant's tables to and from one archive (export/format.ts), whatever its tier. Everything streams:
 * COPY out of Postgres into gzip frames on disk, and back from the frames into COPY, so memory stays
 * flat whatever the tenant's size (scripts/bench/export.ts measures it).
 *
 * Rows are exported without tenant_id, in primary-key order, as COPY text under fixed output settings:
 * the same rows give the same bytes on every tier, so a table's SHA-256 in the manifest is what a
 * restore into any tier is checked against. The tenant's id is put back on each row as it is loaded.
 */

/** Where the tenant's tables are and how to reach only its rows (promotion/placement.ts's shape). */
export interface ArchivePlacement {
  schema: string;
  /** Pool tables are shared: every statement filters on tenant_id. */
  shared: boolean;
  /** A shared placement's row-level security setting (for an admin that does not bypass RLS). */
  tenantSetting?: string;
}

/** The output settings that make COPY text the same on every server and session. */
const STABLE_OUTPUT = [
  "SET LOCAL TimeZone = 'UTC'",
  "SET LOCAL DateStyle = 'ISO, YMD'",
  "SET LOCAL IntervalStyle = 'postgres'",
  'SET LOCAL extra_float_digits = 1',
  "SET LOCAL bytea_output = 'hex'",
];

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const quote = (id: string) => `"${id.replaceAll('"', '""')}"`;

/** A COPY-capable session: the data plane hands out pg clients behind `Queryable`. */
function client(db: Queryable): pg.ClientBase {
  const c = db as unknown as pg.ClientBase;
  if (typeof (c as { connection?: unknown }).connection !== 'object')
    throw new Error('an archive needs a dedicated Postgres session (a pg client)');
  return c;
}

interface TableShape {
  name: string;
  /** Every column but tenant_id, in column order. */
  columns: string[];
  /** The ORDER BY list: the primary key without tenant_id (text columns in the C collation). */
  order: string[];
}

/**
 * The schema's tables with their columns and key order, parents before the tables that reference them
 * (so a restore satisfies its foreign keys table by table).
 */
export async function tableShapes(db: Queryable, schema: string): Promise<TableShape[]> {
  const { rows } = await db.query<{
    name: string;
    columns: string[];
    pk: { name: string; collatable: boolean }[] | null;
    refs: string[];
  }>(
    `SELECT c.relname AS name,
            array(SELECT a.attname::text FROM pg_attribute a
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                     AND a.attname <> 'tenant_id' ORDER BY a.attnum) AS columns,
            (SELECT jsonb_agg(jsonb_build_object('name', a.attname, 'collatable', a.attcollation <> 0) ORDER BY k.ord)
               FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
              WHERE i.indrelid = c.oid AND i.indisprimary AND a.attname <> 'tenant_id') AS pk,
            array(SELECT DISTINCT r.relname::text FROM pg_constraint f JOIN pg_class r ON r.oid = f.confrelid
                   WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid) AS refs
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      ORDER BY c.relname`,
    [schema],
  );
  const byName = new Map(rows.map((r) => [r.name, r]));
  const ordered: TableShape[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string) => {
    if (state.get(name) === 'done' || state.get(name) === 'visiting') return;
    const r = byName.get(name);
    if (!r) return;
    state.set(name, 'visiting');
    for (const ref of [...r.refs].sort()) visit(ref);
    state.set(name, 'done');
    const pk = r.pk ?? [];
    ordered.push({
      name: r.name,
      columns: r.columns,
      // Without a primary key, the whole row's text orders it (any total order will do: it only has to repeat).
      order:
        pk.length > 0
          ? pk.map((k) => (k.collatable ? `${quote(k.name)} COLLATE "C"` : quote(k.name)))
          : [`t::text COLLATE "C"`],
    });
  };
  for (const r of rows) visit(r.name);
  return ordered;
}

/** The statement that reads one tenant's rows of a table, as exported. */
function selectRows(p: ArchivePlacement, t: TableShape, tenantId: string): string {
  if (!UUID.test(tenantId)) throw new Error('bad tenant id');
  const cols = t.columns.length > 0 ? t.columns.map(quote).join(', ') : '';
  const where = p.shared ? ` WHERE t.tenant_id = '${tenantId}'::uuid` : '';
  return `SELECT ${cols} FROM ${quote(p.schema)}.${quote(t.name)} t${where} ORDER BY ${t.order.join(', ')}`;
}

/** Opens the consistent, read-only snapshot every table of one export (or one verification) is read in. */
async function beginSnapshot(c: pg.ClientBase, p: ArchivePlacement, tenantId: string): Promise<void> {
  await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  for (const s of STABLE_OUTPUT) await c.query(s);
  if (p.shared && p.tenantSetting)
    await c.query('SELECT set_config($1, $2, true)', [p.tenantSetting, tenantId]);
}

/** Streams one table's rows out of Postgres, chunk by chunk, with their digest and row count. */
async function copyOut(
  c: pg.ClientBase,
  sql: string,
  onChunk: (b: Buffer) => Promise<void>,
): Promise<{ rows: number; bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let rows = 0;
  let bytes = 0;
  const stream = c.query(copyTo(`COPY (${sql}) TO STDOUT`)) as unknown as Readable;
  for await (const chunk of stream) {
    const b = chunk as Buffer;
    hash.update(b);
    rows += countNewlines(b);
    bytes += b.length;
    await onChunk(b);
  }
  return { rows, bytes, sha256: hash.digest('hex') };
}

export interface ArchiveWritten {
  manifest: Manifest;
  manifestSha256: string;
  /** The archive file's size and SHA-256 (gzip bytes). */
  bytes: number;
  sha256: string;
}

/**
 * Writes the tenant's rows of every table of the placement's schema to `file`. Idempotent: an archive
 * already complete at `file` (a run before a crash) is read back instead of written again; a partial one
 * is written anew (`<file>.partial`, renamed once it is on disk).
 */
export async function writeArchive(
  db: Queryable,
  p: ArchivePlacement,
  file: string,
  header: Omit<ArchiveHeader, 'format' | 'version' | 'createdAt'>,
): Promise<ArchiveWritten> {
  const done = await readArchiveResult(file);
  if (done) return done;
  await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const partial = `${file}.partial`;
  const w = new FrameWriter(partial);
  const c = client(db);
  try {
    await beginSnapshot(c, p, header.tenant.id);
    const head: ArchiveHeader = {
      format: ARCHIVE_FORMAT,
      version: ARCHIVE_VERSION,
      ...header,
      createdAt: new Date().toISOString(),
    };
    await w.json('H', head);
    const tables: TableManifest[] = [];
    for (const t of await tableShapes(c, p.schema)) {
      await w.json('T', { name: t.name, columns: t.columns });
      const got = await copyOut(c, selectRows(p, t, header.tenant.id), (b) => w.frame('D', b));
      const entry: TableManifest = { name: t.name, columns: t.columns, ...got };
      await w.json('E', entry);
      tables.push(entry);
    }
    await c.query('COMMIT');
    const manifest: Manifest = { ...head, tables };
    await w.json('M', manifest);
    const file_ = await w.finish();
    await fs.promises.rename(partial, file);
    return { manifest, manifestSha256: manifestDigest(manifest), ...file_ };
  } catch (e) {
    await c.query('ROLLBACK').catch(() => undefined);
    await w.abort().catch(() => undefined);
    throw e;
  }
}

/** A complete archive's manifest and file digest, or null when `file` is missing or not complete. */
async function readArchiveResult(file: string): Promise<ArchiveWritten | null> {
  if (!fs.existsSync(file)) return null;
  try {
    const { manifest, manifestSha256 } = await walkArchive(file);
    const { bytes, sha256 } = await fileDigest(file);
    return { manifest, manifestSha256, bytes, sha256 };
  } catch (e) {
    if (!(e instanceof ArchiveError)) throw e;
    await fs.promises.rm(file, { force: true });
    return null;
  }
}

/** A file's size and SHA-256, streamed. */
export async function fileDigest(file: string): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of fs.createReadStream(file)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** Checks an archive end to end (every digest, count and the manifest) without loading it anywhere. */
export function verifyArchive(file: string): Promise<{ manifest: Manifest; manifestSha256: string }> {
  return walkArchive(file);
}

/** Reads only the manifest of an archive, the last frame (no digest is checked: use verifyArchive). */
export async function readManifest(file: string): Promise<Manifest> {
  let manifest: Manifest | null = null;
  for await (const f of readFrames(file)) if (f.kind === 'M') manifest = parseJson<Manifest>(f, 'manifest');
  if (!manifest) throw new ArchiveError('the archive is damaged: it is truncated (no manifest)');
  return manifest;
}

/**
 * Loads an archive's rows into the placement for `tenantId`, in one transaction, in one pass over the
 * archive: every table is streamed from its frames into COPY, each row given the tenant's id, and the
 * transaction commits only once the whole archive checked out (its digests, counts and manifest, that
 * manifest the one verified when the restore was accepted, every table of the placement in it).
 * Idempotent: a placement that already holds rows of the tenant is compared with the manifest (a run
 * before a crash loaded it: left alone) or refused.
 */
export async function restoreArchive(
  db: Queryable,
  p: ArchivePlacement,
  file: string,
  tenantId: string,
  expectedManifestSha256: string,
): Promise<{ manifest: Manifest; skipped: boolean }> {
  if (!UUID.test(tenantId)) throw new Error('bad tenant id');
  const c = client(db);
  const shapes = new Map((await tableShapes(c, p.schema)).map((t) => [t.name, t.columns]));
  const expected = (m: Manifest) => {
    if (manifestDigest(m) !== expectedManifestSha256)
      throw new ArchiveError('the archive changed since its restore was accepted: its manifest differs');
  };
  const counts = await rowCounts(c, p, tenantId, [...shapes.keys()]);
  if ([...counts.values()].some((n) => n > 0)) {
    const { manifest } = await walkArchive(file);
    expected(manifest);
    if (manifest.tables.every((t) => counts.get(t.name) === t.rows)) return { manifest, skipped: true };
    throw new ArchiveError("the placement already holds rows of this tenant that are not the archive's");
  }
  let sink: (Writable & { done: Promise<void> }) | null = null;
  await c.query('BEGIN');
  try {
    if (p.shared && p.tenantSetting)
      await c.query('SELECT set_config($1, $2, true)', [p.tenantSetting, tenantId]);
    const prefix = Buffer.from(`${tenantId}\t`);
    let atLineStart = true;
    const { manifest } = await walkArchive(file, {
      onTable: async (t) => {
        const cols = shapes.get(t.name);
        if (!cols)
          throw new ArchiveError(
            `the archive does not fit this placement: table ${t.name} does not exist here`,
          );
        if ([...cols].sort().join(',') !== [...t.columns].sort().join(','))
          throw new ArchiveError(
            `the archive does not fit this placement: table ${t.name} has columns (${cols.join(', ')}), the archive (${t.columns.join(', ')})`,
          );
        const list = ['tenant_id', ...t.columns].map(quote).join(', ');
        const stream = c.query(
          copyFrom(`COPY ${quote(p.schema)}.${quote(t.name)} (${list}) FROM STDIN`),
        ) as unknown as Writable;
        const done = new Promise<void>((resolve, reject) => {
          stream.on('finish', resolve);
          stream.on('error', reject);
        });
        done.catch(() => undefined); // awaited at the table's end, or its failure ends the walk
        sink = Object.assign(stream, { done });
        atLineStart = true;
      },
      onData: async (chunk) => {
        if (!sink) throw new ArchiveError('the archive is damaged: data outside a table');
        // Every row starts after a newline: the tenant's id goes in front of it (one copy per chunk).
        const starts =
          countNewlines(chunk) + (atLineStart ? 1 : 0) - (chunk[chunk.length - 1] === 10 ? 1 : 0);
        const out = Buffer.allocUnsafe(chunk.length + starts * prefix.length);
        let o = 0;
        let from = 0;
        while (from < chunk.length) {
          if (atLineStart) o += prefix.copy(out, o);
          const nl = chunk.indexOf(10, from);
          const to = nl === -1 ? chunk.length : nl + 1;
          o += chunk.copy(out, o, from, to);
          atLineStart = nl !== -1;
          from = to;
        }
        // A COPY that failed (a constraint, the connection) never drains: its failure ends the wait.
        if (o > 0 && !sink.write(out.subarray(0, o))) await Promise.race([once(sink, 'drain'), sink.done]);
      },
      onTableEnd: async () => {
        const s = sink as (Writable & { done: Promise<void> }) | null;
        if (!s) return;
        s.end();
        await s.done;
        sink = null;
      },
    });
    expected(manifest);
    const missing = [...shapes.keys()].filter((name) => !manifest.tables.some((t) => t.name === name));
    if (missing.length > 0)
      throw new ArchiveError(
        `the archive does not fit this placement: it has no table ${missing.join(', ')}`,
      );
    await c.query('COMMIT');
    return { manifest, skipped: false };
  } catch (e) {
    // A COPY still open (the archive failed its checks halfway) is failed first, then the rest rolls back.
    const open = sink as (Writable & { done: Promise<void> }) | null;
    if (open) {
      open.destroy(e instanceof Error ? e : new Error(String(e)));
      await open.done.catch(() => undefined);
    }
    await c.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

async function rowCounts(
  c: pg.ClientBase,
  p: ArchivePlacement,
  tenantId: string,
  tables: string[],
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await c.query('BEGIN READ ONLY');
  try {
    if (p.shared && p.tenantSetting)
      await c.query('SELECT set_config($1, $2, true)', [p.tenantSetting, tenantId]);
    for (const t of tables) {
      const where = p.shared ? ` WHERE tenant_id = '${tenantId}'::uuid` : '';
      const { rows } = await c.query<{ n: string }>(
        `SELECT count(*) AS n FROM ${quote(p.schema)}.${quote(t)}${where}`,
      );
      out.set(t, Number(rows[0]?.n ?? 0));
    }
  } finally {
    await c.query('COMMIT').catch(() => undefined);
  }
  return out;
}

/**
 * The tenant's rows of each table as an export would write them (count and SHA-256), read in one
 * snapshot: what a restore is compared with its manifest by, and what a test compares two tiers by.
 */
export async function tableDigests(
  db: Queryable,
  p: ArchivePlacement,
  tenantId: string,
): Promise<TableManifest[]> {
  const c = client(db);
  await beginSnapshot(c, p, tenantId);
  try {
    const out: TableManifest[] = [];
    for (const t of await tableShapes(c, p.schema)) {
      const got = await copyOut(c, selectRows(p, t, tenantId), async () => {});
      out.push({ name: t.name, columns: t.columns, ...got });
    }
    return out;
  } finally {
    await c.query('COMMIT').catch(() => undefined);
  }
}

/** Compares a placement's digests with a manifest's tables: the differences, or an empty list. */
export function digestDifferences(m: Manifest, got: TableManifest[]): string[] {
  const diffs: string[] = [];
  for (const t of m.tables) {
    const g = got.find((x) => x.name === t.name);
    if (!g) diffs.push(`${t.name}: missing`);
    else if (g.rows !== t.rows || g.sha256 !== t.sha256)
      diffs.push(
        `${t.name}: ${g.rows} rows (${g.sha256.slice(0, 12)}…), the manifest ${t.rows} (${t.sha256.slice(0, 12)}…)`,
      );
  }
  for (const g of got)
    if (!m.tables.some((t) => t.name === g.name)) diffs.push(`${g.name}: not in the manifest`);
  return diffs;
}

/**
 * A restore step's outcome, on either target: a damaged archive (ArchiveError) fails the step with
 * PROVIDER_FAILED and its message; otherwise the step reports the export restored, its rows, and
 * whether they were found already loaded (a re-run).
 */
export async function restoreOutcome(
  restore: Promise<{ manifest: Manifest; skipped: boolean }>,
  exportId: string,
): Promise<{ restored: { exportId: string; rows: number; skipped: boolean } }> {
  const out = await restore.catch((e: unknown) => {
    throw e instanceof ArchiveError ? new TenantryError('PROVIDER_FAILED', e.message) : e;
  });
  return {
    restored: { exportId, rows: out.manifest.tables.reduce((n, x) => n + x.rows, 0), skipped: out.skipped },
  };
}
