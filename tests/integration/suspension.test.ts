import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fleetWorkSkipReason } from '../../control-plane/src/domain/lifecycle.js';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import type { Finding } from '../../control-plane/src/drift/types.js';
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

/**
 * Suspension and reactivation, per tier, end to end (docs/lifecycle.md): a suspended tenant keeps every
 * row; its descriptor answers 409 TENANT_SUSPENDED; bridge and silo logins are refused and their open
 * sessions ended; pool writes are refused in the database while other pool tenants keep writing; drift
 * knows the suspended state; a reactivation restores all of it.
 */
let s: TestStack;
beforeAll(async () => {
  s = await startStack();
});
afterAll(async () => {
  await s?.close();
});

type Descriptor = Awaited<ReturnType<typeof connectionOf>>;

const call = (method: 'POST' | 'DELETE', slug: string, role: 'sales-ops' | 'sre', body?: object) =>
  s.app.inject({
    method,
    url: `/v1/tenants/${slug}/suspension`,
    headers: auth(s.tokens[role]),
    ...(body ? { payload: body } : {}),
  });
const tenantOf = async (slug: string) =>
  (await s.app.inject({ method: 'GET', url: `/v1/tenants/${slug}`, headers: auth(s.tokens.sre) })).json();
const descriptorStatus = async (slug: string) => {
  const res = await s.app.inject({
    method: 'GET',
    url: `/v1/tenants/${slug}/connection`,
    headers: auth(s.tokens.dataplane),
  });
  return [res.statusCode, res.json().error?.code ?? null];
};

/** One row written as the tenant, as its data plane would (pool: its tenant set for the transaction). */
async function write(c: pg.Client, d: Descriptor): Promise<void> {
  await c.query('BEGIN');
  try {
    if (d.tenantSetting) await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, d.tenantId]);
    await c.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [
      d.tenantId,
      `u${Math.random().toString(16).slice(2)}@x.test`,
    ]);
    await c.query('COMMIT');
  } catch (e) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}
async function rows(d: Descriptor): Promise<number> {
  const c = await tenantClient(d);
  try {
    await c.query('BEGIN');
    if (d.tenantSetting) await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, d.tenantId]);
    const { rows: r } = await c.query<{ n: string }>('SELECT count(*) AS n FROM users');
    await c.query('COMMIT');
    return Number(r[0]?.n);
  } finally {
    await c.end();
  }
}
const errorCode = (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: { code?: string }) => e.code ?? 'no code',
  );
/** A sweep's findings on what a suspension changes: a tenant's logins' LOGIN and its rows' freeze. */
const driftOf = async (tenantId: string): Promise<Finding[]> => {
  const r = await s.runtime.services.drift.runNow();
  if (!r) throw new Error('sweep did not run');
  return r.findings
    .filter((f) => f.tenantId === tenantId && (f.field === 'login' || f.resource === 'freeze'))
    .map(({ resolution: _r, ...f }) => f);
};
async function eventTypes(slug: string): Promise<string[]> {
  const res = await s.app.inject({
    method: 'GET',
    url: `/v1/events?tenant=${slug}&limit=100`,
    headers: auth(s.tokens.sre),
  });
  return res.json().items.map((e: { type: string }) => e.type);
}
async function waitForEvent(slug: string, type: string): Promise<void> {
  while (!(await eventTypes(slug)).includes(type)) await new Promise((r) => setTimeout(r, 25));
}

