import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  adminUrl,
  auth,
  connectionOf,
  onboard,
  startStack,
  superQuery,
  type TestStack,
  tenantClient,
  waitForOperation,
} from '../helpers/runtime.js';
import { asTenant, atPoint, getTenant, objectName, promotionLeftovers } from './promotion-helpers.js';

let s: TestStack;
beforeAll(async () => {
  s = await startStack({ TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: '600000' });
});
afterAll(async () => {
  await s?.close();
});

const promote = (slug: string, targetTier: string) =>
  s.app.inject({
    method: 'POST',
    url: `/v1/tenants/${slug}/promotions`,
    headers: auth(s.tokens.sre),
    payload: { targetTier },
  });

async function seed(tenantId: string, n: number) {
  await superQuery(
    s.dataDb,
    `INSERT INTO pool.users (tenant_id, email) SELECT $1, 'u' || g || '@x' FROM generate_series(1, $2) g`,
    [tenantId, n],
  );
}

/** The promotion failed its verification, was aborted, and left the tenant on its pool placement, writable, whole. */
async function expectAbortedOnPool(t: { id: string; slug: string }, opId: string, rows: number) {
  const op = await waitForOperation(s, opId, 60_000);
  expect(op.status).toBe('failed');
  expect(op.error).toMatch(/verification failed on table users/);
  expect(op.steps.find((x) => x.name === 'abort')?.status).toBe('succeeded');
  expect(await getTenant(s, t.slug)).toMatchObject({ tier: 'pool', status: 'active' });
  const name = objectName(t.slug);
  expect(await superQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [name])).toHaveLength(
    0,
  );
  expect(
    await superQuery(s.dataDb, `SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE 'tenantry_promo_%'`),
  ).toHaveLength(0);
  expect(await promotionLeftovers(s, t.slug)).toBe(0);
  // Unfrozen: the pool descriptor writes again, and no row was lost.
  const d = await connectionOf(s, t.slug);
  expect(d.tier).toBe('pool');
  const n = await asTenant(d, async (c) => {
    await c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'after@x')`, [t.id]);
    return (await c.query('SELECT count(*)::int AS n FROM users')).rows[0].n;
  });
  expect(n).toBe(rows + 1);
}

/** Writes into the promotion's target behind its back, as only a superuser in replica mode still can. */
async function tamper(slug: string, sql: string, params: unknown[]) {
  const c = new pg.Client({ connectionString: adminUrl(objectName(slug)) });
  await c.connect();
  try {
    await c.query('SET session_replication_role = replica');
    await c.query(sql, params);
  } finally {
    await c.end();
  }
}

describe('verification', () => {
  it('a target that is not yet cut over refuses every write but the promotion’s own', async () => {
    const t = await onboard(s, 'pool');
    await seed(t.id, 20);
    const res = await promote(t.slug, 'silo');
    const refused = atPoint(s, t.id, 'catch-up:start', async () => {
      await expect(
        superQuery(objectName(t.slug), `INSERT INTO app.users (tenant_id, email) VALUES ($1, 'ghost@x')`, [
          t.id,
        ]),
      ).rejects.toThrow(
        /read-only while it moves to another tier \(this placement takes over at the cutover\)/,
      );
    });
    const op = await waitForOperation(s, res.json().operation.id, 60_000);
    await refused.reached;
    expect(op.status).toBe('succeeded');
  });

  it('a row the source never had (a forced count mismatch) aborts the promotion', async () => {
    const t = await onboard(s, 'pool');
    await seed(t.id, 200);
    atPoint(s, t.id, 'catch-up:start', () =>
      tamper(t.slug, `INSERT INTO app.users (tenant_id, email) VALUES ($1, 'ghost@x')`, [t.id]),
    );
    const res = await promote(t.slug, 'silo');
    await expectAbortedOnPool(t, res.json().operation.id, 200);
  });

  it('a changed row the stream never touched (same counts, other content) aborts the promotion', async () => {
    const t = await onboard(s, 'pool');
    await seed(t.id, 200);
    atPoint(s, t.id, 'catch-up:start', () =>
      tamper(t.slug, `UPDATE app.users SET name = 'corrupted' WHERE tenant_id = $1 AND email = 'u7@x'`, [
        t.id,
      ]),
    );
    const res = await promote(t.slug, 'silo');
    await expectAbortedOnPool(t, res.json().operation.id, 200);
  });
});

describe('rollback within the window', () => {
  it.each(['silo', 'bridge'] as const)(
    'pool → %s → back to pool brings back the rows written after cutover',
    async (target) => {
      const t = await onboard(s, 'pool');
      await seed(t.id, 100);
      const res = await promote(t.slug, target);
      const promoId = res.json().operation.id;
      expect((await waitForOperation(s, promoId, 60_000)).status).toBe('succeeded');
      const d = await connectionOf(s, t.slug);
      expect(d.tier).toBe(target);
      const c = await tenantClient(d);
      await c.query(
        `INSERT INTO users (tenant_id, email) SELECT $1, 'post' || g || '@x' FROM generate_series(1, 25) g`,
        [t.id],
      );
      await c.query(`DELETE FROM users WHERE tenant_id = $1 AND email = 'u1@x'`, [t.id]);
      await c.end();

      const rb = await s.app.inject({
        method: 'POST',
        url: `/v1/tenants/${t.slug}/promotions/${promoId}/rollback`,
        headers: auth(s.tokens.sre),
      });
      expect(rb.statusCode).toBe(202);
      const op = await waitForOperation(s, rb.json().operation.id, 60_000);
      expect(op.error).toBeUndefined();
      expect(op.status).toBe('succeeded');
      const back = await connectionOf(s, t.slug);
      expect(back).toMatchObject({ tier: 'pool', schema: 'pool', tenantSetting: 'app.tenant_id' });
      const rows = await superQuery<{ email: string }>(
        s.dataDb,
        'SELECT email FROM pool.users WHERE tenant_id = $1',
        [t.id],
      );
      expect(rows).toHaveLength(124);
      expect(rows.map((r) => r.email)).toContain('post25@x');
      expect(rows.map((r) => r.email)).not.toContain('u1@x');
      // The pool placement is writable again; the target is gone.
      const p = await tenantClient(back);
      await p.query('BEGIN');
      await p.query('SELECT set_config($1, $2, true)', ['app.tenant_id', t.id]);
      await p.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'again@x')`, [t.id]);
      await p.query('COMMIT');
      await p.end();
      const name = objectName(t.slug);
      expect(
        await superQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [name]),
      ).toHaveLength(0);
      expect(
        await superQuery(s.dataDb, 'SELECT 1 FROM pg_namespace WHERE nspname = $1', [name]),
      ).toHaveLength(0);
      expect(await superQuery('postgres', 'SELECT 1 FROM pg_roles WHERE rolname = $1', [name])).toHaveLength(
        0,
      );
      const got = (
        await s.app.inject({ method: 'GET', url: `/v1/tenants/${t.slug}`, headers: auth(s.tokens.sre) })
      ).json();
      expect(got).toMatchObject({ tier: 'pool', status: 'active' });
      // A second rollback of the same promotion is refused.
      const again = await s.app.inject({
        method: 'POST',
        url: `/v1/tenants/${t.slug}/promotions/${promoId}/rollback`,
        headers: auth(s.tokens.sre),
      });
      expect(again.statusCode).toBe(409);
      expect(again.json().error.code).toBe('ROLLBACK_NOT_AVAILABLE');
    },
  );

  it('after the window, the source is deleted by the cleanup job and rollback is refused', async () => {
    const short = await startStack({ TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: '0' });
    try {
      const t = await onboard(short, 'pool');
      await superQuery(
        short.dataDb,
        `INSERT INTO pool.users (tenant_id, email) SELECT $1, 'u' || g FROM generate_series(1, 50) g`,
        [t.id],
      );
      const res = await short.app.inject({
        method: 'POST',
        url: `/v1/tenants/${t.slug}/promotions`,
        headers: auth(short.tokens.sre),
        payload: { targetTier: 'bridge' },
      });
      const promoId = res.json().operation.id;
      expect((await waitForOperation(short, promoId, 60_000)).status).toBe('succeeded');
      const until = Date.now() + 20_000;
      for (;;) {
        const left = await superQuery<{ n: number }>(
          short.dataDb,
          'SELECT count(*)::int AS n FROM pool.users WHERE tenant_id = $1',
          [t.id],
        );
        const marker = await superQuery<{ reason: string }>(
          short.dataDb,
          'SELECT reason FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1',
          [t.id],
        );
        // The rows are gone; the tenant's id stays refused on the shared pool (it moved).
        if (left[0]!.n === 0 && marker[0]?.reason === 'moved') break;
        if (Date.now() > until)
          throw new Error(`source not cleaned: ${left[0]!.n} rows, marker ${JSON.stringify(marker)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const rb = await short.app.inject({
        method: 'POST',
        url: `/v1/tenants/${t.slug}/promotions/${promoId}/rollback`,
        headers: auth(short.tokens.sre),
      });
      expect(rb.statusCode).toBe(409);
      expect(rb.json().error.code).toBe('ROLLBACK_NOT_AVAILABLE');
      const d = await connectionOf(short, t.slug);
      const c = await tenantClient(d);
      expect((await c.query('SELECT count(*)::int AS n FROM users')).rows[0].n).toBe(50);
      await c.end();
      const audit = await short.app.inject({
        method: 'GET',
        url: `/v1/audit?tenant=${t.slug}`,
        headers: auth(short.tokens.sre),
      });
      expect(audit.json().items.map((a: { action: string }) => a.action)).toEqual(
        expect.arrayContaining([
          'tenant.promote',
          'tenant.promotion.cutover',
          'tenant.promotion.source-deleted',
        ]),
      );
    } finally {
      await short.close();
    }
  });
});

describe('isolation after promotion', () => {
  it('the promoted tenant and the pool tenants cannot reach each other', async () => {
    const a = await onboard(s, 'pool');
    const b = await onboard(s, 'pool');
    await seed(a.id, 10);
    await seed(b.id, 10);
    const res = await promote(a.slug, 'silo');
    expect((await waitForOperation(s, res.json().operation.id, 60_000)).status).toBe('succeeded');
    const da = await connectionOf(s, a.slug);
    const db = await connectionOf(s, b.slug);
    // a's new role cannot connect to the shared database at all.
    await expect(tenantClient({ ...da, database: s.dataDb })).rejects.toThrow(/permission denied|CONNECT/);
    // b (pool) cannot see a's rows, neither the frozen source copy nor the silo.
    const c = await tenantClient(db);
    await c.query('BEGIN');
    await c.query('SELECT set_config($1, $2, true)', ['app.tenant_id', b.id]);
    expect(
      (await c.query('SELECT count(*)::int AS n FROM users WHERE tenant_id = $1', [a.id])).rows[0].n,
    ).toBe(0);
    await c.query('COMMIT');
    await c.end();
    await expect(tenantClient({ ...db, database: da.database })).rejects.toThrow(/permission denied|CONNECT/);
  });
});
