import fs from 'node:fs';
import type { Logger } from 'pino';
import { StartRefused } from '../config.js';
import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import type { Queryable } from '../domain/queryable.js';
import { open, seal, wrappedKeyAad } from './keystore.js';
import {
  isKeyOf,
  keyMismatch,
  newKeyCheck,
  ROOT_KEY_ACTOR,
  type RootKey,
  type RootKeyRow,
  rootKeyRows,
  verifyRootKey,
} from './root-key.js';

/**
 * Re-wraps the local key store under a new root key: every data key is unwrapped with the old root
 * key and wrapped with the new one. Secrets are encrypted under the data keys, which do not change, so
 * they are not touched. Resumable: the new key is recorded first (`root_keys`, state `next`), and each
 * batch re-wraps its data keys and records it on their rows (`root_key_id`) in one transaction, so a run
 * killed at any point is finished by running it again with the same two keys. The last transaction
 * makes the new key current and retires the old one: from then on nothing opens under the old key, and
 * no process holding it starts (or writes a data key, should one still run).
 *
 * The caller holds the root-key lock exclusively (no process runs: local/root-key.ts).
 */

export interface RewrapOptions {
  /** Data keys per transaction. */
  batchSize: number;
  log: Logger;
  /** Crash tests only: a file naming `rekey:batch`, where the re-wrap waits after each batch until killed. */
  faultHoldFile?: string;
}

export interface RewrapResult {
  /** `rewrapped`: this run finished it; `already-current`: the new key was current before this run. */
  status: 'rewrapped' | 'already-current';
  rootKeyId: string;
  retiredRootKeyId: string | null;
  /** Data keys re-wrapped under the new key, by this run and any it resumed. */
  dataKeys: number;
}

export async function rewrapStore(
  db: Db,
  oldKey: RootKey,
  newKey: RootKey,
  opts: RewrapOptions,
): Promise<RewrapResult> {
  if (oldKey.key.equals(newKey.key)) {
    throw new StartRefused(`the new root key (${newKey.source}) is the key in use (${oldKey.source})`);
  }
  let rows = await rootKeyRows(db);
  // A store from before key checks: record the old key's, as a start would.
  if (!rows.some((r) => r.state === 'current')) {
    await verifyRootKey(db, oldKey);
    rows = await rootKeyRows(db);
  }
  const current = rows.find((r) => r.state === 'current') as RootKeyRow;
  let next = rows.find((r) => r.state === 'next');
  if (!next && isKeyOf(newKey.key, current)) {
    return { status: 'already-current', rootKeyId: current.id, retiredRootKeyId: null, dataKeys: 0 };
  }
  if (!isKeyOf(oldKey.key, current)) throw keyMismatch(oldKey.source, current);
  if (next && !isKeyOf(newKey.key, next)) {
    throw new StartRefused(
      `an unfinished re-wrap is moving the store to another root key (${next.id}, started ${next.created_at.toISOString()}): ` +
        'run the re-wrap again with that key, the one it was started with',
    );
  }
  if (!next) {
    const { id, keyCheck } = newKeyCheck(newKey.key);
    await db.tx(async (q) => {
      await q.query(`INSERT INTO root_keys (id, state, key_check) VALUES ($1, 'next', $2)`, [id, keyCheck]);
      await appendAudit(q, {
        actor: ROOT_KEY_ACTOR,
        action: 'root-key.rewrap-started',
        details: { rootKeyId: id, from: current.id },
      });
    });
    next = (await rootKeyRows(db)).find((r) => r.state === 'next') as RootKeyRow;
    opts.log.info({ rootKeyId: id, from: current.id }, 're-wrap started');
  } else {
    opts.log.info({ rootKeyId: next.id, rewrapped: next.rewrapped }, 're-wrap resumed');
  }
  const target = next.id;
  for (;;) {
    while ((await rewrapBatch(db, oldKey.key, newKey.key, target, current.id, opts.batchSize)) > 0) {
      await holdIfNamed(opts.faultHoldFile, 'rekey:batch', opts.log);
    }
    const total = await finish(db, target, current.id);
    if (total !== null) {
      opts.log.info({ rootKeyId: target, retired: current.id, dataKeys: total }, 're-wrap finished');
      return { status: 'rewrapped', rootKeyId: target, retiredRootKeyId: current.id, dataKeys: total };
    }
    // A data key was written under the old key since the last batch (a process whose lock session
    // dropped): one more pass.
  }
}

