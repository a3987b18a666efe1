import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ClientLog,
  type ConnectionDescriptor,
  createTenantryClient,
  httpDescriptorSource,
  placementKey,
  type TenantDb,
  TenantryClient,
} from '../../control-plane/src/client/index.js';
import type { PlacementPools } from '../../control-plane/src/client/pools.js';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { loginRoleNames } from '../../control-plane/src/domain/naming.js';
import {
  auth,
  connectionOf,
  onboard,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';

/**
 * The data-plane client against a real control plane (its API over HTTP, a dataplane token) and real
 * Postgres: routing, one pool per placement, the pool tier's tenant setting, and every misuse it
 * refuses. Rotations and promotions under load through it: dataplane-load.test.ts.
 */
let s: TestStack;
let url: string;
const tenants: Record<'pool' | 'pool2' | 'bridge' | 'silo', { slug: string; id: string }> = {} as never;

beforeAll(async () => {
  s = await startStack({ TENANTRY_ROTATION_SCHEDULE: 'off' });
  await s.app.listen({ port: 0, host: '127.0.0.1' });
  url = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
  tenants.pool = await onboard(s, 'pool');
  tenants.pool2 = await onboard(s, 'pool');
  tenants.bridge = await onboard(s, 'bridge');
  tenants.silo = await onboard(s, 'silo');
});
afterAll(async () => {
  // The descriptor reads' keep-alive connections would hold the listener's close for a minute.
  s?.app.server.closeAllConnections();
  await s?.close();
  const { poolRole } = dataPlaneNames(s.dataDb);
  await superQuery('postgres', `DROP ROLE IF EXISTS ${loginRoleNames(poolRole).join(', ')}`).catch(
    () => undefined,
  );
});

/** A tenant's descriptor as the control plane serves it (the data-plane client's input). */
const descriptorOf = async (slug: string) => (await connectionOf(s, slug)) as unknown as ConnectionDescriptor;

const client = (opts: { max?: number; registry?: Registry; log?: ClientLog } = {}) =>
  createTenantryClient({
    descriptors: httpDescriptorSource({ url, token: s.tokens.dataplane }),
    descriptorTtlMs: 60_000,
    pool: { max: opts.max ?? 4 },
    ...(opts.registry ? { registry: opts.registry } : {}),
    ...(opts.log ? { log: opts.log } : {}),
  });

const insertUser = (db: TenantDb, email: string) =>
  db.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [db.tenantId, email]);
const emails = async (db: TenantDb) =>
  (await db.query<{ email: string }>('SELECT email FROM users ORDER BY email')).rows.map((r) => r.email);

describe('routing and scoping', () => {
  it("runs each tenant's unit on its own placement, the pool tier scoped to the tenant, one pool per placement", async () => {
    const registry = new Registry();
    const c = client({ registry });
    try {
      for (const [name, t] of Object.entries(tenants))
        await c.withTenant(t.slug, (db) => insertUser(db, `${name}@x`));
      for (const [name, t] of Object.entries(tenants))
        expect(await c.withTenant(t.slug, emails)).toEqual([`${name}@x`]);
      // Two pool tenants, one placement; the bridge and the silo tenant each their own login.
      const keys = await Promise.all(
        Object.values(tenants).map(async (t) => placementKey(await connectionOf(s, t.slug))),
      );
      expect(new Set(keys).size).toBe(3);
      expect(c.placements().sort()).toEqual([...new Set(keys)].sort());
      const text = await registry.metrics();
      expect(text).toMatch(/tenantry_client_pools 3/);
      expect(text).toMatch(/tenantry_client_units_total\{outcome="committed"\} 8/);
      expect(text).toMatch(/tenantry_client_descriptor_cache_total\{result="hit"\} 4/);
      expect(text).not.toContain((await connectionOf(s, tenants.bridge.slug)).password);
    } finally {
      await c.close();
    }
  });

  it('rolls the unit back when it throws, and commits nothing of it', async () => {
    const c = client();
    try {
      await expect(
        c.withTenant(tenants.bridge.slug, async (db) => {
          await insertUser(db, 'rolled-back@x');
          throw new Error('application error');
        }),
      ).rejects.toThrow('application error');
      expect(await c.withTenant(tenants.bridge.slug, emails)).not.toContain('rolled-back@x');
    } finally {
      await c.close();
    }
  });
});