describe.each(['bridge', 'silo'] as const)('a %s tenant', (tier) => {
  it('is cut off (login refused, sessions ended, descriptor 409) and reactivation restores it', async () => {
    const t = await onboard(s, tier);
    const d = await connectionOf(s, t.slug);
    const open = await tenantClient(d);
    open.on('error', () => {});
    await write(open, d);

    const res = await call('POST', t.slug, 'sre', { reason: 'abuse', note: 'ticket 42' });
    expect(res.statusCode, res.body).toBe(202);
    expect(res.json().operation.kind).toBe('suspend');
    // From the commit on, no descriptor is served, before the data plane is even touched.
    expect(await descriptorStatus(t.slug)).toEqual([409, 'TENANT_SUSPENDED']);
    expect((await waitForOperation(s, res.json().operation.id)).status).toBe('succeeded');
    expect(await tenantOf(t.slug)).toMatchObject({
      status: 'suspended',
      suspension: { reason: 'abuse', note: 'ticket 42', by: 'test-sre' },
    });

    // The open session was ended; a new login is refused (28000: role is not permitted to log in).
    expect(await errorCode(open.query('SELECT 1'))).not.toBeNull();
    await open.end().catch(() => undefined);
    expect(await errorCode(tenantClient(d))).toBe('28000');
    // Its rows are all there.
    const n = await superQuery<{ n: string }>(
      tier === 'silo' ? tenantObjectName(t.slug) : s.dataDb,
      `SELECT count(*) AS n FROM ${tier === 'silo' ? 'app' : tenantObjectName(t.slug)}.users`,
    );
    expect(Number(n[0]?.n)).toBe(1);
    // Promotions refuse it.
    if (tier === 'bridge') {
      const promo = await s.app.inject({
        method: 'POST',
        url: `/v1/tenants/${t.slug}/promotions`,
        headers: auth(s.tokens.sre),
        payload: { targetTier: 'silo' },
      });
      expect([promo.statusCode, promo.json().error.code]).toEqual([409, 'TENANT_SUSPENDED']);
    }
    // Drift judges it against its suspended state: nothing to report...
    expect(await driftOf(t.id)).toEqual([]);
    // ...until one of its logins can log in again behind Tenantry's back.
    await superQuery('postgres', `ALTER ROLE ${pgIdent(d.user)} LOGIN`);
    expect(await driftOf(t.id)).toEqual([
      expect.objectContaining({
        resource: 'role',
        name: d.user,
        field: 'login',
        desired: false,
        actual: true,
        category: 'isolation',
      }),
    ]);
    await superQuery('postgres', `ALTER ROLE ${pgIdent(d.user)} NOLOGIN`);

    const back = await call('DELETE', t.slug, 'sre');
    expect(back.statusCode, back.body).toBe(202);
    expect(back.json().operation).toMatchObject({ kind: 'reactivate', params: { logins: [d.user] } });
    expect((await waitForOperation(s, back.json().operation.id)).status).toBe('succeeded');
    expect(await tenantOf(t.slug)).toMatchObject({ status: 'active', suspension: null });
    const again = await connectionOf(s, t.slug);
    const c = await tenantClient(again);
    await write(c, again);
    await c.end();
    expect(await rows(again)).toBe(2);
    // Exactly the logins the suspension took LOGIN from have it back.
    const canLogIn = await superQuery<{ rolname: string }>(
      'postgres',
      'SELECT rolname FROM pg_roles WHERE rolname = ANY ($1::text[]) AND rolcanlogin ORDER BY 1',
      [back.json().operation.params.logins.concat(tenantObjectName(t.slug))],
    );
    expect(canLogIn.map((r) => r.rolname)).toEqual([d.user]);
    await waitForEvent(t.slug, 'tenant.reactivated');
    expect(await eventTypes(t.slug)).toEqual(
      expect.arrayContaining([
        'tenant.created',
        'tenant.activated',
        'tenant.suspended',
        'tenant.reactivated',
      ]),
    );
  });
});

const pgIdent = (n: string) => `"${n.replaceAll('"', '""')}"`;

