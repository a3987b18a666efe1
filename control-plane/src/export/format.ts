import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import zlib from 'node:zlib';

/**
 * The tenant archive format, version 1 (docs/lifecycle.md, "Export format"): one gzip stream of frames.
 * No archive library is a dependency of the project (`tar` is only a transitive one), and a tar entry
 * needs its size before its bytes, which a COPY stream does not know; frames stream without it.
 *
 * A frame is a 1-byte kind, a 4-byte big-endian length and that many bytes:
 *   `H` header (JSON: format, version, exportId, tenant, schemaVersion, createdAt)
 *   then for each table, parents before children:
 *     `T` table start (JSON: name, columns)
 *     `D` data: the table's rows as PostgreSQL COPY text, without tenant_id, in primary-key order,
 *        cut anywhere (at most 1 MiB per frame)
 *     `E` table end (JSON: name, rows, bytes, sha256 of the table's D bytes)
 *   `M` manifest (JSON: the header's fields and every table's name, columns, rows, bytes, sha256)
 * and nothing after the manifest. A reader checks every table's digest and count against both its
 * `E` frame and the manifest, so a flipped bit, a truncated file or a swapped table is refused.
 */
export const ARCHIVE_FORMAT = 'tenantry-export';
export const ARCHIVE_VERSION = 1;
/** The largest frame a reader accepts: a damaged length cannot make it allocate gigabytes. */
export const MAX_FRAME = 16 * 1024 * 1024;
/** Data frames are cut at this size. */
export const DATA_FRAME = 1024 * 1024;

export type FrameKind = 'H' | 'T' | 'D' | 'E' | 'M';
const KINDS = new Set(['H', 'T', 'D', 'E', 'M']);

export interface TableManifest {
  name: string;
  /** The exported columns, in order (every column but tenant_id). */
  columns: string[];
  rows: number;
  bytes: number;
  sha256: string;
}

export interface ArchiveHeader {
  format: typeof ARCHIVE_FORMAT;
  version: typeof ARCHIVE_VERSION;
  exportId: string;
  tenant: { id: string; slug: string; tier: string };
  /** The tenant schema template version the rows are at. */
  schemaVersion: number;
  createdAt: string;
}

export interface Manifest extends ArchiveHeader {
  tables: TableManifest[];
}

/** A refused archive: damaged, truncated, or not what it says it is. */
export class ArchiveError extends Error {
  override name = 'ArchiveError';
}

/** JSON with every object's keys sorted: the same text for the same value, wherever it was stored. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

/**
 * The SHA-256 of a manifest's canonical JSON (keys sorted, so a copy stored as jsonb digests the same):
 * what binds a verified archive to its record and to its restore.
 */
export const manifestDigest = (m: Manifest): string =>
  createHash('sha256').update(canonical(m)).digest('hex');

/** Counts rows in COPY text: every row ends with a newline (a newline inside a value is escaped as \n). */
export function countNewlines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++;
  return n;
}

/**
 * Writes frames into a gzip file, respecting backpressure, and hashes the compressed bytes as they go
 * (the archive's own digest, for downloads). `finish` flushes and fsyncs before it resolves.
 */
export class FrameWriter {
  private readonly gzip = zlib.createGzip({ level: 1 });
  private readonly out: fs.WriteStream;
  private readonly fileHash = createHash('sha256');
  private written = 0;
  private readonly done: Promise<void>;

  constructor(readonly path: string) {
    this.out = fs.createWriteStream(path, { flags: 'w', mode: 0o600 });
    this.gzip.on('data', (c: Buffer) => {
      this.fileHash.update(c);
      this.written += c.length;
    });
    this.done = new Promise((resolve, reject) => {
      this.out.on('close', resolve);
      this.out.on('error', reject);
      this.gzip.on('error', reject);
    });
    this.gzip.pipe(this.out);
  }

  async frame(kind: FrameKind, payload: Buffer): Promise<void> {
    let at = 0;
    do {
      const part = payload.subarray(at, Math.min(payload.length, at + DATA_FRAME));
      const head = Buffer.alloc(5);
      head.write(kind, 0, 'latin1');
      head.writeUInt32BE(part.length, 1);
      await write(this.gzip, head);
      if (part.length > 0) await write(this.gzip, part);
      at += DATA_FRAME;
    } while (at < payload.length);
  }

  json(kind: FrameKind, value: unknown): Promise<void> {
    return this.frame(kind, Buffer.from(JSON.stringify(value)));
  }

  /** Ends the gzip stream, waits for the file to be on disk, and returns its size and digest. */
  async finish(): Promise<{ bytes: number; sha256: string }> {
    this.gzip.end();
    await this.done;
    const fd = await fs.promises.open(this.path, 'r+');
    try {
      await fd.sync();
    } finally {
      await fd.close();
    }
    return { bytes: this.written, sha256: this.fileHash.digest('hex') };
  }

  /** Abandons a half-written file. */
  async abort(): Promise<void> {
    this.gzip.destroy();
    this.out.destroy();
    await fs.promises.rm(this.path, { force: true });
  }
}

async function write(w: Writable, b: Buffer): Promise<void> {
  if (!w.write(b)) await once(w, 'drain');
}

export interface Frame {
  kind: FrameKind;
  payload: Buffer;
}

