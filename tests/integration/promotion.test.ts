import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  auth,
  connectionOf,
  onboard,
  startStack,
  superQuery,
  type TestStack,
  tenantClient,
  waitForOperation,
} from '../helpers/runtime.js';
import {
  asTenant,
  atPoint,
  getOperation,
  getTenant,
  isCount,
  objectName,
  pauseAt,
  promote,
  promoteAndWait,
  promotionLeftovers,
  rollback,
  seedPool,
} from './promotion-helpers.js';

let s: TestStack;
beforeAll(async () => {
  s = await startStack({ TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: '600000' });
});
afterAll(async () => {
  await s?.close();
});

describe('promotion API', () => {
  it('refuses a move that is not a promotion with 422 PROMOTION_NOT_ALLOWED', async () => {
    const t = await onboard(s, 'bridge');
    for (const target of ['pool', 'bridge', 'account']) {
      const res = await promote(s, t.slug, target);
      expect(res.statusCode).toBe(422);
      expect(res.json().error.code).toBe('PROMOTION_NOT_ALLOWED');
    }
  });

  it('is for sre and admin only', async () => {
    const t = await onboard(s, 'pool');
    expect((await promote(s, t.slug, 'silo', s.tokens['sales-ops'])).statusCode).toBe(403);
    expect((await promote(s, t.slug, 'silo', s.tokens.dataplane)).statusCode).toBe(403);
  });

  it('shows the current step and rows copied while it runs, and answers 409 to a second operation', async () => {
    const t = await onboard(s, 'pool');
    await seedPool(s, t.id, 50);
    const gate = pauseAt(s, t.id, 'copy:after-first-table');
    const res = await promote(s, t.slug, 'silo');
    expect(res.statusCode).toBe(202);
    const id: string = res.json().operation.id;
    try {
      await gate.reached;
      const op = await getOperation(s, id);
      expect(op.status).toBe('running');
      expect(op.currentStep).toBe('copy');
      // The first table in copy order (documents) is reported before the step ends.
      expect(op.progress.rowsCopied).toEqual({ documents: 50 });
      const again = await promote(s, t.slug, 'bridge');
      expect(again.statusCode).toBe(409);
      expect(again.json().error.code).toBe('OPERATION_IN_PROGRESS');
      const off = await s.app.inject({
        method: 'DELETE',
        url: `/v1/tenants/${t.slug}`,
        headers: { ...auth(s.tokens.sre), confirm: t.slug },
      });
      expect(off.statusCode).toBe(409);
      expect(off.json().error.code).toBe('OPERATION_IN_PROGRESS');
    } finally {
      gate.open();
    }
    const done = await waitForOperation(s, id, 60_000);
    expect(done.status).toBe('succeeded');
    expect((await getOperation(s, id)).currentStep).toBeNull();
  });
});