/** Re-wraps up to `limit` data keys not yet under `target`, in one transaction; returns how many. */
async function rewrapBatch(
  db: Db,
  oldKey: Buffer,
  newKey: Buffer,
  target: string,
  from: string,
  limit: number,
): Promise<number> {
  return db.tx(async (q) => {
    const { rows } = await q.query<{ key_id: string; wrapped_key: Buffer }>(
      `SELECT key_id, wrapped_key FROM local_keys
        WHERE wrapped_key IS NOT NULL AND root_key_id IS DISTINCT FROM $1
        ORDER BY key_id LIMIT $2 FOR UPDATE`,
      [target, limit],
    );
    for (const r of rows) {
      let material: Buffer;
      try {
        material = open(oldKey, r.wrapped_key, wrappedKeyAad(r.key_id));
      } catch {
        throw new Error(
          `data key ${r.key_id} does not open with the old root key: the store is not wholly under it; nothing of this batch was changed`,
        );
      }
      await q.query('UPDATE local_keys SET wrapped_key = $2, root_key_id = $3 WHERE key_id = $1', [
        r.key_id,
        seal(newKey, material, wrappedKeyAad(r.key_id)),
        target,
      ]);
    }
    if (rows.length > 0) {
      await q.query('UPDATE root_keys SET rewrapped = rewrapped + $2 WHERE id = $1', [target, rows.length]);
      await appendAudit(q, {
        actor: ROOT_KEY_ACTOR,
        action: 'root-key.rewrap-batch',
        details: { rootKeyId: target, from, dataKeys: rows.length },
      });
    }
    return rows.length;
  });
}

/**
 * Makes `target` current and retires `from`, when no data key is left under `from`; null otherwise.
 * The table lock holds off a data key written meanwhile (it waits, then finds `from` retired and writes
 * nothing: keystore.ts).
 */
async function finish(db: Db, target: string, from: string): Promise<number | null> {
  return db.tx(async (q: Queryable) => {
    await q.query('LOCK TABLE local_keys IN SHARE ROW EXCLUSIVE MODE');
    const { rows } = await q.query<{ left: number }>(
      `SELECT count(*)::int AS left FROM local_keys WHERE wrapped_key IS NOT NULL AND root_key_id IS DISTINCT FROM $1`,
      [target],
    );
    if ((rows[0]?.left ?? 0) > 0) return null;
    await q.query(
      `UPDATE root_keys SET state = 'retired', retired_at = now() WHERE id = $1 AND state = 'current'`,
      [from],
    );
    const { rows: done } = await q.query<{ rewrapped: number }>(
      `UPDATE root_keys SET state = 'current' WHERE id = $1 AND state = 'next' RETURNING rewrapped`,
      [target],
    );
    const total = done[0]?.rewrapped ?? 0;
    await appendAudit(q, {
      actor: ROOT_KEY_ACTOR,
      action: 'root-key.rewrapped',
      details: { rootKeyId: target, retired: from, dataKeys: total },
    });
    return total;
  });
}

/** Crash tests: waits while `file` names `point`, so a test's kill -9 lands there. */
async function holdIfNamed(file: string | undefined, point: string, log: Logger): Promise<void> {
  if (!file) return;
  const named = () => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : '');
  if (named() !== point) return;
  log.warn({ point }, 'held at a fault point (crash tests only)');
  while (named() === point) await new Promise((r) => setTimeout(r, 20));
}
