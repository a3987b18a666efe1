import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { loginRoleName, loginRoleNames, tenantObjectName } from '../../control-plane/src/domain/naming.js';
import type { TierCatalog } from '../../control-plane/src/domain/tiers.js';
import { RotationSchedule } from '../../control-plane/src/rotation/schedule.js';
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
 * Credential rotation through the API, on real Postgres: alternating logins, the grace period, the
 * retire, the pool's shared login, the refusals. The load tests (many workers through the data-plane
 * client) are in credential-rotation-load.test.ts.
 */
let s: TestStack;
let schedule: RotationSchedule;
beforeAll(async () => {
  s = await startStack({ TENANTRY_ROTATION_SCHEDULE: 'off' });
  // The schedule's ticks, driven by the test with a clock of its own (no tenant here is due a rotation).
  schedule = new RotationSchedule(
    s.runtime.services.db,
    s.runtime.services.credentials,
    { templateVersion: 1, tiers: {} } as unknown as TierCatalog,
    { maxPerTick: 100, schedule: null, log: pino({ level: 'silent' }) },
  );
});
afterAll(async () => {
  await s?.close();
  const { poolRole } = dataPlaneNames(s.dataDb);
  await superQuery('postgres', `DROP ROLE IF EXISTS ${loginRoleNames(poolRole).join(', ')}`).catch(
    () => undefined,
  );
});

const rotate = (slug: string, token: string, payload: Record<string, unknown> = { graceSeconds: 3600 }) =>
  s.app.inject({
    method: 'POST',
    url: `/v1/tenants/${slug}/credential-rotations`,
    headers: auth(token),
    payload,
  });

async function rotated(slug: string, payload?: Record<string, unknown>) {
  const res = await rotate(slug, s.tokens.sre, payload);
  expect(res.statusCode, res.body).toBe(202);
  const op = await waitForOperation(s, res.json().operation.id);
  expect(op, JSON.stringify(op)).toMatchObject({ status: 'succeeded' });
  return res.json().operation.id as string;
}

/** Runs the schedule's retire pass as if its clock read `at`, and waits for the retires it started. */
async function retireAt(at: Date): Promise<string[]> {
  const { retires } = await schedule.tick(at);
  for (const id of retires) expect(await waitForOperation(s, id)).toMatchObject({ status: 'succeeded' });
  return retires;
}

/** How Postgres refuses a login without a password (28P01) or without LOGIN (28000). */
const REFUSED = ['28P01', '28000'];

async function loginError(d: {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
}) {
  const c = new pg.Client({ ...d });
  try {
    await c.connect();
    await c.query('SELECT 1');
    return null;
  } catch (e) {
    return (e as { code?: string }).code ?? (e as Error).message;
  } finally {
    await c.end().catch(() => undefined);
  }
}