describe.each([
  ['pool', 'bridge'],
  ['pool', 'silo'],
  ['bridge', 'silo'],
] as const)('%s → %s', (from, to) => {
  it('moves every row, reports progress, cuts the descriptor over, and leaves the source frozen', async () => {
    const t = await onboard(s, from);
    const before = await connectionOf(s, t.slug);
    if (from === 'pool') await seedPool(s, t.id, 500);
    else {
      await superQuery(
        s.dataDb,
        `INSERT INTO ${before.schema}.users (tenant_id, email) SELECT $1, 'u' || g FROM generate_series(1, 300) g`,
        [t.id],
      );
    }
    const { id, op } = await promoteAndWait(s, t.slug, to);
    expect(op.error).toBeUndefined();
    expect(op.status).toBe('succeeded');
    const full = await getOperation(s, id);
    expect(full.progress.rowsCopied.users).toBe(from === 'pool' ? 500 : 300);
    expect(full.progress.writeFreezeMs).toSatisfy(isCount);
    // Read inside the drain session after the slot was asserted, and by the lag watch while the slot
    // held WAL: byte counts, never null.
    expect(full.progress.replicationLagBytes).toSatisfy(isCount);
    expect(full.progress.retainedWalBytes).toSatisfy(isCount);
    expect(full.progress.verification.full.source.users.rows).toBe(from === 'pool' ? 500 : 300);
    expect(full.progress).not.toHaveProperty('deferredDdl');
    expect(await getTenant(s, t.slug)).toMatchObject({ tier: to, status: 'active' });
    const after = await connectionOf(s, t.slug);
    expect(after.tier).toBe(to);
    const c = await tenantClient(after);
    try {
      const { rows } = await c.query('SELECT count(*)::int AS n FROM users');
      expect(rows[0].n).toBe(from === 'pool' ? 500 : 300);
      await c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'new@x')`, [t.id]);
      // Indexes and constraints were rebuilt on the target.
      await expect(
        c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'new@x')`, [t.id]),
      ).rejects.toThrow(/duplicate key/);
    } finally {
      await c.end();
    }
    if (from === 'pool') {
      // The shared source is frozen for this tenant only, with a clear error.
      await expect(
        asTenant(before, (p) =>
          p.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'late@x')`, [t.id]),
        ),
      ).rejects.toThrow(/read-only while it moves/);
    } else {
      // The bridge role kept no way into the shared database: the old descriptor cannot even connect.
      await expect(tenantClient(before)).rejects.toThrow(/permission denied for database/);
      const frozen = await superQuery(
        s.dataDb,
        'SELECT 1 FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2',
        [t.id, before.schema],
      );
      expect(frozen).toHaveLength(1);
    }
    const slots = await superQuery(
      s.dataDb,
      `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'tenantry_promo_%'`,
    );
    expect(slots).toHaveLength(0);
    expect(await promotionLeftovers(s, t.slug)).toBe(0);
  });
});

describe('bridge → silo keeps the bridge descriptor working until the cutover', () => {
  async function bridgeTenant() {
    const t = await onboard(s, 'bridge');
    const d = await connectionOf(s, t.slug);
    await asTenant(d, (c) =>
      c.query(`INSERT INTO users (tenant_id, email) SELECT $1, 'u' || g FROM generate_series(1, 20) g`, [
        t.id,
      ]),
    );
    return { ...t, d };
  }
  const count = (c: { query: (q: string) => Promise<{ rows: { n: number }[] }> }) =>
    c.query('SELECT count(*)::int AS n FROM users').then((r) => r.rows[0]!.n);

  it('new bridge sessions read and write during the move, and their rows arrive', async () => {
    const t = await bridgeTenant();
    const during = atPoint(s, t.id, 'copy:after-first-table', async () => {
      // A session opened now, on the live bridge role, during the move.
      await asTenant(t.d, (c) =>
        c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'during@x')`, [t.id]),
      );
    });
    const { op } = await promoteAndWait(s, t.slug, 'silo');
    during.clear();
    await during.reached;
    expect(op.error).toBeUndefined();
    const d = await connectionOf(s, t.slug);
    expect(d.tier).toBe('silo');
    expect(await asTenant(d, count)).toBe(21);
  });

  it('after an abort, the bridge role works exactly as before', async () => {
    const t = await bridgeTenant();
    const boom = atPoint(s, t.id, 'apply:before-advance', async () => {
      throw Object.assign(new Error('injected failure'), { code: 'XX000' });
    });
    const during = atPoint(s, t.id, 'copy:after-first-table', async () => {
      await asTenant(t.d, (c) =>
        c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'during@x')`, [t.id]),
      );
    });
    void boom;
    const { op } = await promoteAndWait(s, t.slug, 'silo');
    during.clear();
    expect(op.status).toBe('failed');
    expect(op.error).toMatch(/injected failure/);
    expect(op.steps.find((x) => x.name === 'abort')?.status).toBe('succeeded');
    expect(await getTenant(s, t.slug)).toMatchObject({ tier: 'bridge', status: 'active' });
    expect(await connectionOf(s, t.slug)).toMatchObject({ tier: 'bridge', schema: t.d.schema });
    const n = await asTenant(t.d, async (c) => {
      await c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'after-abort@x')`, [t.id]);
      return count(c);
    });
    expect(n).toBe(22);
    const role = await superQuery<{ config: string[] }>(
      'postgres',
      `SELECT s.setconfig AS config FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
        WHERE r.rolname = $1 AND s.setdatabase = 0`,
      [objectName(t.slug)],
    );
    expect(role[0]?.config).toContain(`search_path=${t.d.schema}`);
    expect(
      await superQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [objectName(t.slug)]),
    ).toHaveLength(0);
    expect(await promotionLeftovers(s, t.slug)).toBe(0);
  });

  it('after a rollback, the bridge role reads and writes its schema again, with the silo rows', async () => {
    const t = await bridgeTenant();
    const { id, op } = await promoteAndWait(s, t.slug, 'silo');
    expect(op.status).toBe('succeeded');
    const silo = await connectionOf(s, t.slug);
    // During the window, the silo role cannot reach the shared database.
    await expect(tenantClient({ ...silo, database: s.dataDb })).rejects.toThrow(
      /permission denied for database/,
    );
    await asTenant(silo, (c) =>
      c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'on-silo@x')`, [t.id]),
    );
    const rb = await rollback(s, t.slug, id);
    expect(rb.statusCode).toBe(202);
    const back = await waitForOperation(s, rb.json().operation.id, 60_000);
    expect(back.error).toBeUndefined();
    expect(await connectionOf(s, t.slug)).toMatchObject({ tier: 'bridge', schema: t.d.schema });
    const n = await asTenant(t.d, async (c) => {
      await c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'after-rollback@x')`, [t.id]);
      return count(c);
    });
    expect(n).toBe(22);
  });
});

