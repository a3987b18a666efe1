import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginRoleName, tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { crashScratch, endCrashScratch } from '../helpers/crash.js';
import { adminUrl, rand, superQuery, tenantClient } from '../helpers/runtime.js';
import { freePort, isRunning, kill9, type ServerProcess, signal, startServer } from '../helpers/server.js';

/**
 * Kill -9 the control plane in the middle of an onboarding, at every step of every tier, then
 * restart it: the operation must resume to `succeeded` (or end `failed` and rolled back), and
 * the tenant must never read `active` while half-provisioned. Then the embedded default: kill -9
 * the whole process (its Postgres is orphaned), restart on the same data directory.
 */
const ADMIN = `tnt_${rand(24)}`;
let controlDb: string;
let dataDb: string;
let dataDir: string;
let child: ServerProcess | undefined;
let port: number;

/** Names the step where the onboarding waits until the test kills the process (crash tests only). */
let holdFile: string;

// Every start keeps the fault delay, so a restarted server can serve the next case too.
const env = () => ({
  TENANTRY_FAULT_HOLD_FILE: holdFile,
  DATABASE_URL: adminUrl(controlDb),
  TENANTRY_DATAPLANE_URL: adminUrl(dataDb),
  TENANTRY_DATA_DIR: dataDir,
  TENANTRY_ADMIN_TOKEN: ADMIN,
  TENANTRY_OPERATION_LEASE_MS: '1500',
  TENANTRY_FAULT_STEP_DELAY_MS: '300',
});

beforeAll(async () => {
  ({ controlDb, dataDb, dataDir, holdFile, port } = await crashScratch('crash'));
});

afterAll(async () => {
  // The control and data databases, the silo template and the silos of the tenants onboarded here.
  await endCrashScratch(child, { controlDb, dataDb, dataDir });
});

const ONBOARD_STEPS = {
  pool: ['credentials', 'pool-membership'],
  bridge: ['credentials', 'role', 'schema'],
  silo: ['credentials', 'role', 'database', 'schema'],
} as const;
type Tier = keyof typeof ONBOARD_STEPS;
const CASES = (Object.keys(ONBOARD_STEPS) as Tier[]).flatMap((tier) =>
  ONBOARD_STEPS[tier].map((step) => [tier, step] as const),
);

