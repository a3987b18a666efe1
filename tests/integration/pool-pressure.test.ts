import type { InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Db } from '../../control-plane/src/db/db.js';
import {
  adminUrl,
  auth,
  onboard,
  rand,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';

// A pool of 10, as in production, and 100 requests in flight at once on each route that opens a
// transaction. Before the fix, ten descriptor reads each held a connection (the audit
// transaction) while the secret store asked the same pool for an eleventh: every route, /healthz
// included, hung for good.
const POOL = 10;
const N = 100;

let s: TestStack;
beforeAll(async () => {
  s = await startStack({ TENANTRY_DB_POOL_SIZE: String(POOL) });
});
afterAll(async () => {
  await s?.close();
});

type Inject = InjectOptions;

/** Sends N requests at once; returns the status codes, with each 5xx body for the failure message. */
async function burst(make: (i: number) => Inject): Promise<number[]> {
  const res = await Promise.all(Array.from({ length: N }, (_, i) => s.app.inject(make(i))));
  const fivexx = res.filter((r) => r.statusCode >= 500).map((r) => r.body);
  expect(fivexx).toEqual([]);
  return res.map((r) => r.statusCode);
}

async function healthy() {
  const h = await s.app.inject({ method: 'GET', url: '/healthz' });
  expect(h.statusCode).toBe(200);
}

// A pool that grows under load opens its connections while requests wait: a backend forked and a
// SCRAM exchange each, which held ten concurrent reads for 48 ms in the API benchmark.
describe('the control database pool', () => {
  it('is open to its size from startup (TENANTRY_DB_POOL_MIN defaults to TENANTRY_DB_POOL_SIZE)', () => {
    const { pool } = s.runtime.services.db;
    expect(pool.totalCount).toBe(POOL);
  });

  it('replaces a connection that ends at once, and stops doing so once closed', async () => {
    const db = new Db(adminUrl(s.controlDb), { max: 4, min: 3 });
    try {
      await db.warm();
      expect([db.pool.totalCount, db.pool.idleCount]).toEqual([3, 3]);
      const backends = async () => {
        const cs = await Promise.all([db.pool.connect(), db.pool.connect(), db.pool.connect()]);
        try {
          return await Promise.all(
            cs.map(
              async (c) => (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid,
            ),
          );
        } finally {
          for (const c of cs) c.release();
        }
      };
      const [first] = await backends();
      // (events.once would reject on the pool's 'error', which it emits for the idle connection first.)
      const removed = new Promise((resolve) => db.pool.once('remove', resolve));
      await superQuery(s.controlDb, 'SELECT pg_terminate_backend($1)', [first]);
      await removed;
      // Nothing asks the pool for a connection here: the pool opens the replacement itself.
      await vi.waitFor(() => expect([db.pool.totalCount, db.pool.idleCount]).toEqual([3, 3]), {
        timeout: 5_000,
        interval: 20,
      });
      expect(await backends()).not.toContain(first);
    } finally {
      await db.close();
    }
    expect(db.pool.totalCount).toBe(0);
  });
});

describe('100 concurrent requests against a pool of 10', () => {
  it('descriptor reads all complete, each audited', async () => {
    const t = await onboard(s, 'bridge');
    const codes = await burst(() => ({
      method: 'GET',
      url: `/v1/tenants/${t.slug}/connection`,
      headers: auth(s.tokens.dataplane),
    }));
    expect(codes.every((c) => c === 200)).toBe(true);
    const audited = await superQuery<{ n: number }>(
      s.controlDb,
      `SELECT count(*)::int AS n FROM audit_log WHERE action = 'tenant.connection.read' AND tenant_id = $1`,
      [t.id],
    );
    expect(audited[0]!.n).toBe(N);
    await healthy();
  });

  it('onboardings, promotions, offboardings, tokens, drift runs and policies all answer', async () => {
    const tag = rand(3);
    const created = await burst((i) => ({
      method: 'POST',
      url: '/v1/tenants',
      headers: auth(s.tokens['sales-ops']),
      payload: { slug: `pp-${tag}-${i}`, name: `pp ${i}`, tier: 'pool' },
    }));
    expect(created.every((c) => c === 202)).toBe(true);

    const target = await onboard(s, 'pool');
    // One promotion is accepted; the others find it in flight.
    const promoted = await burst(() => ({
      method: 'POST',
      url: `/v1/tenants/${target.slug}/promotions`,
      headers: auth(s.tokens.sre),
      payload: { targetTier: 'bridge' },
    }));
    expect(promoted.filter((c) => c === 202)).toHaveLength(1);
    expect(promoted.every((c) => c === 202 || c === 409)).toBe(true);

    const gone = await onboard(s, 'pool');
    const offboarded = await burst(() => ({
      method: 'DELETE',
      url: `/v1/tenants/${gone.slug}`,
      headers: { ...auth(s.tokens.admin), confirm: gone.slug },
    }));
    expect(offboarded.filter((c) => c === 202)).toHaveLength(1);

    const made: string[] = [];
    const tokens = await burst((i) => ({
      method: 'POST',
      url: '/v1/tokens',
      headers: auth(s.tokens.admin),
      payload: { name: `pp-${tag}-${i}`, role: 'sales-ops' },
    }));
    expect(tokens.every((c) => c === 201)).toBe(true);
    const listed = await s.app.inject({ method: 'GET', url: '/v1/tokens', headers: auth(s.tokens.admin) });
    for (const t of listed.json().items as { id: string; name: string }[])
      if (t.name.startsWith(`pp-${tag}-`)) made.push(t.id);
    expect(made).toHaveLength(N);
    const revoked = await burst((i) => ({
      method: 'DELETE',
      url: `/v1/tokens/${made[i]}`,
      headers: auth(s.tokens.admin),
    }));
    expect(revoked.every((c) => c === 200)).toBe(true);

    // The promotion accepted above, run to its end, then rolled back and resumed at once.
    const ops = await s.app.inject({
      method: 'GET',
      url: `/v1/audit?tenantId=${target.id}`,
      headers: auth(s.tokens.admin),
    });
    const promoteOp = (ops.json().items as { action: string; operationId: string | null }[]).find(
      (a) => a.action === 'tenant.promote',
    )?.operationId;
    expect(promoteOp).toMatch(/^op_[0-9a-f]{28}$/);
    await waitForOperation(s, promoteOp!, 60_000);
    const rolledBack = await burst(() => ({
      method: 'POST',
      url: `/v1/tenants/${target.slug}/promotions/${promoteOp}/rollback`,
      headers: auth(s.tokens.sre),
    }));
    expect(rolledBack.filter((c) => c === 202)).toHaveLength(1);
    expect(rolledBack.every((c) => c === 202 || c === 409)).toBe(true);
    const resumed = await burst(() => ({
      method: 'POST',
      url: `/v1/operations/${promoteOp}/resume`,
      headers: auth(s.tokens.sre),
    }));
    // A promotion that succeeded is not resumable; each answer says so, none hangs.
    expect(resumed.every((c) => c === 409)).toBe(true);

    const runs = await burst(() => ({ method: 'POST', url: '/v1/drift-runs', headers: auth(s.tokens.sre) }));
    // Each is queued or finds one queued (202), or is refused while one runs (409).
    expect(runs.every((c) => c === 202 || c === 409)).toBe(true);

    const policies = await burst(() => ({
      method: 'PUT',
      url: '/v1/drift-policies',
      headers: auth(s.tokens.admin),
      payload: { tier: 'bridge', mode: 'report', ignoreFields: [] },
    }));
    expect(policies.every((c) => c === 200)).toBe(true);
    await healthy();
  });
});

describe('Db', () => {
  it('refuses a second connection from the pool a caller already holds, instead of deadlocking', async () => {
    const db = new Db(
      (s.runtime.services.db.pool as unknown as { options: { connectionString: string } }).options
        .connectionString,
      { max: 2, acquireTimeoutMs: 2000 },
    );
    try {
      await expect(db.tx(async () => db.query('SELECT 1'))).rejects.toThrow(/second connection/);
      await expect(db.tx(async () => db.tx(async () => 1))).rejects.toThrow(/second connection/);
      // The relaxed pool is another pool: a transaction may use it.
      expect(await db.tx(async () => (await db.relaxedQuery('SELECT 1 AS x')).rows[0])).toEqual({ x: 1 });
      // Outside any transaction the pool is free again.
      expect((await db.query('SELECT 1 AS x')).rows[0]).toEqual({ x: 1 });
    } finally {
      await db.close();
    }
  });

  it("the server's pool checks as configured: the suite's stacks run with TENANTRY_DB_HOLD_CHECK=on", async () => {
    const db = s.runtime.services.db;
    await expect(db.tx(async () => db.query('SELECT 1'))).rejects.toThrow(/second connection/);
  });

  it('without the check, the same bug waits for the acquire timeout, rolls back and leaves the pool usable', async () => {
    const db = new Db(
      (s.runtime.services.db.pool as unknown as { options: { connectionString: string } }).options
        .connectionString,
      { max: 1, acquireTimeoutMs: 300, checkHolds: false },
    );
    try {
      // The transaction holds the pool's one connection and asks it for another: no hang, a timeout.
      await expect(
        db.tx(async (q) => {
          await q.query('SELECT 1');
          return db.query('SELECT 1');
        }),
      ).rejects.toThrow(/timeout exceeded when trying to connect/);
      // Rolled back and released: the pool answers again.
      expect((await db.query('SELECT 1 AS x')).rows[0]).toEqual({ x: 1 });
      expect(db.pool.totalCount).toBe(1);
    } finally {
      await db.close();
    }
  });

  it('a wedged pool is reported by /healthz as a 503 naming the exhaustion, never a hang', async () => {
    const db = s.runtime.services.db;
    // Hold every connection of the main pool (as ten stuck requests would).
    const held = await Promise.all(Array.from({ length: POOL }, () => db.pool.connect()));
    try {
      const stack = s;
      const h = await stack.app.inject({ method: 'GET', url: '/healthz' });
      expect(h.statusCode).toBe(503);
      expect(h.json().error.code).toBe('DATABASE_UNAVAILABLE');
      expect(h.json().error.message).toMatch(/pool is exhausted/);
    } finally {
      for (const c of held) c.release();
    }
    await healthy();
  });
});