describe('misuse is refused or cannot happen', () => {
  it('a pool query outside withTenant: a handle kept after its unit refuses every statement', async () => {
    const c = client();
    try {
      let kept: TenantDb | undefined;
      await c.withTenant(tenants.pool.slug, async (db) => {
        kept = db;
      });
      await expect(kept?.query('SELECT count(*) FROM users')).rejects.toMatchObject({
        code: 'MISUSE_OUTSIDE_UNIT',
      });
      // A statement a unit left to run later (not awaited) is refused once the unit is over.
      let go: () => void = () => {};
      let late: Promise<unknown> | undefined;
      await c.withTenant(tenants.pool.slug, async (db) => {
        late = new Promise<void>((r) => {
          go = r;
        }).then(() => db.query('SELECT 1'));
      });
      go();
      await expect(late).rejects.toMatchObject({ code: 'MISUSE_OUTSIDE_UNIT' });
    } finally {
      await c.close();
    }
  });

  it('the tenant setting never survives on a returned connection: the unit cannot set it for the session, nor end its transaction', async () => {
    const c = client({ max: 1 });
    try {
      const pid = await c.withTenant(tenants.pool.slug, async (db) => {
        for (const sql of [
          "SET app.tenant_id = '00000000-0000-4000-8000-000000000000'",
          "SELECT set_config('app.tenant_id', '00000000-0000-4000-8000-000000000000', false)",
          'RESET ALL',
        ])
          await expect(db.query(sql)).rejects.toMatchObject({ code: 'MISUSE_TENANT_SETTING' });
        for (const sql of ['COMMIT', 'select 1; commit', 'ROLLBACK', 'begin', 'END'])
          await expect(db.query(sql)).rejects.toMatchObject({ code: 'MISUSE_TRANSACTION_CONTROL' });
        // A savepoint is the unit's own business.
        await db.query('SAVEPOINT s1');
        await db.query('ROLLBACK TO SAVEPOINT s1');
        const { rows } = await db.query<{ pid: number; tenant: string }>(
          `SELECT pg_backend_pid() AS pid, current_setting('app.tenant_id') AS tenant`,
        );
        expect(rows[0]?.tenant).toBe(tenants.pool.id);
        return rows[0]?.pid;
      });
      // The very connection the unit ran on, as the pool hands it out next: no tenant set.
      const pools = (c as unknown as { pools: PlacementPools }).pools;
      const raw = await pools.for(await descriptorOf(tenants.pool.slug)).connect();
      try {
        const { rows } = await raw.query<{ pid: number; tenant: string | null }>(
          `SELECT pg_backend_pid() AS pid, current_setting('app.tenant_id', true) AS tenant`,
        );
        expect(rows[0]).toEqual({ pid, tenant: '' });
        // With no tenant set, row-level security shows no pool tenant's rows.
        expect((await raw.query('SELECT count(*)::int AS n FROM users')).rows[0].n).toBe(0);
      } finally {
        raw.release();
      }
    } finally {
      await c.close();
    }
  });

  it('a nested withTenant for another tenant is refused; for the same tenant it joins the unit', async () => {
    const c = client();
    try {
      await expect(
        c.withTenant(tenants.pool.slug, async () => c.withTenant(tenants.pool2.slug, emails)),
      ).rejects.toMatchObject({ code: 'MISUSE_NESTED_TENANT' });
      const seen = await c.withTenant(tenants.pool.slug, async (outer) => {
        await insertUser(outer, 'nested@x');
        // The inner unit is the outer one: it sees the outer's uncommitted row.
        return c.withTenant(tenants.pool.slug, emails);
      });
      expect(seen).toContain('nested@x');
      // After the unit, a withTenant for another tenant is a unit of its own.
      expect(await c.withTenant(tenants.pool2.slug, emails)).toEqual(['pool2@x']);
    } finally {
      await c.close();
    }
  });

  it('an unknown tenant is refused with TENANT_NOT_FOUND, not retried', async () => {
    const c = client();
    try {
      await expect(c.withTenant('no-such-tenant', emails)).rejects.toMatchObject({
        code: 'TENANT_NOT_FOUND',
      });
    } finally {
      await c.close();
    }
  });
});

