import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import pg from 'pg';
import type { Logger } from 'pino';
import { parseRootKey, type RootKeySetting, StartRefused } from '../config.js';
import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import type { Queryable } from '../domain/queryable.js';
import { loadRootKey, open, seal, wrappedKeyAad } from './keystore.js';

/**
 * The local target's root key as configuration, and its check in the control database.
 *
 * Every process on one control database must hold the same root key: the data keys are wrapped with
 * it. At start a process opens the database's key check (a constant sealed under the current root
 * key, `root_keys`); the first process to start records it. A process whose key cannot open it
 * refuses to start, naming the setting and what to copy, never with a bare crypto error.
 */

const KEY_CHECK = Buffer.from('tenantry root key check v1');
const checkAad = (id: string) => `root-key-check:${id}`;

/** Who records a key check or re-wraps the store, in the audit log. */
export const ROOT_KEY_ACTOR = { id: null, name: 'tenantry-root-key', role: 'system' };

export interface RootKey {
  key: Buffer;
  /** Where it came from, for messages: names the setting, never the key. */
  source: string;
  /** The setting it came from (for the audit log); absent for a key given on a command line. */
  setting?: RootKeySetting['from'];
}

/** Reads the configured root key; the data directory's is generated on the first start. */
export function readRootKey(setting: RootKeySetting): RootKey {
  if (setting.from === 'TENANTRY_ROOT_KEY') {
    const key = parseRootKey(setting.value());
    if (!key) throw new StartRefused('TENANTRY_ROOT_KEY must be a 256-bit key in base64');
    return { key, source: 'TENANTRY_ROOT_KEY', setting: setting.from };
  }
  if (setting.from === 'TENANTRY_DATA_DIR') {
    return {
      key: loadRootKey(setting.dataDir),
      setting: setting.from,
      source: `${setting.path} (the data directory's key: neither TENANTRY_ROOT_KEY_FILE nor TENANTRY_ROOT_KEY is set)`,
    };
  }
  const source = `TENANTRY_ROOT_KEY_FILE (${setting.path})`;
  return { key: readKeyFile(setting.path, source), source, setting: setting.from };
}

/** A key file: 32 bytes in base64. Never generated: a missing file is a mistake to report. */
export function readKeyFile(file: string, what = file): RootKey['key'] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new StartRefused(
      `cannot read the root key from ${what}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}. Copy the key file of a process that works there (docs/operations.md, "The root key")`,
    );
  }
  const key = parseRootKey(text);
  if (!key) {
    throw new StartRefused(
      `${what} does not hold a root key: it must hold 32 bytes in base64 (44 characters, as \`openssl rand -base64 32\` prints)`,
    );
  }
  return key;
}

/** Whether `key` opens `sealed` (sealed under it with `aad`). */
export function opens(key: Buffer, sealed: Buffer, aad: string): boolean {
  try {
    open(key, sealed, aad);
    return true;
  } catch {
    return false;
  }
}

export type RootKeyRow = {
  id: string;
  state: 'current' | 'next' | 'retired';
  key_check: Buffer;
  rewrapped: number;
  created_at: Date;
  retired_at: Date | null;
};

export async function rootKeyRows(q: Queryable): Promise<RootKeyRow[]> {
  const { rows } = await q.query<RootKeyRow>(
    'SELECT id, state, key_check, rewrapped, created_at, retired_at FROM root_keys ORDER BY created_at',
  );
  return rows;
}

/** Whether `key` is the root key of `row`. */
export const isKeyOf = (key: Buffer, row: Pick<RootKeyRow, 'id' | 'key_check'>): boolean =>
  opens(key, row.key_check, checkAad(row.id));

/** A new root key's row: its id and its check. */
export function newKeyCheck(key: Buffer): { id: string; keyCheck: Buffer } {
  const id = `rk_${randomBytes(8).toString('hex')}`;
  return { id, keyCheck: seal(key, KEY_CHECK, checkAad(id)) };
}

const day = (d: Date) => d.toISOString().slice(0, 10);

/** The start's refusal when the key is not the store's: names the setting and what to copy. */
export function keyMismatch(source: string, current: { id: string; created_at: Date } | null): StartRefused {
  const which = current
    ? `it cannot open the database's key check (root key ${current.id}, recorded ${day(current.created_at)})`
    : 'it cannot unwrap the data keys already in the database (they predate key checks)';
  return new StartRefused(
    `the root key does not match this control database: this process took its key from ${source}, and ${which}. ` +
      'Every Tenantry process on one control database must hold the same root key. Copy the root key file of a ' +
      'process that starts (its TENANTRY_ROOT_KEY_FILE, or <its data directory>/keys/root.key) to this machine ' +
      'and set TENANTRY_ROOT_KEY_FILE to the copy, or set TENANTRY_ROOT_KEY to its contents. ' +
      'See docs/operations.md, "The root key".',
  );
}

/**
 * Checks `rootKey` against the control database and returns its id in `root_keys`. The first start
 * records the key check (audited in the same transaction). Refuses when the key is not the store's,
 * was retired by a re-wrap, or while a re-wrap is unfinished.
 */