describe('one promotion after another, inside the first rollback window', () => {
  it("pool → bridge → silo: each source is deleted at its window's end, the current placement never", async () => {
    const t = await onboard(s, 'pool');
    await seedPool(s, t.id, 30);
    const first = await promoteAndWait(s, t.slug, 'bridge');
    expect(first.op.status).toBe('succeeded');
    const second = await promoteAndWait(s, t.slug, 'silo');
    expect(second.op.error).toBeUndefined();
    expect(second.op.status).toBe('succeeded');
    // The first window ends now: the pool rows go, although the tenant is no longer on bridge.
    await s.runtime.executor.cleanupPromotion(first.id);
    await s.runtime.executor.cleanupPromotion(second.id);
    const pool = await superQuery<{ n: number }>(
      s.dataDb,
      'SELECT count(*)::int AS n FROM pool.users WHERE tenant_id = $1',
      [t.id],
    );
    expect(pool[0]!.n).toBe(0);
    expect(
      await superQuery(s.dataDb, 'SELECT 1 FROM pg_namespace WHERE nspname = $1', [objectName(t.slug)]),
    ).toHaveLength(0);
    for (const op of [first.id, second.id]) expect((await getOperation(s, op)).progress.cleanedUp).toBe(true);
    const d = await connectionOf(s, t.slug);
    expect(d.tier).toBe('silo');
    expect(await asTenant(d, (c) => c.query('SELECT count(*)::int AS n FROM users'))).toMatchObject({
      rows: [{ n: 30 }],
    });
    // A late write through the shared pool role, carrying the moved tenant's id, is refused.
    const poolD = await connectionOf(s, (await onboard(s, 'pool')).slug);
    await expect(
      asTenant({ ...poolD, tenantId: t.id }, (c) =>
        c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'late@x')`, [t.id]),
      ),
    ).rejects.toThrow(/has moved to another placement/);
  });
});

describe('offboarding inside a rollback window', () => {
  it('removes the kept source placement too, and the role drops cleanly', async () => {
    const t = await onboard(s, 'bridge');
    const bridge = await connectionOf(s, t.slug);
    const { op } = await promoteAndWait(s, t.slug, 'silo');
    expect(op.status).toBe('succeeded');
    const res = await s.app.inject({
      method: 'DELETE',
      url: `/v1/tenants/${t.slug}`,
      headers: { ...auth(s.tokens.sre), confirm: t.slug },
    });
    expect(res.statusCode).toBe(202);
    const off = await waitForOperation(s, res.json().operation.id, 60_000);
    expect(off.error).toBeUndefined();
    expect(off.status).toBe('succeeded');
    expect(off.steps[0]?.name).toBe('promotion-sources');
    const name = objectName(t.slug);
    expect(
      await superQuery(s.dataDb, 'SELECT 1 FROM pg_namespace WHERE nspname = $1', [bridge.schema]),
    ).toHaveLength(0);
    expect(await superQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [name])).toHaveLength(
      0,
    );
    expect(await superQuery('postgres', 'SELECT 1 FROM pg_roles WHERE rolname = $1', [name])).toHaveLength(0);
    expect(
      await superQuery(s.dataDb, 'SELECT 1 FROM tenantry_meta.frozen_tenants WHERE schema_name = $1', [
        bridge.schema,
      ]),
    ).toHaveLength(0);
  });
});

describe('a cutover that fails after routing flipped', () => {
  it('is not aborted: the operation is kept, and POST /v1/operations/{id}/resume finishes it forward', async () => {
    const t = await onboard(s, 'pool');
    await seedPool(s, t.id, 20);
    atPoint(s, t.id, 'cutover:after-flip', async () => {
      throw new Error('injected failure after the flip');
    });
    const { id, op } = await promoteAndWait(s, t.slug, 'silo');
    expect(op.status).toBe('failed');
    expect(op.error).toMatch(/injected failure after the flip.*resume it/);
    expect(op.steps.map((x) => x.name)).not.toContain('abort');
    expect(op.steps.find((x) => x.name === 'cutover')?.status).toBe('failed');
    expect((await getOperation(s, id)).progress.resumable).toBe(true);
    // Routing points at the silo already; nothing was undone there.
    expect((await connectionOf(s, t.slug)).tier).toBe('silo');
    expect(
      await superQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [objectName(t.slug)]),
    ).toHaveLength(1);
    const resume = (token: string) =>
      s.app.inject({ method: 'POST', url: `/v1/operations/${id}/resume`, headers: auth(token) });
    expect((await resume(s.tokens['sales-ops'])).statusCode).toBe(403);
    expect((await resume(s.tokens.dataplane)).statusCode).toBe(403);
    const res = await resume(s.tokens.sre);
    expect(res.statusCode).toBe(202);
    expect(res.json().operation).toMatchObject({ id, status: 'queued' });
    const done = await waitForOperation(s, id, 60_000);
    expect(done.error).toBeUndefined();
    expect(done.status).toBe('succeeded');
    expect(await getTenant(s, t.slug)).toMatchObject({ tier: 'silo', status: 'active' });
    const n = await asTenant(await connectionOf(s, t.slug), async (c) => {
      await c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'after-resume@x')`, [t.id]);
      return (await c.query('SELECT count(*)::int AS n FROM users')).rows[0].n;
    });
    expect(n).toBe(21);
    const again = await resume(s.tokens.sre);
    expect(again.statusCode).toBe(409);
    expect(again.json().error.message).toMatch(/is succeeded; only a failed operation/);
    const audit = await s.app.inject({
      method: 'GET',
      url: `/v1/audit?tenant=${t.slug}`,
      headers: auth(s.tokens.sre),
    });
    expect(audit.json().items.map((a: { action: string }) => a.action)).toEqual(
      expect.arrayContaining(['operation.promote.failed', 'operation.resume', 'tenant.promotion.cutover']),
    );
  });
});