describe('a bridge tenant', () => {
  it('onboards with two logins in one NOLOGIN group holding the grants, logging in as the first', async () => {
    const t = await onboard(s, 'bridge');
    const group = tenantObjectName(t.slug);
    const d = await connectionOf(s, t.slug);
    expect(d.user).toBe(loginRoleName(group, 'a'));
    const roles = await superQuery<{ rolname: string; rolcanlogin: boolean; member: boolean }>(
      'postgres',
      `SELECT r.rolname, r.rolcanlogin, pg_has_role(r.oid, $1, 'USAGE') AND r.rolname <> $1 AS member
         FROM pg_roles r WHERE r.rolname = ANY ($2::text[]) ORDER BY r.rolname`,
      [group, [group, ...loginRoleNames(group)]],
    );
    expect(roles).toEqual([
      { rolname: loginRoleName(group, 'a'), rolcanlogin: true, member: true },
      { rolname: loginRoleName(group, 'b'), rolcanlogin: false, member: true },
      { rolname: group, rolcanlogin: false, member: false },
    ]);
    const c = await tenantClient(d);
    try {
      await c.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [t.id, 'a@x']);
      expect((await c.query('SELECT count(*)::int AS n FROM users')).rows[0].n).toBe(1);
    } finally {
      await c.end();
    }
  });

  it('rotates to the idle login; the old one works until its grace period ends, then is refused and its sessions end', async () => {
    const t = await onboard(s, 'bridge');
    const group = tenantObjectName(t.slug);
    const before = await connectionOf(s, t.slug);
    const connected = await tenantClient(before);
    try {
      const opId = await rotated(t.slug, { graceSeconds: 3600 });
      const after = await connectionOf(s, t.slug);
      expect(after.user).toBe(loginRoleName(group, 'b'));
      expect(after.password).not.toBe(before.password);
      // Both work during the grace period: the connected session and a new login with the old secret.
      expect((await connected.query('SELECT 1 AS x')).rows).toEqual([{ x: 1 }]);
      expect(await loginError(before)).toBeNull();
      expect(await loginError(after)).toBeNull();
      const row = await superQuery<{ current_login: string; previous_login: string; grace: boolean }>(
        s.controlDb,
        `SELECT current_login, previous_login, grace_until > now() + interval '50 minutes' AS grace
           FROM login_rotations WHERE subject = $1`,
        [t.id],
      );
      expect(row).toEqual([{ current_login: after.user, previous_login: before.user, grace: true }]);
      // The schedule retires nothing before the grace period ends…
      expect(await retireAt(new Date())).toEqual([]);
      // …and at its end, the old login loses its password and its sessions.
      const ended = new Promise<string>((resolve) =>
        connected.on('error', (e) => resolve((e as { code?: string }).code ?? '')),
      );
      expect(await retireAt(new Date(Date.now() + 3601_000))).toHaveLength(1);
      expect(await ended).toBe('57P01');
      expect(REFUSED).toContain(await loginError(before));
      expect(await loginError(after)).toBeNull();
      const audit = await superQuery<{ action: string }>(
        s.controlDb,
        `SELECT action FROM audit_log WHERE tenant_id = $1 AND action LIKE 'tenant.credentials.%' ORDER BY id`,
        [t.id],
      );
      expect(audit.map((a) => a.action)).toEqual([
        'tenant.credentials.rotate',
        'tenant.credentials.rotated',
        'tenant.credentials.retire',
        'tenant.credentials.retired',
      ]);
      expect(opId).toMatch(/^op_/);
    } finally {
      await connected.end().catch(() => undefined);
    }
  });

  it('refuses a second rotation while the first one is in its grace period (409 CREDENTIALS_IN_GRACE); after the grace period it retires the old login first', async () => {
    const t = await onboard(s, 'bridge');
    const group = tenantObjectName(t.slug);
    const first = await connectionOf(s, t.slug);
    await rotated(t.slug, { graceSeconds: 3600 });
    const res = await rotate(t.slug, s.tokens.admin);
    expect(res.statusCode).toBe(409);
    expect(res.json().error.code).toBe('CREDENTIALS_IN_GRACE');
    // The grace period over (its end moved to now), the next rotation retires login a, then reuses it.
    await superQuery(s.controlDb, `UPDATE login_rotations SET grace_until = now() WHERE subject = $1`, [
      t.id,
    ]);
    await rotated(t.slug, { graceSeconds: 3600 });
    const third = await connectionOf(s, t.slug);
    expect(third.user).toBe(loginRoleName(group, 'a'));
    expect(third.password).not.toBe(first.password);
    expect(REFUSED).toContain(await loginError(first)); // login a, its old password
    expect(await loginError(third)).toBeNull();
  });
});

