import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRootKey } from '../../control-plane/src/config.js';
import { Db } from '../../control-plane/src/db/db.js';
import { LocalKeyStore, open, wrappedKeyAad } from '../../control-plane/src/local/keystore.js';
import {
  call,
  createFleet,
  type Fleet,
  type Proc,
  runToExit,
  spawnEntry,
  untilOperationsEnd,
  writeKeyFile,
} from '../helpers/fleet.js';
import { adminUrl, superQuery } from '../helpers/runtime.js';
import { isRunning, kill9, signal } from '../helpers/server.js';

/**
 * Re-wrapping the local key store under a new root key (`npm run rekey`), killed with -9 midway and
 * run again: every secret ends readable under the new key and none under the old one.
 */
let fleet: Fleet;
let proc: Proc;
let newKeyFile: string;
let holdFile: string;
const REKEY = ['control-plane/src/rekey.ts'];
const SERVER = ['control-plane/src/server.ts'];
const slugs: string[] = [];
const passwords = new Map<string, string>();

const keyOf = (file: string) => parseRootKey(fs.readFileSync(file, 'utf8')) as Buffer;
const rekeyEnv = (extra: Record<string, string> = {}) => ({
  DATABASE_URL: adminUrl(fleet.controlDb),
  TENANTRY_DATA_DIR: fleet.dir,
  TENANTRY_ROOT_KEY_FILE: fleet.keyFile,
  TENANTRY_FAULT_HOLD_FILE: holdFile,
  ...extra,
});
const REKEY_ARGS = () => [...REKEY, '--new-key-file', newKeyFile, '--batch-size', '2'];
const rekey = (extra: Record<string, string> = {}) => runToExit(REKEY_ARGS(), rekeyEnv(extra));

beforeAll(async () => {
  fleet = await createFleet('rekey');
  newKeyFile = writeKeyFile(path.join(fleet.dir, 'new.key'));
  holdFile = path.join(fleet.dir, 'hold');
  proc = await fleet.start();
  const ops: string[] = [];
  for (const [i, tier] of ['pool', 'bridge', 'pool', 'bridge', 'silo', 'pool'].entries()) {
    const slug = `${fleet.prefix}-${i}`;
    slugs.push(slug);
    const res = await call(proc.base, fleet.adminToken, '/v1/tenants', {
      method: 'POST',
      body: JSON.stringify({ slug, name: slug, tier }),
    });
    expect(res.status).toBe(202);
    ops.push(((await res.json()) as { operation: { id: string } }).operation.id);
  }
  expect((await untilOperationsEnd(fleet.controlDb, ops)).map((o) => o.status)).toEqual(
    ops.map(() => 'succeeded'),
  );
  for (const slug of slugs) {
    const d = (await (await call(proc.base, fleet.adminToken, `/v1/tenants/${slug}/connection`)).json()) as {
      password: string;
    };
    passwords.set(slug, d.password);
  }
});

afterAll(async () => {
  if (isRunning(proc?.proc)) await kill9(proc.proc);
  await fleet?.drop();
});

