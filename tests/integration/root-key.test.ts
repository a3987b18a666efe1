import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig, StartRefused } from '../../control-plane/src/config.js';
import { Db } from '../../control-plane/src/db/db.js';
import { LocalKeyStore } from '../../control-plane/src/local/keystore.js';
import { verifyRootKey } from '../../control-plane/src/local/root-key.js';
import { startRuntime } from '../../control-plane/src/runtime.js';
import {
  call,
  createFleet,
  type Fleet,
  type Proc,
  runToExit,
  snapshot,
  writeKeyFile,
} from '../helpers/fleet.js';
import { adminUrl, dropDatabases, rand, superQuery } from '../helpers/runtime.js';
import { signal } from '../helpers/server.js';

/**
 * The root key as configuration, shared by several processes on one control database: the first
 * start records a key check; a process holding another key refuses to start with a message that
 * names the setting and says what to copy, and writes nothing.
 */
let fleet: Fleet;
let first: Proc;
const SERVER = ['control-plane/src/server.ts'];

interface Descriptor {
  user: string;
  password: string;
}

async function onboardAndWait(base: string, slug: string, tier: string): Promise<void> {
  const res = await call(base, fleet.adminToken, '/v1/tenants', {
    method: 'POST',
    body: JSON.stringify({ slug, name: slug, tier }),
  });
  expect(res.status).toBe(202);
  const { operation } = (await res.json()) as { operation: { id: string } };
  for (let i = 0; ; i++) {
    const op = (await (await call(base, fleet.adminToken, `/v1/operations/${operation.id}`)).json()) as {
      status: string;
    };
    if (op.status === 'succeeded') return;
    if (op.status === 'failed' || i > 600) throw new Error(`onboarding of ${slug} ended ${op.status}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const descriptor = async (base: string, slug: string) =>
  (await (await call(base, fleet.adminToken, `/v1/tenants/${slug}/connection`)).json()) as Descriptor;

beforeAll(async () => {
  fleet = await createFleet('rk');
  first = await fleet.start();
  await onboardAndWait(first.base, `${fleet.prefix}-pool`, 'pool');
  await onboardAndWait(first.base, `${fleet.prefix}-bridge`, 'bridge');
});

afterAll(async () => {
  await fleet?.drop();
});

describe('a shared root key', () => {
  it('is checked by a key check the first start recorded, audited in the same transaction', async () => {
    const keys = await superQuery<{ id: string; state: string }>(
      fleet.controlDb,
      'SELECT id, state FROM root_keys',
    );
    expect(keys).toEqual([{ id: expect.stringMatching(/^rk_[0-9a-f]{16}$/), state: 'current' }]);
    const audit = await superQuery<{ details: Record<string, unknown> }>(
      fleet.controlDb,
      `SELECT details FROM audit_log WHERE action = 'root-key.check-recorded'`,
    );
    expect(audit).toEqual([
      { details: { rootKeyId: keys[0]?.id, setting: 'TENANTRY_ROOT_KEY_FILE', existingDataKeys: false } },
    ]);
    // Every data key the first process wrote names the root key that wraps it.
    const wrapped = await superQuery<{ root_key_id: string | null }>(
      fleet.controlDb,
      `SELECT DISTINCT root_key_id FROM local_keys WHERE state = 'enabled'`,
    );
    expect(wrapped).toEqual([{ root_key_id: keys[0]?.id }]);
  });

  it('a second process with another root key fails at start with the documented message, and writes nothing', async () => {
    const before = await snapshot(fleet);
    // As the issue's operator did: a data directory of its own, so its own generated key.
    const env = fleet.env({ TENANTRY_ROOT_KEY_FILE: '' });
    const { code, stderr } = await runToExit(SERVER, { ...env, PORT: '0' });
    expect(code).toBe(2);
    expect(stderr).toMatch(/^tenantry: the root key does not match this control database/);
    expect(stderr).toContain(`${env.TENANTRY_DATA_DIR}/keys/root.key`);
    expect(stderr).toMatch(
      /set TENANTRY_ROOT_KEY_FILE to the copy, or set TENANTRY_ROOT_KEY to its contents/,
    );
    expect(stderr).toMatch(/Copy the root key file of a process that starts/);
    expect(stderr).toContain('docs/operations.md');
    // Never the bare crypto error, nor a stack.
    expect(stderr).not.toMatch(/Unsupported state|unable to authenticate|\n\s+at /);
    expect(await snapshot(fleet)).toEqual(before);

    // The same with a key file that is not the store's.
    const other = writeKeyFile(path.join(fleet.dir, 'other.key'));
    const withFile = await runToExit(SERVER, { ...fleet.env({ TENANTRY_ROOT_KEY_FILE: other }), PORT: '0' });
    expect(withFile.code).toBe(2);
    expect(withFile.stderr).toContain(`this process took its key from TENANTRY_ROOT_KEY_FILE (${other})`);
    expect(await snapshot(fleet)).toEqual(before);
  });

  it('a named key file that is missing fails the start naming the setting (it is never generated)', async () => {
    const missing = path.join(fleet.dir, 'nowhere', 'root.key');
    const { code, stderr } = await runToExit(SERVER, {
      ...fleet.env({ TENANTRY_ROOT_KEY_FILE: missing }),
      PORT: '0',
    });
    expect(code).toBe(2);
    expect(stderr).toContain(`cannot read the root key from TENANTRY_ROOT_KEY_FILE (${missing}): ENOENT`);
    expect(fs.existsSync(missing)).toBe(false);
  });

  it('a copy of the key, as a file or as a value in the environment, lets a second process read every secret', async () => {
    const copy = path.join(fleet.dir, 'copied.key');
    fs.copyFileSync(fleet.keyFile, copy);
    const slug = `${fleet.prefix}-bridge`;
    const expected = await descriptor(first.base, slug);
    const second = await fleet.start({ TENANTRY_ROOT_KEY_FILE: copy });
    expect(await descriptor(second.base, slug)).toMatchObject({
      user: expected.user,
      password: expected.password,
    });
    // Onboarding through the second process: its data keys are wrapped with the same root key.
    await onboardAndWait(second.base, `${fleet.prefix}-second`, 'bridge');
    expect((await descriptor(first.base, `${fleet.prefix}-second`)).password).toEqual(expect.any(String));
    await signal(second.proc, 'SIGTERM');

    // An empty setting is an unset one.
    const third = await fleet.start({
      TENANTRY_ROOT_KEY_FILE: '',
      TENANTRY_ROOT_KEY: fs.readFileSync(fleet.keyFile, 'utf8').trim(),
    });
    expect(await descriptor(third.base, slug)).toMatchObject({ password: expected.password });
    await signal(third.proc, 'SIGTERM');
    // Still one key check: the later starts verified it, none recorded another.
    expect(await superQuery(fleet.controlDb, 'SELECT count(*)::int AS n FROM root_keys')).toEqual([{ n: 1 }]);
  });
});

describe('a store written before key checks', () => {
  let controlDb: string;
  let db: Db;
  beforeAll(async () => {
    controlDb = `cp_rk_legacy_${rand(3)}`;
    await superQuery('postgres', `CREATE DATABASE ${controlDb} TEMPLATE ${inject('templateDb')}`);
    db = new Db(adminUrl(controlDb), 2);
  });
  afterAll(async () => {
    await db.close();
    await dropDatabases([controlDb]);
  });

  it('is adopted by its own key (the check is recorded then), and refused to any other, with nothing written', async () => {
    const key = fs.readFileSync(writeKeyFile(path.join(os.tmpdir(), `rk-${rand()}.key`)));
    const rootKey = { key: Buffer.from(key.toString().trim(), 'base64'), source: 'TENANTRY_ROOT_KEY' };
    // An earlier build's store: data keys with no root key recorded, and no key check.
    const legacy = new LocalKeyStore(db, rootKey.key);
    await legacy.ensureKey(null, 'alias/legacy');
    await legacy.putSecret('legacy/secret', 'alias/legacy', { v: 1 });

    const wrong = { key: Buffer.alloc(32, 7), source: 'TENANTRY_ROOT_KEY' };
    const refused = verifyRootKey(db, wrong);
    await expect(refused).rejects.toBeInstanceOf(StartRefused);
    await expect(verifyRootKey(db, wrong)).rejects.toThrow(
      /the root key does not match this control database: this process took its key from TENANTRY_ROOT_KEY, and it cannot unwrap the data keys already in the database/,
    );
    expect(await superQuery(controlDb, 'SELECT * FROM root_keys')).toEqual([]);
    expect(
      await superQuery(controlDb, `SELECT count(*)::int AS n FROM audit_log WHERE action LIKE 'root-key.%'`),
    ).toEqual([{ n: 0 }]);

    const id = await verifyRootKey(db, rootKey);
    expect(await verifyRootKey(db, rootKey)).toBe(id);
    expect(await new LocalKeyStore(db, rootKey.key, id).getSecret('legacy/secret')).toMatchObject({
      value: { v: 1 },
    });
    await expect(verifyRootKey(db, wrong)).rejects.toThrow(
      /cannot open the database's key check \(root key rk_/,
    );
  });
});

describe('the aws target', () => {
  it('starts with no local root key: none is read, generated or checked', async () => {
    const controlDb = `cp_rk_aws_${rand(3)}`;
    await superQuery('postgres', `CREATE DATABASE ${controlDb} TEMPLATE ${inject('templateDb')}`);
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-rk-aws-'));
    try {
      const config = loadConfig({
        TENANTRY_TARGET: 'aws',
        TENANTRY_ROLE: 'api',
        DATABASE_URL: adminUrl(controlDb),
        TENANTRY_DATA_DIR: dataDir,
        // Set, but the aws target has no use for it: a file that is not there is never read.
        TENANTRY_ROOT_KEY_FILE: path.join(dataDir, 'no-such.key'),
        PULUMI_BACKEND_URL: `file://${dataDir}/state`,
        AWS_REGION: 'eu-west-1',
        TENANTRY_AWS_ENDPOINT: 'http://127.0.0.1:9',
        // The two settings every aws platform has (tiers' own settings are optional at start).
        TENANTRY_AWS_PLATFORM: JSON.stringify({
          adminRoleArn: 'arn:aws:iam::111111111111:role/admin',
          dataPlaneRoleArn: 'arn:aws:iam::111111111111:role/data-plane',
        }),
        TENANTRY_DRIFT_SCHEDULE: 'off',
        LOG_LEVEL: 'silent',
      });
      const runtime = await startRuntime(config, pino({ level: 'silent' }));
      try {
        expect(runtime.services.engine.target).toBe('aws');
        expect(await runtime.services.readiness.check()).toMatchObject({ ready: true });
      } finally {
        await runtime.close();
      }
      expect(fs.existsSync(path.join(dataDir, 'keys'))).toBe(false);
      expect(await superQuery(controlDb, 'SELECT * FROM root_keys')).toEqual([]);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
      await dropDatabases([controlDb]);
    }
  });
});
