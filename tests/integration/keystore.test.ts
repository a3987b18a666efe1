import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Db } from '../../control-plane/src/db/db.js';
import type { NamedStatement } from '../../control-plane/src/domain/queryable.js';
import { LocalKeyStore, loadRootKey } from '../../control-plane/src/local/keystore.js';
import { adminUrl, dropDatabases, rand, superQuery } from '../helpers/runtime.js';

let db: Db;
let store: LocalKeyStore;
let dbName: string;
let dir: string;

beforeAll(async () => {
  dbName = `cp_keys_${rand()}`;
  await superQuery('postgres', `CREATE DATABASE ${dbName} TEMPLATE ${inject('templateDb')}`);
  db = new Db(adminUrl(dbName), 2);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-keys-'));
  store = new LocalKeyStore(db, loadRootKey(dir));
});
afterAll(async () => {
  await db?.close();
  fs.rmSync(dir, { recursive: true, force: true });
  if (dbName) await dropDatabases([dbName]);
});

describe('local key and secret store', () => {
  it('keeps the root key in a 0600 file under the data directory, stable across loads', () => {
    const file = path.join(dir, 'keys', 'root.key');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(loadRootKey(dir).equals(loadRootKey(dir))).toBe(true);
  });

  it("writes an onboarding's key and secret (provisional) on the relaxed sessions, every other write durably", async () => {
    const relaxedWrites: string[] = [];
    const relaxed = {
      query: ((text: string | NamedStatement, params?: unknown[]) => {
        const sql = typeof text === 'string' ? text : text.text;
        relaxedWrites.push(sql.trim().split(/\s+/).slice(0, 3).join(' '));
        return db.relaxedQuery(text, params);
      }) as typeof db.relaxedQuery,
    };
    const s = new LocalKeyStore(db, loadRootKey(dir), undefined, relaxed);
    const alias = `alias/prov/${rand()}`;
    await s.ensureKey(null, alias, { provisional: true });
    await s.putSecret('s/prov', alias, { password: 'p1' }, 1, { provisional: true });
    expect(relaxedWrites).toEqual(['INSERT INTO local_keys', 'INSERT INTO local_secrets']);
    // Committed and seen at once; only the WAL flush waits.
    expect((await s.getSecret('s/prov'))?.value).toEqual({ password: 'p1' });
    await s.putSecret('s/prov', alias, { password: 'p2' });
    await s.ensureKey(null, `alias/durable/${rand()}`);
    expect(relaxedWrites).toHaveLength(2);
    expect(
      (await db.relaxedQuery<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0],
    ).toEqual({
      synchronous_commit: 'off',
    });
  });

  it('round-trips a secret, versions it, and stores no plaintext', async () => {
    const alias = `alias/test/${rand()}`;
    await store.ensureKey(null, alias);
    const password = `pw-${randomBytes(12).toString('hex')}`;
    const v1 = await store.putSecret('s/one', alias, { password });
    const v2 = await store.putSecret('s/one', alias, { password: `${password}-2` });
    expect([v1.version, v2.version]).toEqual([1, 2]);
    expect((await store.getSecret('s/one'))?.value).toEqual({ password: `${password}-2` });
    const raw = await superQuery<{ ciphertext: Buffer }>(dbName, 'SELECT ciphertext FROM local_secrets');
    for (const r of raw) expect(r.ciphertext.toString('latin1')).not.toContain(password);
    const keys = await superQuery<{ wrapped_key: Buffer }>(
      dbName,
      'SELECT wrapped_key FROM local_keys WHERE alias = $1',
      [alias],
    );
    expect(keys[0]!.wrapped_key.length).toBe(12 + 16 + 32);
  });

  it('reads the latest version of several secrets together, leaving out the missing ones', async () => {
    const alias = `alias/test/${rand()}`;
    await store.ensureKey(null, alias);
    const [a, b] = [`s/many-a-${rand()}`, `s/many-b-${rand()}`];
    await store.putSecret(a, alias, { v: 'a1' });
    await store.putSecret(a, alias, { v: 'a2' });
    await store.putSecret(b, alias, { v: 'b1' });
    const read = await store.getSecrets([a, b, 's/never-written']);
    expect([...read.keys()].sort()).toEqual([a, b].sort());
    expect(read.get(a)).toEqual(await store.getSecret(a));
    expect(read.get(a)).toMatchObject({ ref: `local-secret://${a}`, version: 2, value: { v: 'a2' } });
    expect(read.get(b)).toMatchObject({ version: 1, value: { v: 'b1' } });
    expect((await store.getSecrets([])).size).toBe(0);
  });

  it('is idempotent per alias', async () => {
    const alias = `alias/test/${rand()}`;
    const [a, b] = await Promise.all([store.ensureKey(null, alias), store.ensureKey(null, alias)]);
    expect(a.keyId).toBe(b.keyId);
  });

  it('binds a ciphertext to its name: moving it under another name fails authentication', async () => {
    const alias = `alias/test/${rand()}`;
    await store.ensureKey(null, alias);
    await store.putSecret('s/a', alias, { v: 1 });
    await store.putSecret('s/b', alias, { v: 2 });
    await superQuery(
      dbName,
      `UPDATE local_secrets SET ciphertext = (SELECT ciphertext FROM local_secrets WHERE name = 's/a') WHERE name = 's/b'`,
    );
    await expect(new LocalKeyStore(db, loadRootKey(dir)).getSecret('s/b')).rejects.toThrow();
  });

  it('creates a secret only if it has no first version, in one write; a disabled key is refused', async () => {
    const alias = `alias/create/${rand()}`;
    await store.ensureKey(null, alias);
    const name = `s/create/${rand()}`;
    expect(await store.createSecret(name, alias, { password: 'first' })).toEqual({
      ref: `local-secret://${name}`,
      version: 1,
    });
    // Written again (a rerun of the step that wrote it): nothing changes, and the caller reads it.
    expect(await store.createSecret(name, alias, { password: 'second' })).toBeNull();
    expect(await store.getSecret(name)).toMatchObject({ version: 1, value: { password: 'first' } });
    await store.shredKey(alias);
    await expect(store.createSecret(`s/create/${rand()}`, alias, { password: 'x' })).rejects.toThrow(
      `key ${alias} is not enabled`,
    );
    // The same through a second store whose alias cache still names the key: the write's own check refuses it.
    const other = new LocalKeyStore(db, loadRootKey(dir));
    const alias2 = `alias/create/${rand()}`;
    await other.ensureKey(null, alias2);
    await store.shredKey(alias2);
    await expect(other.createSecret(`s/create/${rand()}`, alias2, { password: 'x' })).rejects.toThrow(
      `key ${alias2} is not enabled`,
    );
  });

  it("writes a new tenant's key and first secret in one write, and nothing when the alias has a key", async () => {
    const tenantId = randomUUID();
    const alias = `alias/both/${rand()}`;
    const name = `s/both/${rand()}`;
    const both = await store.createKeyAndSecret(tenantId, alias, name, { password: 'first' });
    expect(both).toEqual({ keyId: expect.stringMatching(/^lk_/), ref: `local-secret://${name}`, version: 1 });
    expect(await store.describeKey(alias)).toEqual({ keyId: both!.keyId, state: 'enabled' });
    // Readable by a store that did not write it (no cached key): sealed under the key it wrote.
    expect((await new LocalKeyStore(db, loadRootKey(dir)).getSecret(name))?.value).toEqual({
      password: 'first',
    });
    const keyRows = async (a: string) =>
      (
        await superQuery<{ key_id: string }>(dbName, 'SELECT key_id FROM local_keys WHERE alias = $1', [a])
      ).map((r) => r.key_id);

    // A rerun (the alias has its key): nothing written, the caller takes the one-at-a-time path.
    expect(await store.createKeyAndSecret(tenantId, alias, `s/both/${rand()}`, { password: 'x' })).toBeNull();
    expect(await keyRows(alias)).toEqual([both!.keyId]);

    // A first version already there under another name's key: the key is made, the secret left alone.
    const alias2 = `alias/both/${rand()}`;
    expect(await store.createKeyAndSecret(tenantId, alias2, name, { password: 'second' })).toBeNull();
    expect(await keyRows(alias2)).toHaveLength(1);
    expect((await store.getSecret(name))?.value).toEqual({ password: 'first' });

    // A root key a re-wrap retired: nothing at all.
    const retired = new LocalKeyStore(db, loadRootKey(dir), 'rk_not_current');
    const alias3 = `alias/both/${rand()}`;
    expect(await retired.createKeyAndSecret(tenantId, alias3, `s/both/${rand()}`, { v: 1 })).toBeNull();
    expect(await keyRows(alias3)).toEqual([]);
  });

  it('shredding a key makes every secret under it unreadable, and frees the alias for a new key', async () => {
    const alias = `alias/test/${rand()}`;
    const { keyId } = await store.ensureKey(null, alias);
    await store.putSecret('s/shred', alias, { v: 1 });
    await store.shredKey(alias);
    await expect(store.getSecret('s/shred')).rejects.toThrow(/destroyed/);
    expect(await store.describeKey(alias)).toEqual({ keyId, state: 'destroyed' });
    const again = await store.ensureKey(null, alias);
    expect(again.keyId).not.toBe(keyId);
  });

  it('a different root key cannot read the secrets', async () => {
    const alias = `alias/test/${rand()}`;
    await store.ensureKey(null, alias);
    await store.putSecret('s/root', alias, { v: 1 });
    const other = new LocalKeyStore(db, randomBytes(32));
    await expect(other.getSecret('s/root')).rejects.toThrow();
  });
});
