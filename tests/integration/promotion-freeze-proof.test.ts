import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth, connectionOf, startStack, superQuery, type TestStack } from '../helpers/runtime.js';
import {
  asTenant,
  atPoint,
  type Descriptor,
  getOperation,
  getTenant,
  objectName,
  promote,
  rollback,
  seedPool,
} from './promotion-helpers.js';

/**
 * A promotion's write freeze is proven, not assumed: a superuser's DISABLE TRIGGER (what
 * pg_restore --disable-triggers does), a replaced guard function, a freeze that lapsed while the
 * control plane was gone, or a write past the freeze after the drain. No worker runs here: every
 * operation is run by hand, so each one stops exactly where the test says.
 */
let s: TestStack;
beforeAll(async () => {
  s = await startStack({
    TENANTRY_ROLE: 'api',
    TENANTRY_PROMOTION_FREEZE_DEADLINE_MS: '1000',
    TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: '600000',
  });
});
afterAll(async () => {
  await s?.close();
});

const run = (id: string) => s.runtime.executor.run(id).catch(() => undefined);

async function newTenant(tier: 'pool' | 'bridge', rows = 3) {
  const t = await onboardByHand(tier);
  const d = await connectionOf(s, t.slug);
  if (tier === 'pool') await seedPool(s, t.id, rows);
  else {
    await asTenant(d, (c) =>
      c.query(`INSERT INTO users (tenant_id, email) SELECT $1, 'u' || g FROM generate_series(1, $2::int) g`, [
        t.id,
        rows,
      ]),
    );
  }
  return { ...t, d };
}

async function onboardByHand(tier: 'pool' | 'bridge') {
  const slug = `fp-${tier}-${Math.random().toString(36).slice(2, 8)}`;
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(s.tokens['sales-ops']),
    payload: { slug, name: slug, tier },
  });
  await run(res.json().operation.id);
  return { slug, id: res.json().tenant.id as string };
}

async function startPromotion(slug: string, tier: string) {
  const res = await promote(s, slug, tier);
  expect(res.statusCode).toBe(202);
  return res.json().operation.id as string;
}

const userCount = async (d: Descriptor) =>
  (await asTenant(d, (c) => c.query<{ n: number }>('SELECT count(*)::int AS n FROM users'))).rows[0]!.n;

/** The guards of a placement's tables, disabled or enabled as a superuser would. */
async function setGuards(database: string, tables: string[], on: boolean, names = 'USER') {
  for (const t of tables)
    await superQuery(database, `ALTER TABLE ${t} ${on ? 'ENABLE' : 'DISABLE'} TRIGGER ${names}`);
}

function expectAbortedForFreeze(op: Record<string, unknown>) {
  expect(op.status).toBe('failed');
  expect(String(op.error)).toMatch(/write freeze of .* does not hold/);
  const steps = op.steps as { name: string; status: string }[];
  expect(steps.find((x) => x.name === 'abort')?.status).toBe('succeeded');
  expect(steps.find((x) => x.name === 'drain')?.status).not.toBe('succeeded');
}