describe('operation events', () => {
  it('stream resource-level progress as `resource` events, besides the steps', async () => {
    const t = await onboard(s, 'pool');
    const [op] = await superQuery<{ id: string }>(
      s.controlDb,
      `UPDATE operations SET progress = progress || $2::jsonb WHERE tenant_id = $1 RETURNING id`,
      [
        t.id,
        JSON.stringify({
          resources: [
            {
              step: 'key',
              resource: 'aws:kms:Key',
              action: 'create',
              status: 'running',
              at: '2026-01-01T00:00:00Z',
            },
            {
              step: 'key',
              resource: 'aws:kms:Key',
              action: 'create',
              status: 'succeeded',
              at: '2026-01-01T00:00:01Z',
            },
          ],
        }),
      ],
    );
    const res = await s.app.inject({
      method: 'GET',
      url: `/v1/operations/${op!.id}/events`,
      headers: auth(s.tokens.sre),
    });
    expect(res.statusCode).toBe(200);
    const names = [...res.body.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    expect(names.filter((n) => n === 'resource')).toHaveLength(2);
    expect(names.at(-1)).toBe('end');
    const resources = [...res.body.matchAll(/^event: resource\ndata: (.*)$/gm)].map((m) => JSON.parse(m[1]!));
    expect(resources.map((r) => r.status)).toEqual(['running', 'succeeded']);
    expect(resources[0]).toMatchObject({ step: 'key', resource: 'aws:kms:Key', action: 'create' });
  });
});

describe('orphaned replication objects', () => {
  it('slots and publications of promotions no longer in flight are found and dropped', async () => {
    const name = `tenantry_promo_${'ab'.repeat(14)}`;
    await superQuery(s.dataDb, `CREATE PUBLICATION ${name} FOR TABLE pool.users`);
    await superQuery(s.dataDb, `SELECT pg_create_logical_replication_slot('${name}', 'pgoutput')`);
    const dropped = await s.runtime.executor.sweepPromotionOrphans();
    expect(dropped).toContain(name);
    expect(
      await superQuery(s.dataDb, 'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [name]),
    ).toHaveLength(0);
    expect(
      await superQuery(s.dataDb, 'SELECT 1 FROM pg_publication WHERE pubname = $1', [name]),
    ).toHaveLength(0);
  });
});
