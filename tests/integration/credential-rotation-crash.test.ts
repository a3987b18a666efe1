import fs from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { loginRoleNames } from '../../control-plane/src/domain/naming.js';
import { crashScratch, endCrashScratch } from '../helpers/crash.js';
import { adminUrl, rand, superQuery } from '../helpers/runtime.js';
import { isRunning, kill9, type ServerProcess, startServer } from '../helpers/server.js';

/**
 * Kill -9 the control plane while a credential rotation runs, at each of its steps, then restart it:
 * the rotation finishes (the lease reaper hands it to the new process, which re-runs the step in
 * flight), the descriptor names the new login with a password that works, the old one still works (its
 * grace period), and an application session opened before never noticed.
 */
const ADMIN = `tnt_${rand(24)}`;
let controlDb: string;
let dataDb: string;
let dataDir: string;
let holdFile: string;
let child: ServerProcess | undefined;
let port: number;

const env = () => ({
  TENANTRY_FAULT_HOLD_FILE: holdFile,
  DATABASE_URL: adminUrl(controlDb),
  TENANTRY_DATAPLANE_URL: adminUrl(dataDb),
  TENANTRY_DATA_DIR: dataDir,
  TENANTRY_ADMIN_TOKEN: ADMIN,
  TENANTRY_OPERATION_LEASE_MS: '1500',
  TENANTRY_ROTATION_SCHEDULE: 'off',
});

beforeAll(async () => {
  ({ controlDb, dataDb, dataDir, holdFile, port } = await crashScratch('rotcrash'));
});

afterAll(async () => {
  await endCrashScratch(child, { controlDb, dataDb, dataDir });
  const { poolRole } = dataPlaneNames(dataDb);
  await superQuery('postgres', `DROP ROLE IF EXISTS ${loginRoleNames(poolRole).join(', ')}`).catch(
    () => undefined,
  );
});

interface Descriptor {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
}

const api = async (url: string, init: RequestInit = {}) => {
  const res = await fetch(`http://127.0.0.1:${port}${url}`, {
    ...init,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', ...init.headers },
  });
  // biome-ignore lint/suspicious/noExplicitAny: JSON from our own API, in a test
  return { status: res.status, body: (await res.json()) as Record<string, any> };
};

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: still waiting after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const opStatus = async (id: string) =>
  (await superQuery<{ status: string }>(controlDb, 'SELECT status FROM operations WHERE id = $1', [id]))[0]
    ?.status;

async function login(d: Descriptor): Promise<pg.Client> {
  const c = new pg.Client({
    host: d.host,
    port: d.port,
    database: d.database,
    user: d.user,
    password: d.password,
  });
  await c.connect();
  return c;
}

describe('kill -9 during a credential rotation', () => {
  it.each([['bridge'], ['pool']] as const)(
    '%s: killed at each step, the restarted control plane finishes it',
    async (tier) => {
      if (!isRunning(child)) child = await startServer(port, env());
      const slug = `rot-${tier}-${rand(3)}`;
      const created = await api('/v1/tenants', {
        method: 'POST',
        body: JSON.stringify({ slug, name: 'R', tier }),
      });
      expect(created.status).toBe(202);
      await until('onboarding', async () =>
        (await opStatus(created.body.operation.id)) === 'succeeded' ? true : undefined,
      );
      for (const step of ['retire', 'logins', 'set-password', 'publish']) {
        const before = (await api(`/v1/tenants/${slug}/connection`)).body as Descriptor;
        const app = await login(before);
        app.on('error', () => {});
        fs.writeFileSync(holdFile, `step:${step}`);
        // A second rotation waits until the first one's grace period has ended: end it now.
        await superQuery(controlDb, 'UPDATE login_rotations SET grace_until = now()');
        const res = await api(`/v1/tenants/${slug}/credential-rotations`, {
          method: 'POST',
          body: JSON.stringify({ graceSeconds: 3600 }),
        });
        expect(res.status, JSON.stringify(res.body)).toBe(202);
        const id = res.body.operation.id as string;
        await until(`step ${step} held`, async () => {
          const [op] = await superQuery<{ at: string | null }>(
            controlDb,
            `SELECT progress ->> 'faultPoint' AS at FROM operations WHERE id = $1`,
            [id],
          );
          return op?.at === `step:${step}` ? true : undefined;
        });
        await kill9(child!);
        fs.writeFileSync(holdFile, '');
        child = await startServer(port, env());
        await until('the rotation', async () => {
          const st = await opStatus(id);
          return st === 'succeeded' || st === 'failed' ? st : undefined;
        }).then((st) => expect(st).toBe('succeeded'));
        const after = (await api(`/v1/tenants/${slug}/connection`)).body as Descriptor;
        expect(after.user).not.toBe(before.user);
        // The new login works, the old one still does (grace period), and the session opened before never broke.
        for (const d of [after, before]) await (await login(d)).end();
        expect((await app.query('SELECT 1 AS x')).rows).toEqual([{ x: 1 }]);
        await app.end();
      }
    },
  );
});
