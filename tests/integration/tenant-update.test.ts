import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginRoleNames, tenantObjectName } from '../../control-plane/src/domain/naming.js';
import type { Finding } from '../../control-plane/src/drift/types.js';
import {
  auth,
  onboard,
  rand,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';

/**
 * PATCH /v1/tenants/{slug} (docs/lifecycle.md): name, plan, contact and labels under optimistic
 * concurrency (If-Match with the tenant's version; a stale one is 412 and changes nothing), limit
 * overrides for SREs within the tier's bounds, applied by an `update` operation and then expected by
 * drift. Each accepted change is audited and sends tenant.updated.
 */
const holdFile = path.join(os.tmpdir(), `tenantry-hold-${rand()}`);
let s: TestStack;
let bridge: { slug: string; id: string };
let pool: { slug: string; id: string };
beforeAll(async () => {
  fs.writeFileSync(holdFile, '');
  s = await startStack({ TENANTRY_FAULT_HOLD_FILE: holdFile });
  bridge = await onboard(s, 'bridge');
  pool = await onboard(s, 'pool');
});
afterAll(async () => {
  await s?.close();
  fs.rmSync(holdFile, { force: true });
});

const get = (slug: string) =>
  s.app.inject({ method: 'GET', url: `/v1/tenants/${slug}`, headers: auth(s.tokens['sales-ops']) });
const patch = (
  slug: string,
  body: object,
  ifMatch?: string,
  role: 'sales-ops' | 'sre' | 'admin' = 'sales-ops',
) =>
  s.app.inject({
    method: 'PATCH',
    url: `/v1/tenants/${slug}`,
    headers: { ...auth(s.tokens[role]), ...(ifMatch === undefined ? {} : { 'if-match': ifMatch }) },
    payload: body,
  });
const opOf = async (id: string) =>
  (
    await s.app.inject({ method: 'GET', url: `/v1/operations/${id}`, headers: auth(s.tokens.sre) })
  ).json() as {
    progress?: Record<string, unknown>;
  };
/** Waits for a condition the code under test makes true (bounded by the test's timeout). */
async function until(cond: () => Promise<boolean>) {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 20));
}
const auditOf = async (tenantId: string) =>
  (
    await s.app.inject({
      method: 'GET',
      url: `/v1/audit?tenantId=${tenantId}&limit=500`,
      headers: auth(s.tokens.sre),
    })
  ).json().items as { action: string; details: Record<string, unknown> }[];