describe('the pool', () => {
  it("a pool tenant's rotation rotates the shared login (migrating it to two logins): every pool descriptor follows, nothing breaks during the grace period", async () => {
    const a = await onboard(s, 'pool');
    const b = await onboard(s, 'pool');
    const { poolRole } = dataPlaneNames(s.dataDb);
    const before = await connectionOf(s, b.slug);
    expect(before.user).toBe(poolRole); // the single-login layout a fresh pool starts with
    const connected = await tenantClient(before);
    try {
      await rotated(a.slug, { graceSeconds: 3600 });
      for (const slug of [a.slug, b.slug]) {
        const d = await connectionOf(s, slug);
        expect(d.user).toBe(loginRoleName(poolRole, 'a'));
        expect(await loginError(d)).toBeNull();
      }
      expect(await loginError(before)).toBeNull();
      // A second pool tenant asking during the grace period is told the pool's login is in it.
      const again = await rotate(b.slug, s.tokens.sre);
      expect(again.statusCode).toBe(409);
      expect(again.json().error.code).toBe('CREDENTIALS_IN_GRACE');
      const ended = new Promise<string>((resolve) =>
        connected.on('error', (e) => resolve((e as { code?: string }).code ?? '')),
      );
      await retireAt(new Date(Date.now() + 3601_000));
      expect(
        await superQuery(
          s.controlDb,
          `SELECT 1 FROM login_rotations WHERE subject = 'pool' AND retired_at IS NOT NULL`,
        ),
      ).toHaveLength(1);
      expect(await ended).toBe('57P01');
      // The group that was the login holds the grants and logs in no more.
      expect(REFUSED).toContain(await loginError(before));
      const c = await tenantClient(await connectionOf(s, b.slug));
      try {
        await c.query('BEGIN');
        await c.query(`SELECT set_config('app.tenant_id', $1, true)`, [b.id]);
        await c.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [b.id, 'b@x']);
        await c.query('COMMIT');
      } finally {
        await c.end();
      }
    } finally {
      await connected.end().catch(() => undefined);
    }
  });
});

describe('refusals', () => {
  it('checks the role, the tenant and the body; creates nothing when refused', async () => {
    const t = await onboard(s, 'silo');
    expect((await rotate(t.slug, s.tokens['sales-ops'])).statusCode).toBe(403);
    expect((await rotate(t.slug, s.tokens.dataplane)).statusCode).toBe(403);
    const missing = await rotate('no-such-tenant', s.tokens.sre);
    expect([missing.statusCode, missing.json().error.code]).toEqual([404, 'TENANT_NOT_FOUND']);
    for (const payload of [{ graceSeconds: 0 }, { graceSeconds: 'soon' }, { graceSeconds: 3600, extra: 1 }]) {
      const bad = await rotate(t.slug, s.tokens.sre, payload);
      expect([bad.statusCode, bad.json().error.code]).toEqual([400, 'VALIDATION_FAILED']);
    }
    const ops = await superQuery<{ n: number }>(
      s.controlDb,
      `SELECT count(*)::int AS n FROM operations WHERE tenant_id = $1 AND kind = 'rotate'`,
      [t.id],
    );
    expect(ops).toEqual([{ n: 0 }]);
  });
});

describe('the data key', () => {
  it('re-encrypts every version of the secrets under a new key and destroys the old one', async () => {
    const t = await onboard(s, 'bridge');
    await rotated(t.slug, { graceSeconds: 1 }); // a second version of the connection secret
    const before = await connectionOf(s, t.slug);
    const keys = async () =>
      superQuery<{ key_id: string; state: string; wrapped: boolean }>(
        s.controlDb,
        `SELECT key_id, state, wrapped_key IS NOT NULL AS wrapped FROM local_keys WHERE alias LIKE $1 ORDER BY created_at`,
        [`alias/tenantry/${t.slug}%`],
      );
    const [old] = await keys();
    const res = await s.app.inject({
      method: 'POST',
      url: `/v1/tenants/${t.slug}/key-rotations`,
      headers: auth(s.tokens.admin),
    });
    expect(res.statusCode, res.body).toBe(202);
    expect(await waitForOperation(s, res.json().operation.id)).toMatchObject({ status: 'succeeded' });
    const after = await keys();
    expect(after).toEqual([
      { key_id: old!.key_id, state: 'destroyed', wrapped: false },
      { key_id: expect.stringMatching(/^lk_/), state: 'enabled', wrapped: true },
    ]);
    const versions = await superQuery<{ key_id: string; n: number }>(
      s.controlDb,
      `SELECT key_id, count(*)::int AS n FROM local_secrets WHERE name LIKE $1 GROUP BY key_id`,
      [`tenantry/${t.slug}/%`],
    );
    expect(versions).toEqual([{ key_id: after[1]!.key_id, n: 2 }]);
    expect(await connectionOf(s, t.slug)).toEqual(before);
    const tenant = (
      await s.app.inject({ method: 'GET', url: `/v1/tenants/${t.slug}`, headers: auth(s.tokens.sre) })
    ).json();
    expect(tenant.outputs.keyId).toBe(after[1]!.key_id);
  });
});