describe('npm run rekey', () => {
  it('refuses while a control-plane process runs, and changes nothing', async () => {
    const before = await superQuery(
      fleet.controlDb,
      'SELECT key_id, wrapped_key, root_key_id FROM local_keys',
    );
    const { code, stderr } = await rekey();
    expect(code).toBe(2);
    expect(stderr).toMatch(
      /1 Tenantry process is running against this control database .*stop every process first/,
    );
    expect(
      await superQuery(fleet.controlDb, 'SELECT key_id, wrapped_key, root_key_id FROM local_keys'),
    ).toEqual(before);
    expect(await superQuery(fleet.controlDb, `SELECT state FROM root_keys`)).toEqual([{ state: 'current' }]);
    await signal(proc.proc, 'SIGTERM');
    expect(proc.proc.exitCode).toBe(0);
  });

  it('killed with -9 midway, then run again, ends with every secret readable under the new key and none under the old', async () => {
    const oldKey = keyOf(fleet.keyFile);
    const newKey = keyOf(newKeyFile);
    const dataKeys = await superQuery<{ n: number }>(
      fleet.controlDb,
      `SELECT count(*)::int AS n FROM local_keys WHERE state = 'enabled'`,
    );
    const total = dataKeys[0]?.n ?? 0;
    expect(total).toBe(slugs.length + 1); // the platform's key and one per tenant

    // The first run waits after its first batch (two data keys, committed); the kill lands there.
    fs.writeFileSync(holdFile, 'rekey:batch');
    const run = spawnEntry(REKEY_ARGS(), rekeyEnv());
    for (let i = 0; ; i++) {
      const rows = await superQuery<{ rewrapped: number }>(
        fleet.controlDb,
        `SELECT rewrapped FROM root_keys WHERE state = 'next'`,
      );
      if ((rows[0]?.rewrapped ?? 0) > 0) break;
      if (i > 600) throw new Error('the re-wrap never finished a batch');
      await new Promise((r) => setTimeout(r, 50));
    }
    await kill9(run.proc);
    expect((await run.result).code).toBe(null); // killed, not exited
    fs.writeFileSync(holdFile, '');

    // Midway: some data keys under each root key, and no process starts, with either key.
    const split = await superQuery<{ next: number; old: number }>(
      fleet.controlDb,
      `SELECT count(*) FILTER (WHERE root_key_id = (SELECT id FROM root_keys WHERE state = 'next'))::int AS next,
              count(*) FILTER (WHERE root_key_id IS DISTINCT FROM (SELECT id FROM root_keys WHERE state = 'next'))::int AS old
         FROM local_keys WHERE state = 'enabled'`,
    );
    expect(split[0]?.next).toBe(2);
    expect(split[0]?.old).toBe(total - 2);
    for (const keyFile of [fleet.keyFile, newKeyFile]) {
      const refused = await runToExit(SERVER, {
        ...fleet.env({ TENANTRY_ROOT_KEY_FILE: keyFile }),
        PORT: '0',
      });
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(
        /a re-wrap of the key store under a new root key \(rk_\w+\) is unfinished: 2 data keys/,
      );
    }

    // Run again: it resumes where the kill left it.
    const done = await rekey();
    expect(done.code).toBe(0);
    const result = JSON.parse(done.stdout) as Record<string, unknown>;
    expect(result).toEqual({
      status: 'rewrapped',
      rootKeyId: expect.stringMatching(/^rk_/),
      retiredRootKeyId: expect.stringMatching(/^rk_/),
      dataKeys: total,
    });
    expect(done.stderr).toContain(`point TENANTRY_ROOT_KEY_FILE at it (now ${fleet.keyFile})`);

    // Every data key opens under the new root key and none under the old one.
    const wrapped = await superQuery<{ key_id: string; wrapped_key: Buffer; root_key_id: string }>(
      fleet.controlDb,
      `SELECT key_id, wrapped_key, root_key_id FROM local_keys WHERE state = 'enabled'`,
    );
    expect(wrapped).toHaveLength(total);
    for (const k of wrapped) {
      expect(k.root_key_id).toBe(result.rootKeyId);
      expect(() => open(newKey, k.wrapped_key, wrappedKeyAad(k.key_id))).not.toThrow();
      expect(() => open(oldKey, k.wrapped_key, wrappedKeyAad(k.key_id))).toThrow();
    }
    // So every secret reads under the new key, and none under the old.
    const names = await superQuery<{ name: string }>(
      fleet.controlDb,
      'SELECT DISTINCT name FROM local_secrets',
    );
    expect(names.length).toBe(total);
    const db = new Db(adminUrl(fleet.controlDb), 2);
    try {
      const withNew = new LocalKeyStore(db, newKey, String(result.rootKeyId));
      const withOld = new LocalKeyStore(db, oldKey);
      for (const { name } of names) {
        expect((await withNew.getSecret(name))?.value).toEqual(expect.any(Object));
        await expect(withOld.getSecret(name)).rejects.toThrow(/not wrapped with this process's root key/);
      }
    } finally {
      await db.close();
    }
    expect(await superQuery(fleet.controlDb, 'SELECT id, state FROM root_keys ORDER BY created_at')).toEqual([
      { id: result.retiredRootKeyId, state: 'retired' },
      { id: result.rootKeyId, state: 'current' },
    ]);
    const audit = await superQuery<{ action: string; n: number }>(
      fleet.controlDb,
      `SELECT action, count(*)::int AS n FROM audit_log WHERE action LIKE 'root-key.rewrap%' GROUP BY action ORDER BY action`,
    );
    expect(audit).toEqual([
      { action: 'root-key.rewrap-batch', n: Math.ceil(total / 2) },
      { action: 'root-key.rewrap-started', n: 1 },
      { action: 'root-key.rewrapped', n: 1 },
    ]);

    // Run once more: nothing to do.
    const again = await rekey();
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({
      status: 'already-current',
      rootKeyId: result.rootKeyId,
    });
  });

  it('a process holding the old key is told it was retired; with the new key it serves every tenant', async () => {
    const old = await runToExit(SERVER, { ...fleet.env(), PORT: '0' });
    expect(old.code).toBe(2);
    expect(old.stderr).toMatch(
      /the root key from TENANTRY_ROOT_KEY_FILE \(.*\) was retired on \d{4}-\d\d-\d\d/,
    );
    proc = await fleet.start({ TENANTRY_ROOT_KEY_FILE: newKeyFile });
    for (const slug of slugs) {
      const d = (await (
        await call(proc.base, fleet.adminToken, `/v1/tenants/${slug}/connection`)
      ).json()) as {
        password: string;
      };
      expect(d.password).toBe(passwords.get(slug));
    }
  });
});