/** The tenant's events once published (the publisher runs on the job queue: wait for the one wanted). */
async function eventsOf(slug: string, type: string, n = 1) {
  for (;;) {
    const res = await s.app.inject({
      method: 'GET',
      url: `/v1/events?tenant=${slug}&type=${type}&limit=100`,
      headers: auth(s.tokens.sre),
    });
    const items = res.json().items as { type: string; data: Record<string, unknown>; seq: number }[];
    if (items.length >= n) return items;
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('PATCH with If-Match', () => {
  it('serves the version as the ETag and refuses a write without If-Match (428) or with a stale one (412)', async () => {
    const res = await get(bridge.slug);
    expect(res.statusCode).toBe(200);
    expect(res.headers.etag).toBe('"1"');
    expect(res.json()).toMatchObject({ version: 1, labels: {}, limits: {}, suspension: null });

    const none = await patch(bridge.slug, { name: 'Renamed' });
    expect([none.statusCode, none.json().error.code]).toEqual([428, 'PRECONDITION_REQUIRED']);
    const stale = await patch(bridge.slug, { name: 'Renamed' }, '"7"');
    expect([stale.statusCode, stale.json().error.code]).toEqual([412, 'PRECONDITION_FAILED']);
    expect(stale.json().error.message).toContain('version 1');
    // Nothing changed, nothing audited.
    expect((await get(bridge.slug)).json()).toMatchObject({ name: `Tenant ${bridge.slug}`, version: 1 });
    expect((await auditOf(bridge.id)).filter((a) => a.action === 'tenant.update')).toEqual([]);
  });

  it('changes name, plan, contact and labels at once, bumps the version, audits it and sends tenant.updated', async () => {
    const res = await patch(
      bridge.slug,
      {
        name: 'Acme Corp',
        plan: 'gold',
        contactEmail: 'ops@acme.test',
        labels: { team: 'core', 'billing/tier': 'gold' },
      },
      '"1"',
    );
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers.etag).toBe('"2"');
    expect(res.json()).toMatchObject({
      tenant: {
        name: 'Acme Corp',
        plan: 'gold',
        contactEmail: 'ops@acme.test',
        labels: { team: 'core', 'billing/tier': 'gold' },
        version: 2,
      },
      operation: null,
    });
    const audit = (await auditOf(bridge.id)).filter((a) => a.action === 'tenant.update');
    expect(audit).toHaveLength(1);
    expect(audit[0]?.details).toMatchObject({ fromVersion: 1, toVersion: 2 });
    // The contact is personal data: the audit and the event say it changed, not what it is.
    expect(JSON.stringify(audit[0]?.details)).not.toContain('ops@acme.test');
    const [event] = await eventsOf(bridge.slug, 'tenant.updated');
    expect(event?.data).toMatchObject({
      version: 2,
      changed: expect.arrayContaining(['name', 'plan', 'labels', 'contactEmail']),
    });
    expect(JSON.stringify(event?.data)).not.toContain('ops@acme.test');

    // A label set to null is removed; the others stay.
    const again = await patch(bridge.slug, { labels: { 'billing/tier': null } }, '"2"');
    expect(again.json().tenant.labels).toEqual({ team: 'core' });
  });

  it('lets exactly one of two writes with the same If-Match win', async () => {
    const v = (await get(bridge.slug)).json().version;
    const [a, b] = await Promise.all([
      patch(bridge.slug, { plan: 'silver' }, `"${v}"`),
      patch(bridge.slug, { plan: 'bronze' }, `"${v}"`),
    ]);
    expect([a.statusCode, b.statusCode].sort()).toEqual([200, 412]);
    const winner = a.statusCode === 200 ? 'silver' : 'bronze';
    expect((await get(bridge.slug)).json()).toMatchObject({ plan: winner, version: v + 1 });
  });

  it('selects tenants by label', async () => {
    const v = (await get(pool.slug)).json().version;
    expect((await patch(pool.slug, { labels: { team: 'edge' } }, `"${v}"`)).statusCode).toBe(200);
    const list = async (q: string) =>
      (await s.app.inject({ method: 'GET', url: `/v1/tenants?${q}`, headers: auth(s.tokens['sales-ops']) }))
        .json()
        .items.map((t: { slug: string }) => t.slug);
    expect(await list('label=team=core')).toEqual([bridge.slug]);
    expect(await list('label=team=edge')).toEqual([pool.slug]);
    expect(await list('label=team=core&label=team=edge')).toEqual([]);
  });

  it('refuses an empty body and unknown fields', async () => {
    expect((await patch(bridge.slug, {}, '"1"')).statusCode).toBe(400);
    expect((await patch(bridge.slug, { tier: 'silo' }, '"1"')).statusCode).toBe(400);
  });
});

describe('limit overrides', () => {
  const group = () => tenantObjectName(bridge.slug);
  const roles = () => [group(), ...loginRoleNames(group())];
  async function roleLimits() {
    return superQuery<{ rolname: string; rolconnlimit: number; config: string[] | null }>(
      'postgres',
      `SELECT r.rolname, r.rolconnlimit, s.setconfig AS config FROM pg_roles r
         LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0
        WHERE r.rolname = ANY ($1::text[]) ORDER BY 1`,
      [roles()],
    );
  }
  const driftOf = async (tenantId: string): Promise<Finding[]> => {
    const r = await s.runtime.services.drift.runNow();
    if (!r) throw new Error('sweep did not run');
    return r.findings.filter((f) => f.tenantId === tenantId);
  };

  it('are for SREs: sales-ops gets 403 and nothing changes', async () => {
    const v = (await get(bridge.slug)).json().version;
    const res = await patch(bridge.slug, { limits: { connectionLimit: 5 } }, `"${v}"`, 'sales-ops');
    expect([res.statusCode, res.json().error.code]).toEqual([403, 'FORBIDDEN']);
    expect((await get(bridge.slug)).json()).toMatchObject({ limits: {}, version: v });
  });

  it("are refused outside the tier's bounds and on the pool, creating nothing", async () => {
    const v = (await get(bridge.slug)).json().version;
    for (const limits of [
      { connectionLimit: 21 },
      { connectionLimit: 0 },
      { statementTimeoutMs: 999 },
      { statementTimeoutMs: 30_001 },
    ]) {
      const res = await patch(bridge.slug, { limits }, `"${v}"`, 'sre');
      expect([res.statusCode, res.json().error.code], JSON.stringify(limits)).toEqual([
        422,
        'LIMITS_OUT_OF_BOUNDS',
      ]);
    }
    const pv = (await get(pool.slug)).json().version;
    const onPool = await patch(pool.slug, { limits: { connectionLimit: 5 } }, `"${pv}"`, 'sre');
    expect([onPool.statusCode, onPool.json().error.code]).toEqual([422, 'LIMITS_OUT_OF_BOUNDS']);
    const ops = await superQuery(s.controlDb, `SELECT id FROM operations WHERE kind = 'update'`);
    expect(ops).toEqual([]);
    expect((await get(bridge.slug)).json()).toMatchObject({ limits: {}, version: v });
  });

  it('are applied to every login of the tenant by an update operation, and drift expects them', async () => {
    const v = (await get(bridge.slug)).json().version;
    const res = await patch(
      bridge.slug,
      { limits: { connectionLimit: 5, statementTimeoutMs: 2000 } },
      `"${v}"`,
      'sre',
    );
    expect(res.statusCode, res.body).toBe(200);
    const { tenant, operation } = res.json();
    expect(tenant.limits).toEqual({ connectionLimit: 5, statementTimeoutMs: 2000 });
    expect(operation).toMatchObject({
      kind: 'update',
      params: { limits: { connectionLimit: 5, statementTimeoutMs: 2000 } },
    });
    expect((await waitForOperation(s, operation.id)).status).toBe('succeeded');
    const after = await roleLimits();
    expect(after.length).toBeGreaterThan(0);
    for (const r of after) {
      expect(r.rolconnlimit).toBe(5);
      expect(r.config).toEqual(
        expect.arrayContaining(['statement_timeout=2000', 'idle_in_transaction_session_timeout=60000']),
      );
    }
    // The tenant stays active; drift finds nothing on its roles' limits.
    expect((await get(bridge.slug)).json().status).toBe('active');
    const limitFindings = (await driftOf(bridge.id)).filter((f) =>
      ['connectionLimit', 'statement_timeout', 'idle_in_transaction_session_timeout'].includes(f.field),
    );
    expect(limitFindings).toEqual([]);

    // The tier's limit put back behind Tenantry's back is drift against the override.
    await superQuery('postgres', `ALTER ROLE ${group()} CONNECTION LIMIT 20`);
    const found = (await driftOf(bridge.id)).filter((f) => f.field === 'connectionLimit');
    expect(found).toEqual([
      expect.objectContaining({ resource: 'role', name: group(), desired: 5, actual: 20, kind: 'changed' }),
    ]);
    await superQuery('postgres', `ALTER ROLE ${group()} CONNECTION LIMIT 5`);

    // A credential rotation gives the new login the same overrides as the old one.
    const rotation = await s.app.inject({
      method: 'POST',
      url: `/v1/tenants/${bridge.slug}/credential-rotations`,
      headers: auth(s.tokens.sre),
      payload: { graceSeconds: 600 },
    });
    expect(rotation.statusCode, rotation.body).toBe(202);
    expect((await waitForOperation(s, rotation.json().operation.id)).status).toBe('succeeded');
    for (const r of await roleLimits()) {
      expect([r.rolname, r.rolconnlimit]).toEqual([r.rolname, 5]);
      expect(r.config).toEqual(expect.arrayContaining(['statement_timeout=2000']));
    }

    // null removes an override: the tier's limit is back on every login.
    const v2 = (await get(bridge.slug)).json().version;
    const back = await patch(
      bridge.slug,
      { limits: { connectionLimit: null, statementTimeoutMs: null } },
      `"${v2}"`,
      'sre',
    );
    expect(back.json().tenant.limits).toEqual({});
    expect((await waitForOperation(s, back.json().operation.id)).status).toBe('succeeded');
    for (const r of await roleLimits()) {
      expect(r.rolconnlimit).toBe(20);
      expect(r.config).toEqual(expect.arrayContaining(['statement_timeout=30000']));
    }
  });

  it('are refused while another operation of the tenant is in flight (409), changing nothing', async () => {
    const fresh = await onboard(s, 'silo', `t-upd-${rand(3)}`);
    const v = (await get(fresh.slug)).json().version;
    // The first update waits inside its step (the crash tests' hold) until the second request is answered.
    fs.writeFileSync(holdFile, 'step:limits');
    try {
      const first = await patch(fresh.slug, { limits: { connectionLimit: 10 } }, `"${v}"`, 'sre');
      expect(first.statusCode).toBe(200);
      const opId = first.json().operation.id;
      await until(async () => (await opOf(opId)).progress?.faultPoint === 'step:limits');
      const second = await patch(fresh.slug, { limits: { connectionLimit: 9 } }, `"${v + 1}"`, 'sre');
      expect([second.statusCode, second.json().error.code]).toEqual([409, 'OPERATION_IN_PROGRESS']);
      expect((await get(fresh.slug)).json()).toMatchObject({
        limits: { connectionLimit: 10 },
        version: v + 1,
      });
      fs.writeFileSync(holdFile, '');
      expect((await waitForOperation(s, opId)).status).toBe('succeeded');
    } finally {
      fs.writeFileSync(holdFile, '');
    }
  });
});