describe('after a rotation', () => {
  it('a refused login (its password rotated and the old one retired under a cached descriptor) re-reads the descriptor and reconnects', async () => {
    // Descriptors trusted for a minute: the rotation happens inside that. Every log record kept.
    const logged: { obj: object; msg: string }[] = [];
    const keep = (obj: object, msg: string) => void logged.push({ obj, msg });
    const c = client({ log: { debug: keep, warn: keep } });
    try {
      const before = await descriptorOf(tenants.bridge.slug);
      await c.withTenant(tenants.bridge.slug, emails);
      expect(c.placements()).toContain(placementKey(before));
      const res = await s.app.inject({
        method: 'POST',
        url: `/v1/tenants/${tenants.bridge.slug}/credential-rotations`,
        headers: auth(s.tokens.sre),
        payload: { graceSeconds: 3600 },
      });
      expect(await waitForOperation(s, res.json().operation.id)).toMatchObject({ status: 'succeeded' });
      // The grace period cut short by an operator's retire: the old login is refused from now on.
      await superQuery(s.controlDb, `UPDATE login_rotations SET grace_until = now() WHERE tenant_id = $1`, [
        tenants.bridge.id,
      ]);
      const retire = await s.app.inject({
        method: 'POST',
        url: `/v1/tenants/${tenants.bridge.slug}/credential-rotations`,
        headers: auth(s.tokens.sre),
        payload: { graceSeconds: 3600 },
      });
      expect(await waitForOperation(s, retire.json().operation.id)).toMatchObject({ status: 'succeeded' });
      const now = await descriptorOf(tenants.bridge.slug);
      expect(now.user).toBe(before.user); // two rotations: back on the first login, with a new password
      expect(now.password).not.toBe(before.password);
      expect(await c.withTenant(tenants.bridge.slug, emails)).toContain('bridge@x');
      expect(await c.metrics.registry.getSingleMetricAsString('tenantry_client_retries_total')).toMatch(
        /reason="login"} [1-9]/,
      );
      // The retry is logged with the tenant and the placement, never a password.
      expect(logged).toContainEqual({
        obj: expect.objectContaining({
          slug: tenants.bridge.slug,
          reason: 'login',
          placement: placementKey(now),
        }),
        msg: 'retrying the unit of work',
      });
      const text = JSON.stringify(logged);
      for (const p of [before.password, now.password]) expect(text).not.toContain(p);
    } finally {
      await c.close();
    }
  });
});

describe('on the aws target', () => {
  it('reads the password from the secret its descriptor names, never from the control plane', async () => {
    const d = await descriptorOf(tenants.silo.slug);
    const { password, ...withoutPassword } = d;
    const asked: string[] = [];
    const c = new TenantryClient({
      descriptors: async () => ({
        ...withoutPassword,
        secretRef: 'arn:aws:secretsmanager:eu-west-1:1:secret:t',
      }),
      passwords: async (x) => {
        asked.push(x.secretRef);
        return password as string;
      },
    });
    try {
      expect(await c.withTenant(tenants.silo.slug, emails)).toEqual(['silo@x']);
      expect(new Set(asked)).toEqual(new Set(['arn:aws:secretsmanager:eu-west-1:1:secret:t']));
    } finally {
      await c.close();
    }
  });
});

describe('connections', () => {
  it('a descriptor with no password and no password source is refused clearly', async () => {
    const { password: _, ...d } = await descriptorOf(tenants.silo.slug);
    const c = new TenantryClient({
      descriptors: async () => d,
      retry: { maxAttempts: 1 },
    });
    try {
      await expect(c.withTenant(tenants.silo.slug, emails)).rejects.toMatchObject({ code: 'MISCONFIGURED' });
    } finally {
      await c.close();
    }
  });

  it('keeps working from its cache while the control plane is unreachable', async () => {
    let up = true;
    const d = await descriptorOf(tenants.bridge.slug);
    const c = new TenantryClient({
      descriptors: async () => {
        if (!up) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
        return d;
      },
      descriptorTtlMs: 1,
    });
    try {
      await c.withTenant(tenants.bridge.slug, emails);
      up = false;
      expect(await c.withTenant(tenants.bridge.slug, emails)).toContain('bridge@x');
    } finally {
      await c.close();
    }
  });
});