const api = (base: string, token: string, url: string, init: RequestInit = {}) =>
  fetch(`${base}${url}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...init.headers },
  });

interface Descriptor {
  tenantId: string;
  user: string;
  password: string;
  database: string;
  host: string;
  port: number;
  schema: string;
  tenantSetting?: string;
}

/** What the data plane does with a descriptor: run `sql` in a transaction, as the tenant. */
async function asTenant(d: Descriptor, sql: string) {
  const c = await tenantClient(d);
  try {
    await c.query('BEGIN');
    if (d.tenantSetting) await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, d.tenantId]);
    const r = await c.query(sql, [d.tenantId]);
    await c.query('COMMIT');
    return r.rows;
  } finally {
    await c.end();
  }
}

/** The tier's Postgres objects, looked up as the superuser. */
async function placementOf(tier: Tier, slug: string, tenantId: string) {
  const name = tenantObjectName(slug);
  const one = async (db: string, sql: string, p: unknown[]) => (await superQuery(db, sql, p)).length === 1;
  // The login the tenant's descriptor names (its group, `name`, holds the grants and logs in not).
  const role = await one('postgres', 'SELECT 1 FROM pg_roles WHERE rolname = $1 AND rolcanlogin', [
    loginRoleName(name, 'a'),
  ]);
  if (tier === 'pool') {
    return {
      member: await one(dataDb, 'SELECT 1 FROM tenantry_meta.pool_members WHERE tenant_id = $1', [tenantId]),
      role,
    };
  }
  if (tier === 'bridge') {
    return { schema: await one(dataDb, 'SELECT 1 FROM pg_namespace WHERE nspname = $1', [name]), role };
  }
  return { database: await one('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [name]), role };
}

const EXPECTED_PLACEMENT: Record<Tier, Record<string, boolean>> = {
  pool: { member: true, role: false }, // pool tenants share the platform's pool role
  bridge: { schema: true, role: true },
  silo: { database: true, role: true },
};

describe('kill -9 during onboarding (external Postgres)', () => {
  it.each(CASES)(
    '%s: killed while step %s runs, the restarted control plane finishes the onboarding',
    async (tier, stepName) => {
      if (!isRunning(child)) child = await startServer(port, env());
      const base = `http://127.0.0.1:${port}`;
      const slug = `crash-${tier}-${rand(3)}`;
      // The step waits at its start until the kill: the kill lands inside it however slow we are.
      fs.writeFileSync(holdFile, `step:${stepName}`);
      const res = await api(base, ADMIN, '/v1/tenants', {
        method: 'POST',
        body: JSON.stringify({ slug, name: 'Crash', tier }),
      });
      expect(res.status).toBe(202);
      const { operation, tenant } = (await res.json()) as {
        operation: { id: string };
        tenant: { id: string };
      };

      // Wait until the chosen step is running, then pull the plug.
      const until = Date.now() + 20_000;
      for (;;) {
        const rows = await superQuery<{ steps: { name: string; status: string }[] }>(
          controlDb,
          'SELECT steps FROM operations WHERE id = $1',
          [operation.id],
        );
        if (rows[0]?.steps.find((x) => x.name === stepName)?.status === 'running') break;
        if (Date.now() > until) throw new Error(`step ${stepName} never ran`);
        await new Promise((r) => setTimeout(r, 10));
      }
      await kill9(child);
      fs.writeFileSync(holdFile, '');

      const state = () =>
        superQuery<{ status: string; op: string; error: string | null }>(
          controlDb,
          'SELECT t.status, o.status AS op, o.error FROM tenants t JOIN operations o ON o.tenant_id = t.id WHERE o.id = $1',
          [operation.id],
        );
      expect(await state()).toEqual([{ status: 'provisioning', op: 'running', error: null }]);

      child = await startServer(port, env());
      const done = Date.now() + 30_000;
      let final: { status: string; op: string; error: string | null } | undefined;
      for (;;) {
        final = (await state())[0];
        // Never active while the operation is unfinished.
        if (final?.op !== 'succeeded') expect(final?.status).not.toBe('active');
        if (final && ['succeeded', 'failed'].includes(final.op)) break;
        if (Date.now() > done) throw new Error(`operation stuck: ${JSON.stringify(final)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(final).toEqual({ status: 'active', op: 'succeeded', error: null });
      expect(await placementOf(tier, slug, tenant.id)).toEqual(EXPECTED_PLACEMENT[tier]);
      // The connection descriptor works end to end after the crash.
      const conn = await api(base, ADMIN, `/v1/tenants/${slug}/connection`);
      expect(conn.status).toBe(200);
      const d = (await conn.json()) as Descriptor;
      await asTenant(d, `INSERT INTO ${d.schema}.users (tenant_id, email) VALUES ($1, 'a@b')`);
      expect(await asTenant(d, `SELECT email FROM ${d.schema}.users WHERE tenant_id = $1`)).toEqual([
        { email: 'a@b' },
      ]);
    },
  );
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};
const postmasterPid = (dir: string) =>
  Number(fs.readFileSync(path.join(dir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
const TOKEN_BANNER = /Generated admin token[^\n]*\n\s+(\S+)/g;

describe('embedded default (no DATABASE_URL): kill -9 and restart on the same data directory', () => {
  it('prints a generated admin token on the first start only, takes over the pid lock and the orphaned postgres, and keeps the data', async () => {
    // The embedded postgres runs as the `postgres` OS user under root: its parents must be searchable.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-embedded-'));
    fs.chmodSync(dir, 0o755);
    const httpPort = await freePort();
    const envE = { TENANTRY_DATA_DIR: dir, TENANTRY_EMBEDDED_PG_PORT: String(await freePort()) };
    const base = `http://127.0.0.1:${httpPort}`;
    let first: ServerProcess | undefined;
    let second: ServerProcess | undefined;
    try {
      first = await startServer(httpPort, envE, { timeoutMs: 120_000 });
      const banners = [...first.output().matchAll(TOKEN_BANNER)];
      expect(banners).toHaveLength(1);
      const token = banners[0]![1]!;
      expect(token).toMatch(/^tnt_/);

      const slug = `emb-${rand(3)}`;
      const created = await api(base, token, '/v1/tenants', {
        method: 'POST',
        body: JSON.stringify({ slug, name: 'Embedded', tier: 'bridge' }),
      });
      expect(created.status).toBe(202);
      const opId = ((await created.json()) as { operation: { id: string } }).operation.id;
      for (let i = 0; ; i++) {
        const op = (await (await api(base, token, `/v1/operations/${opId}`)).json()) as { status: string };
        if (op.status === 'succeeded') break;
        if (op.status === 'failed' || i > 600) throw new Error(`onboarding ended ${op.status}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const d = (await (await api(base, token, `/v1/tenants/${slug}/connection`)).json()) as Descriptor;
      await asTenant(d, `INSERT INTO ${d.schema}.users (tenant_id, email) VALUES ($1, 'kept@x')`);

      const orphan = postmasterPid(dir);
      await kill9(first);
      // What the next start must cope with: a stale lock naming a dead process, a live orphaned postgres.
      expect(fs.readFileSync(path.join(dir, 'tenantry.pid'), 'utf8').trim()).toBe(String(first.pid));
      expect(alive(orphan)).toBe(true);

      second = await startServer(httpPort, envE, { timeoutMs: 120_000 });
      expect(second.output()).not.toMatch(TOKEN_BANNER);
      expect(fs.readFileSync(path.join(dir, 'tenantry.pid'), 'utf8').trim()).toBe(String(second.pid));
      expect(alive(orphan)).toBe(false);
      expect(postmasterPid(dir)).not.toBe(orphan);

      // The first start's token, tenant and rows all survived.
      const got = await api(base, token, `/v1/tenants/${slug}`);
      expect(got.status).toBe(200);
      expect(await got.json()).toMatchObject({ slug, status: 'active', tier: 'bridge' });
      const again = (await (await api(base, token, `/v1/tenants/${slug}/connection`)).json()) as Descriptor;
      expect(await asTenant(again, `SELECT email FROM ${again.schema}.users WHERE tenant_id = $1`)).toEqual([
        { email: 'kept@x' },
      ]);

      // A graceful stop takes its postgres down with it.
      const pgPid = postmasterPid(dir);
      await signal(second, 'SIGTERM');
      expect(second.exitCode).toBe(0);
      expect(alive(pgPid)).toBe(false);
    } finally {
      for (const p of [first, second]) if (isRunning(p)) await kill9(p);
      // Never leave a postgres we started behind, whatever failed above.
      const pidFile = path.join(dir, 'pg', 'postmaster.pid');
      if (fs.existsSync(pidFile)) {
        const pid = postmasterPid(dir);
        if (pid > 0 && alive(pid)) process.kill(pid, 'SIGINT');
        for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
      }
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);
});