export async function verifyRootKey(db: Db, rootKey: RootKey): Promise<string> {
  return db.tx(async (q) => {
    // One first start records the check; concurrent ones wait here and then read it.
    await q.query(`SELECT pg_advisory_xact_lock(hashtext('tenantry.root-key-check'))`);
    const rows = await rootKeyRows(q);
    const next = rows.find((r) => r.state === 'next');
    if (next) {
      throw new StartRefused(
        `a re-wrap of the key store under a new root key (${next.id}) is unfinished: ${next.rewrapped} data keys re-wrapped so far. ` +
          'Finish it with `npm run rekey -- --new-key-file <the new key>` (it resumes), then start every process with the new key. ' +
          'See docs/operations.md, "Re-wrapping under a new root key".',
      );
    }
    const current = rows.find((r) => r.state === 'current') ?? null;
    if (current) {
      if (isKeyOf(rootKey.key, current)) return current.id;
      const retired = rows.find((r) => r.state === 'retired' && isKeyOf(rootKey.key, r));
      if (retired) {
        throw new StartRefused(
          `the root key from ${rootKey.source} was retired on ${day(retired.retired_at ?? retired.created_at)}: the store was re-wrapped under root key ${current.id}. ` +
            'Give this process the new key (copy it over the key it read, or set TENANTRY_ROOT_KEY_FILE or TENANTRY_ROOT_KEY); keep the old one only with the backups taken before the re-wrap. ' +
            'See docs/operations.md, "The root key".',
        );
      }
      throw keyMismatch(rootKey.source, current);
    }
    // No check yet: a new store, or one written before key checks. Its data keys must open.
    const { rows: wrapped } = await q.query<{ key_id: string; wrapped_key: Buffer }>(
      'SELECT key_id, wrapped_key FROM local_keys WHERE wrapped_key IS NOT NULL ORDER BY created_at LIMIT 1',
    );
    const first = wrapped[0];
    if (first && !opens(rootKey.key, first.wrapped_key, wrappedKeyAad(first.key_id))) {
      throw keyMismatch(rootKey.source, null);
    }
    const { id, keyCheck } = newKeyCheck(rootKey.key);
    await q.query(`INSERT INTO root_keys (id, state, key_check) VALUES ($1, 'current', $2)`, [id, keyCheck]);
    await appendAudit(q, {
      actor: ROOT_KEY_ACTOR,
      action: 'root-key.check-recorded',
      details: {
        rootKeyId: id,
        setting: rootKey.source.split(' ')[0],
        existingDataKeys: first !== undefined,
      },
    });
    return id;
  });
}

/*
 * Who may use the root key. Every process of the local target holds this advisory lock shared, on a
 * session of its own, for its whole life; a re-wrap takes it exclusively. So a re-wrap runs only
 * while no process runs, and no process starts while it runs. (Should a process lose its session,
 * the database still fences it: no data key is written under a root key that is no longer current.)
 */
const LOCK = [0x7445_4e54, 1] as const; // 'tENT', 1: the root-key lock of this control database

/** The number of processes that hold the root-key lock (shared), for the re-wrap's refusal. */
export async function rootKeyLockHolders(q: Queryable): Promise<number> {
  const { rows } = await q.query<{ n: number }>(
    `SELECT count(DISTINCT pid)::int AS n FROM pg_locks
      WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 2 AND granted`,
    [LOCK[0], LOCK[1]],
  );
  return rows[0]?.n ?? 0;
}

/** Takes the root-key lock exclusively on `client`; false when a process holds it. */
export async function tryLockRootKeyExclusive(client: Queryable): Promise<boolean> {
  const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [
    ...LOCK,
  ]);
  return rows[0]?.ok === true;
}

export interface RootKeyLease {
  close(): Promise<void>;
}

/**
 * Holds the root-key lock shared for this process's life (one session). Refuses the start while a
 * re-wrap holds it. A lost session is reopened and the lock taken again.
 */
export async function holdRootKeyLock(connectionString: string, log: Logger): Promise<RootKeyLease> {
  let closed = false;
  let client: pg.Client | undefined;
  let retry: NodeJS.Timeout | undefined;
  const take = async (): Promise<boolean> => {
    const c = new pg.Client({
      connectionString,
      application_name: 'tenantry-root-key-lock',
      keepAlive: true,
    });
    c.on('error', () => undefined);
    await c.connect();
    const { rows } = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock_shared($1, $2) AS ok', [
      ...LOCK,
    ]);
    if (rows[0]?.ok !== true || closed) {
      await c.end().catch(() => undefined);
      return false;
    }
    client = c;
    c.once('end', () => {
      if (closed) return;
      log.warn({}, 'root-key lock session lost; taking the lock again');
      client = undefined;
      again(1000);
    });
    return true;
  };
  const again = (ms: number) => {
    retry = setTimeout(() => {
      take().then(
        (ok) => {
          if (!ok && !closed) {
            log.error(
              {},
              'a re-wrap of the key store holds the root-key lock; restart this process with the new root key',
            );
            again(5000);
          }
        },
        () => again(Math.min(ms * 2, 10_000)),
      );
    }, ms);
    retry.unref();
  };
  if (!(await take())) {
    throw new StartRefused(
      'a re-wrap of the key store under a new root key is running against this control database (it holds the root-key lock). ' +
        'Let it finish, then start every process with the new key. See docs/operations.md, "Re-wrapping under a new root key".',
    );
  }
  return {
    async close() {
      closed = true;
      clearTimeout(retry);
      await client?.end().catch(() => undefined);
    },
  };
}