/** The frames of an archive file, in order, read as they are consumed (memory: one frame at a time). */
export async function* readFrames(path: string): AsyncGenerator<Frame> {
  let input: Readable;
  try {
    await fs.promises.access(path, fs.constants.R_OK);
    input = fs.createReadStream(path).pipe(zlib.createGunzip());
  } catch {
    throw new ArchiveError('the archive file is missing or unreadable');
  }
  // Chunks not yet parsed; each byte is copied about once on its way into a frame.
  const chunks: Buffer[] = [];
  let have = 0;
  const take = (n: number): Buffer => {
    const all = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, have);
    chunks.length = 0;
    const rest = all.subarray(n);
    if (rest.length > 0) chunks.push(rest);
    have = rest.length;
    return all.subarray(0, n);
  };
  let head: { kind: FrameKind; len: number } | null = null;
  try {
    for await (const chunk of input) {
      chunks.push(chunk as Buffer);
      have += (chunk as Buffer).length;
      for (;;) {
        if (!head) {
          if (have < 5) break;
          const h = take(5);
          const kind = h.toString('latin1', 0, 1);
          if (!KINDS.has(kind))
            throw new ArchiveError(`the archive is damaged: an unknown frame kind (0x${h[0]?.toString(16)})`);
          const len = h.readUInt32BE(1);
          if (len > MAX_FRAME) throw new ArchiveError(`the archive is damaged: a frame claims ${len} bytes`);
          head = { kind: kind as FrameKind, len };
        }
        if (have < head.len) break;
        const payload = take(head.len);
        const kind = head.kind;
        head = null;
        yield { kind, payload };
      }
    }
  } catch (e) {
    if (e instanceof ArchiveError) throw e;
    throw new ArchiveError(`the archive is damaged: ${(e as Error).message}`);
  } finally {
    input.destroy();
  }
  if (head || have > 0) throw new ArchiveError('the archive is damaged: it ends inside a frame');
}

export function parseJson<T>(f: Frame, what: string): T {
  try {
    return JSON.parse(f.payload.toString('utf8')) as T;
  } catch {
    throw new ArchiveError(`the archive is damaged: its ${what} is not JSON`);
  }
}

/**
 * Walks an archive frame by frame, checking its structure and every table's row count and SHA-256
 * against its end frame and the manifest, and hands each table's data frames to `onData` (a restore
 * streams them into COPY; a verification drops them). Throws ArchiveError on anything amiss, before
 * returning the manifest: a restore must treat its work as unconfirmed until this returns.
 */
export async function walkArchive(
  path: string,
  hooks: {
    onTable?: (t: { name: string; columns: string[] }) => Promise<void>;
    onData?: (chunk: Buffer) => Promise<void>;
    onTableEnd?: (t: TableManifest) => Promise<void>;
  } = {},
): Promise<{ manifest: Manifest; manifestSha256: string }> {
  let header: ArchiveHeader | null = null;
  let manifest: Manifest | null = null;
  const seen: TableManifest[] = [];
  let table: {
    name: string;
    columns: string[];
    hash: ReturnType<typeof createHash>;
    rows: number;
    bytes: number;
  } | null = null;
  for await (const f of readFrames(path)) {
    if (manifest) throw new ArchiveError('the archive is damaged: data after its manifest');
    if (!header) {
      if (f.kind !== 'H') throw new ArchiveError('not a Tenantry archive: it does not start with a header');
      header = parseJson<ArchiveHeader>(f, 'header');
      if (header.format !== ARCHIVE_FORMAT || header.version !== ARCHIVE_VERSION)
        throw new ArchiveError(`not a Tenantry archive of version ${ARCHIVE_VERSION}`);
      continue;
    }
    switch (f.kind) {
      case 'T': {
        if (table) throw new ArchiveError('the archive is damaged: a table starts inside another');
        const t = parseJson<{ name: string; columns: string[] }>(f, 'table header');
        table = { name: t.name, columns: t.columns, hash: createHash('sha256'), rows: 0, bytes: 0 };
        await hooks.onTable?.({ name: t.name, columns: t.columns });
        break;
      }
      case 'D':
        if (!table) throw new ArchiveError('the archive is damaged: data outside a table');
        table.hash.update(f.payload);
        table.rows += countNewlines(f.payload);
        table.bytes += f.payload.length;
        await hooks.onData?.(f.payload);
        break;
      case 'E': {
        if (!table) throw new ArchiveError('the archive is damaged: a table end without its start');
        const end = parseJson<TableManifest>(f, 'table end');
        const got: TableManifest = {
          name: table.name,
          columns: table.columns,
          rows: table.rows,
          bytes: table.bytes,
          sha256: table.hash.digest('hex'),
        };
        if (end.name !== got.name || end.rows !== got.rows || end.sha256 !== got.sha256)
          throw new ArchiveError(
            `the archive is damaged: table ${got.name} holds ${got.rows} rows with SHA-256 ${got.sha256}, its record says ${end.rows} rows with ${end.sha256}`,
          );
        seen.push(got);
        await hooks.onTableEnd?.(got);
        table = null;
        break;
      }
      case 'M':
        if (table) throw new ArchiveError('the archive is damaged: it ends inside a table');
        manifest = parseJson<Manifest>(f, 'manifest');
        break;
      default:
        throw new ArchiveError('the archive is damaged: a second header');
    }
  }
  if (!header || !manifest) throw new ArchiveError('the archive is damaged: it is truncated (no manifest)');
  const listed = manifest.tables ?? [];
  const mismatch =
    manifest.exportId !== header.exportId ||
    manifest.tenant?.id !== header.tenant.id ||
    manifest.schemaVersion !== header.schemaVersion ||
    listed.length !== seen.length ||
    listed.some(
      (t, i) =>
        t.name !== seen[i]?.name ||
        t.rows !== seen[i]?.rows ||
        t.sha256 !== seen[i]?.sha256 ||
        JSON.stringify(t.columns) !== JSON.stringify(seen[i]?.columns),
    );
  if (mismatch) throw new ArchiveError('the archive is damaged: its manifest does not match its tables');
  return { manifest, manifestSha256: manifestDigest(manifest) };
}