describe('the freeze is proven before the drain', () => {
  it('bridge: guards disabled by a superuser abort the promotion; the tenant stays, every row in place, writable', async () => {
    const t = await newTenant('bridge');
    const schema = objectName(t.slug);
    const tables = ['users', 'documents', 'settings'].map((x) => `${schema}.${x}`);
    await setGuards(s.dataDb, tables, false);
    try {
      const id = await startPromotion(t.slug, 'silo');
      await run(id);
      expectAbortedForFreeze(await getOperation(s, id));
      expect((await getTenant(s, t.slug)).tier).toBe('bridge');
      expect((await connectionOf(s, t.slug)).tier).toBe('bridge');
      expect(await userCount(t.d)).toBe(3);
      // The abort lifted the freeze: the tenant writes as before.
      await asTenant(t.d, (c) =>
        c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'after@x')`, [t.id]),
      );
      expect(await userCount(t.d)).toBe(4);
    } finally {
      await setGuards(s.dataDb, tables, true);
    }
  });

  it('pool: one statement-level guard disabled on a shared table aborts the promotion', async () => {
    const t = await newTenant('pool');
    await setGuards(s.dataDb, ['pool.documents'], false, 'tenantry_freeze_ins');
    try {
      const id = await startPromotion(t.slug, 'silo');
      await run(id);
      const op = await getOperation(s, id);
      expectAbortedForFreeze(op);
      expect(String(op.error)).toMatch(/documents: guard tenantry_freeze_ins disabled/);
      expect((await connectionOf(s, t.slug)).tier).toBe('pool');
      expect(await userCount(t.d)).toBe(3);
    } finally {
      await setGuards(s.dataDb, ['pool.documents'], true, 'tenantry_freeze_ins');
    }
  });

  it('a guard function replaced by a superuser (still enabled, still named) fails the probe write', async () => {
    const t = await newTenant('bridge');
    const [fn] = await superQuery<{ def: string }>(
      s.dataDb,
      `SELECT pg_get_functiondef('tenantry_meta.frozen_write_check()'::regprocedure) AS def`,
    );
    await superQuery(
      s.dataDb,
      `CREATE OR REPLACE FUNCTION tenantry_meta.frozen_write_check() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN RETURN NULL; END $$`,
    );
    try {
      const id = await startPromotion(t.slug, 'silo');
      await run(id);
      const op = await getOperation(s, id);
      expectAbortedForFreeze(op);
      expect(String(op.error)).toMatch(/a write as the tenant went through on .*users/);
      expect((await connectionOf(s, t.slug)).tier).toBe('bridge');
    } finally {
      await superQuery(s.dataDb, fn!.def);
    }
  });

  it('a bridge onboarding that finds the guard function outdated replaces it before guarding its tables', async () => {
    const fnComment = async () =>
      (
        await superQuery<{ c: string | null }>(
          s.dataDb,
          `SELECT obj_description('tenantry_meta.frozen_write_check()'::regprocedure, 'pg_proc') AS c`,
        )
      )[0]?.c;
    const current = await fnComment();
    expect(current).toMatch(/^tenantry frozen-write check v\d+$/);
    // The check is made inside the schema's transaction: an outdated version fails it, nothing of the
    // schema stays, freeze support is made again, and the schema is created after it.
    await superQuery(
      s.dataDb,
      `COMMENT ON FUNCTION tenantry_meta.frozen_write_check() IS 'tenantry frozen-write check v0'`,
    );
    const t = await onboardByHand('bridge');
    expect((await getTenant(s, t.slug)).status).toBe('active');
    expect(await fnComment()).toBe(current);
    const guarded = await superQuery<{ relname: string }>(
      s.dataDb,
      `SELECT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
        WHERE c.relnamespace = $1::regnamespace AND g.tgname = 'tenantry_freeze_guard' AND g.tgenabled = 'O' ORDER BY 1`,
      [objectName(t.slug)],
    );
    expect(guarded.map((r) => r.relname)).toEqual(['documents', 'settings', 'users']);
  });

  it('a rollback proves the freeze of the placement it leaves, and aborts if it does not hold', async () => {
    const t = await newTenant('pool');
    const promoId = await startPromotion(t.slug, 'silo');
    await run(promoId);
    expect((await getOperation(s, promoId)).status).toBe('succeeded');
    const silo = objectName(t.slug);
    const d = await connectionOf(s, t.slug);
    await setGuards(silo, ['app.users', 'app.documents', 'app.settings'], false);
    const res = await rollback(s, t.slug, promoId);
    expect(res.statusCode).toBe(202);
    const id = res.json().operation.id as string;
    await run(id);
    const op = await getOperation(s, id);
    expect(op.status).toBe('failed');
    expect(String(op.error)).toMatch(/write freeze of app does not hold/);
    expect((await connectionOf(s, t.slug)).tier).toBe('silo');
    expect(await userCount(d)).toBe(3);
    await setGuards(silo, ['app.users', 'app.documents', 'app.settings'], true);
  });
});

describe('the freeze has a deadline the database enforces', () => {
  it('a runner gone inside the freeze holds writes only until the deadline; the resumed promotion re-freezes, re-drains and loses nothing', async () => {
    const t = await newTenant('bridge');
    const schema = objectName(t.slug);
    // The runner "dies" inside the drain: a retryable failure, the operation queued again, and
    // nobody renewing the freeze.
    const died = atPoint(s, t.id, 'drain:start', async () => {
      throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
    });
    const id = await startPromotion(t.slug, 'silo');
    await run(id);
    await died.reached;
    expect((await getOperation(s, id)).status).toBe('queued');
    // Gate on the database's own deadline passing (bounded): no renewal, so it must.
    const until = Date.now() + 30_000;
    for (;;) {
      const [r] = await superQuery<{ lapsed: boolean }>(
        s.dataDb,
        `SELECT coalesce(bool_and(frozen_until <= clock_timestamp()), false) AS lapsed
           FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2`,
        [t.id, schema],
      );
      if (r?.lapsed) break;
      expect(Date.now() < until).toBe(true);
      await new Promise((r) => setTimeout(r, 50));
    }
    // The tenant writes again without any control plane: the freeze ended by itself.
    await asTenant(t.d, (c) =>
      c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'lapse@x')`, [t.id]),
    );
    // The promotion resumes: it freezes anew, drains that write too, and cuts over.
    await run(id);
    const op = await getOperation(s, id);
    expect(op.error).toBeUndefined();
    expect(op.status).toBe('succeeded');
    const moved = await connectionOf(s, t.slug);
    expect(moved.tier).toBe('silo');
    const emails = await asTenant(moved, (c) =>
      c.query<{ email: string }>('SELECT email FROM users ORDER BY email'),
    );
    expect(emails.rows.map((r) => r.email)).toEqual(['lapse@x', 'u1', 'u2', 'u3']);
  });
});

describe('after the flip', () => {
  it('a write the source took past its freeze after the drain is carried over, and the promotion does not report success until resumed', async () => {
    const t = await newTenant('bridge');
    const schema = objectName(t.slug);
    const tables = ['users', 'documents', 'settings'].map((x) => `${schema}.${x}`);
    // Right after the flip, a superuser disables the source's guards and an old session writes.
    atPoint(s, t.id, 'cutover:after-flip', async () => {
      await setGuards(s.dataDb, tables, false);
      await asTenant(t.d, (c) =>
        c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'late@x')`, [t.id]),
      );
      await setGuards(s.dataDb, tables, true);
    });
    const id = await startPromotion(t.slug, 'silo');
    await run(id);
    const op = await getOperation(s, id);
    expect(op.status).toBe('failed');
    expect(String(op.error)).toMatch(/source took 1 write\(s\) after the drain point/);
    expect(op.progress.lateWrites).toBe(1);
    // Resumed, it finishes forward with the late write on the new placement.
    const resumed = await s.app.inject({
      method: 'POST',
      url: `/v1/operations/${id}/resume`,
      headers: auth(s.tokens.sre),
    });
    expect(resumed.statusCode).toBe(202);
    await run(id);
    expect((await getOperation(s, id)).status).toBe('succeeded');
    const moved = await connectionOf(s, t.slug);
    const emails = await asTenant(moved, (c) =>
      c.query<{ email: string }>('SELECT email FROM users ORDER BY email'),
    );
    expect(emails.rows.map((r) => r.email)).toEqual(['late@x', 'u1', 'u2', 'u3']);
  });
});