describe('a pool tenant', () => {
  it('has its writes refused in the database while the other pool tenants write, and reactivation restores them', async () => {
    const t = await onboard(s, 'pool');
    const other = await onboard(s, 'pool');
    const d = await connectionOf(s, t.slug);
    const od = await connectionOf(s, other.slug);
    const c = await tenantClient(d);
    try {
      await write(c, d);
      const res = await call('POST', t.slug, 'sre', { reason: 'security' });
      expect(res.statusCode).toBe(202);
      expect(await descriptorStatus(t.slug)).toEqual([409, 'TENANT_SUSPENDED']);
      expect((await waitForOperation(s, res.json().operation.id)).status).toBe('succeeded');

      // The shared login still connects (other tenants use it), but this tenant's writes are refused.
      expect(await errorCode(write(c, d))).toBe('25006');
      const oc = await tenantClient(od);
      await write(oc, od);
      await oc.end();
      expect(await rows(d)).toBe(1);
      expect(await driftOf(t.id)).toEqual([]);
      // The freeze lifted behind Tenantry's back is drift.
      await superQuery(s.dataDb, 'DELETE FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1', [t.id]);
      expect(await driftOf(t.id)).toEqual([
        expect.objectContaining({
          resource: 'freeze',
          field: 'frozen',
          kind: 'missing',
          desired: 'suspended',
          category: 'isolation',
        }),
      ]);
      // Re-applying the suspension (a POST on a suspended tenant) puts it back.
      const reapply = await call('POST', t.slug, 'sre', { reason: 'security' });
      expect(reapply.statusCode).toBe(202);
      expect((await waitForOperation(s, reapply.json().operation.id)).status).toBe('succeeded');
      expect(await errorCode(write(c, d))).toBe('25006');

      const back = await call('DELETE', t.slug, 'sre');
      expect((await waitForOperation(s, back.json().operation.id)).status).toBe('succeeded');
      expect((await tenantOf(t.slug)).status).toBe('active');
      expect(await descriptorStatus(t.slug)).toEqual([200, null]);
      await write(c, d);
      expect(await rows(d)).toBe(2);
    } finally {
      await c.end();
    }
  });
});

describe('who may suspend', () => {
  it('lets sales-ops suspend and reactivate for non-payment only', async () => {
    const t = await onboard(s, 'pool');
    const abuse = await call('POST', t.slug, 'sales-ops', { reason: 'abuse' });
    expect([abuse.statusCode, abuse.json().error.code]).toEqual([403, 'FORBIDDEN']);
    expect((await tenantOf(t.slug)).status).toBe('active');

    const unpaid = await call('POST', t.slug, 'sales-ops', { reason: 'non-payment' });
    expect(unpaid.statusCode).toBe(202);
    await waitForOperation(s, unpaid.json().operation.id);
    const paid = await call('DELETE', t.slug, 'sales-ops');
    expect(paid.statusCode).toBe(202);
    await waitForOperation(s, paid.json().operation.id);

    // A suspension an SRE set for abuse is not sales-ops' to lift.
    const sre = await call('POST', t.slug, 'sre', { reason: 'abuse' });
    await waitForOperation(s, sre.json().operation.id);
    const lift = await call('DELETE', t.slug, 'sales-ops');
    expect([lift.statusCode, lift.json().error.code]).toEqual([403, 'FORBIDDEN']);
    expect((await tenantOf(t.slug)).status).toBe('suspended');
    const audit = await s.app.inject({
      method: 'GET',
      url: `/v1/audit?tenantId=${t.id}`,
      headers: auth(s.tokens.sre),
    });
    const actions = audit.json().items.map((a: { action: string }) => a.action);
    expect(actions.filter((a: string) => a === 'tenant.suspend')).toHaveLength(2);
    expect(actions.filter((a: string) => a === 'tenant.reactivate')).toHaveLength(1);
  });

  it('answers 409 TENANT_NOT_SUSPENDED to reactivating an active tenant, and refuses an unknown reason', async () => {
    const t = await onboard(s, 'pool');
    const res = await call('DELETE', t.slug, 'sre');
    expect([res.statusCode, res.json().error.code]).toEqual([409, 'TENANT_NOT_SUSPENDED']);
    expect((await call('POST', t.slug, 'sre', { reason: 'because' })).statusCode).toBe(400);
  });
});

describe('fleet work', () => {
  it('skips a suspended tenant: the predicate rollouts and promotions share', () => {
    expect(fleetWorkSkipReason({ status: 'suspended' })).toMatch(/suspended/);
    expect(fleetWorkSkipReason({ status: 'active' })).toBeNull();
  });
});
