import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  loginRoleName,
  loginRoleNames,
  tenantKeyAlias,
  tenantObjectName,
  tenantSecretName,
} from '../../control-plane/src/domain/naming.js';
import type { Engine } from '../../control-plane/src/domain/ports.js';
import type { TierCatalog } from '../../control-plane/src/domain/tiers.js';
import { LocalKeyStore } from '../../control-plane/src/local/keystore.js';
import { readRootKey } from '../../control-plane/src/local/root-key.js';
import { RotationSchedule } from '../../control-plane/src/rotation/schedule.js';
import { CredentialService } from '../../control-plane/src/services/credentials.js';
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
 * Rotation beside the rest: a rotation and a promotion of one tenant wait for each other; a tenant on
 * the single-login layout (onboarded before the two logins) migrates in one rotation without a
 * moment's downtime and drift sees it clean throughout; the aws target refuses.
 */
let s: TestStack;
let hold: string;

beforeAll(async () => {
  s = await startStack(({ controlDb }) => {
    hold = path.join(fs.mkdtempSync('/tmp/tenantry-hold-'), `${controlDb}.hold`);
    return { TENANTRY_ROTATION_SCHEDULE: 'off', TENANTRY_FAULT_HOLD_FILE: hold };
  });
});
afterAll(async () => {
  fs.rmSync(path.dirname(hold), { recursive: true, force: true });
  await s?.close();
});

/** Holds the in-process operations at `point` (a promotion's fault point, or `step:<name>`). */
const holdAt = (point: string) => fs.writeFileSync(hold, point);
const release = () => fs.writeFileSync(hold, '');

async function heldAt(operationId: string, point: string): Promise<void> {
  for (;;) {
    const [op] = await superQuery<{ at: string | null }>(
      s.controlDb,
      `SELECT progress ->> 'faultPoint' AS at FROM operations WHERE id = $1`,
      [operationId],
    );
    if (op?.at === point) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

const post = (url: string, payload: Record<string, unknown> = {}) =>
  s.app.inject({ method: 'POST', url, headers: auth(s.tokens.sre), payload });

/** A schedule whose bridge and silo tenants are all due (its clock is 40 days ahead). */
const schedule = () =>
  new RotationSchedule(
    s.runtime.services.db,
    s.runtime.services.credentials,
    {
      templateVersion: 1,
      tiers: {
        bridge: { rotation: { everyDays: 30, spreadHours: 0, graceMinutes: 60 } },
        silo: { rotation: { everyDays: 30, spreadHours: 0, graceMinutes: 60 } },
      },
    } as unknown as TierCatalog,
    { maxPerTick: 100, schedule: null, log: pino({ level: 'silent' }) },
  );
const in40Days = () => new Date(Date.now() + 40 * 86_400_000);
const startedFor = async (ids: string[], tenantId: string) =>
  (
    await superQuery<{ id: string }>(
      s.controlDb,
      'SELECT id FROM operations WHERE id = ANY ($1) AND tenant_id = $2',
      [ids, tenantId],
    )
  ).length;

describe('a rotation and a promotion of the same tenant', () => {
  it('a rotation waits for a promotion in flight: the API answers 409, the schedule leaves it for a later tick', async () => {
    const t = await onboard(s, 'bridge');
    holdAt('catch-up:start');
    const promote = await post(`/v1/tenants/${t.slug}/promotions`, { targetTier: 'silo' });
    expect(promote.statusCode).toBe(202);
    const promotion = promote.json().operation.id as string;
    try {
      await heldAt(promotion, 'catch-up:start');
      const refused = await post(`/v1/tenants/${t.slug}/credential-rotations`);
      expect([refused.statusCode, refused.json().error.code]).toEqual([409, 'OPERATION_IN_PROGRESS']);
      const key = await post(`/v1/tenants/${t.slug}/key-rotations`);
      expect([key.statusCode, key.json().error.code]).toEqual([409, 'OPERATION_IN_PROGRESS']);
      const tick = await schedule().tick(in40Days());
      expect(await startedFor(tick.rotations, t.id)).toBe(0);
    } finally {
      release();
    }
    expect(await waitForOperation(s, promotion, 120_000)).toMatchObject({ status: 'succeeded' });
    // The promotion done, the next tick rotates it: on its new tier, the logins it carried.
    const tick = await schedule().tick(in40Days());
    expect(await startedFor(tick.rotations, t.id)).toBe(1);
    const [op] = await superQuery<{ id: string }>(
      s.controlDb,
      `SELECT id FROM operations WHERE tenant_id = $1 AND kind = 'rotate'`,
      [t.id],
    );
    expect(await waitForOperation(s, op!.id)).toMatchObject({ status: 'succeeded' });
    const d = await connectionOf(s, t.slug);
    expect([d.tier, d.user]).toEqual(['silo', loginRoleName(tenantObjectName(t.slug), 'b')]);
    const c = await tenantClient(d);
    await c.query('SELECT count(*) FROM users').finally(() => c.end());
  });

  it('a promotion waits for a rotation in flight (409), and is accepted once the rotation is done', async () => {
    const t = await onboard(s, 'bridge');
    holdAt('step:set-password');
    const rotate = await post(`/v1/tenants/${t.slug}/credential-rotations`, { graceSeconds: 600 });
    expect(rotate.statusCode).toBe(202);
    const rotation = rotate.json().operation.id as string;
    try {
      await heldAt(rotation, 'step:set-password');
      const refused = await post(`/v1/tenants/${t.slug}/promotions`, { targetTier: 'silo' });
      expect([refused.statusCode, refused.json().error.code]).toEqual([409, 'OPERATION_IN_PROGRESS']);
    } finally {
      release();
    }
    expect(await waitForOperation(s, rotation)).toMatchObject({ status: 'succeeded' });
    const promote = await post(`/v1/tenants/${t.slug}/promotions`, { targetTier: 'silo' });
    expect(promote.statusCode).toBe(202);
    expect(await waitForOperation(s, promote.json().operation.id, 120_000)).toMatchObject({
      status: 'succeeded',
    });
    // The login the rotation made current carried over to the silo, its password too.
    const d = await connectionOf(s, t.slug);
    expect([d.tier, d.user]).toEqual(['silo', loginRoleName(tenantObjectName(t.slug), 'b')]);
  });
});

/** The tenant's drift as the last sweep judged it: a sweep is run first. */
async function driftOf(slug: string): Promise<unknown[]> {
  const run = await post('/v1/drift-runs');
  expect(run.statusCode).toBe(202);
  for (;;) {
    const r = await s.app.inject({
      method: 'GET',
      url: `/v1/drift-runs/${run.json().id}`,
      headers: auth(s.tokens.sre),
    });
    if (['succeeded', 'failed'].includes(r.json().status)) break;
    await new Promise((x) => setTimeout(x, 50));
  }
  const res = await s.app.inject({
    method: 'GET',
    url: `/v1/tenants/${slug}/drift`,
    headers: auth(s.tokens.sre),
  });
  return res.json().findings;
}

describe('a tenant on the single-login layout', () => {
  it('migrates to two logins in one rotation: its sessions and its old password keep working through the grace period, then its group logs in no more', async () => {
    const t = await onboard(s, 'bridge');
    const group = tenantObjectName(t.slug);
    // As an earlier build onboarded it: the group is the login, with its password in the secret.
    const legacy = 'legacy-password-0123456789abcdef';
    await superQuery('postgres', `ALTER ROLE ${group} LOGIN PASSWORD '${legacy}'`);
    await superQuery('postgres', `DROP ROLE ${loginRoleNames(group).join(', ')}`);
    const keys = new LocalKeyStore(s.runtime.services.db, readRootKey(s.config.rootKey).key);
    const secret = await keys.getSecret(tenantSecretName(t.slug));
    await keys.putSecret(tenantSecretName(t.slug), tenantKeyAlias(t.slug), {
      ...secret?.value,
      user: group,
      password: legacy,
    });
    await superQuery(
      s.controlDb,
      `UPDATE tenants SET outputs = outputs || jsonb_build_object('user', $2::text) WHERE id = $1`,
      [t.id, group],
    );
    const before = await connectionOf(s, t.slug);
    expect(before.user).toBe(group);
    expect(await driftOf(t.slug)).toEqual([]);
    const connected = await tenantClient(before);
    const ended = new Promise<string>((resolve) =>
      connected.on('error', (e) => resolve((e as { code?: string }).code ?? '')),
    );
    try {
      await connected.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'before@x')`, [t.id]);
      const res = await post(`/v1/tenants/${t.slug}/credential-rotations`, { graceSeconds: 3600 });
      expect(await waitForOperation(s, res.json().operation.id)).toMatchObject({ status: 'succeeded' });
      const after = await connectionOf(s, t.slug);
      expect(after.user).toBe(loginRoleName(group, 'a'));
      // No downtime: the session open before, a new one with the old secret, and one with the new.
      await connected.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'during@x')`, [t.id]);
      for (const d of [before, after]) {
        const c = await tenantClient(d);
        expect((await c.query('SELECT count(*)::int AS n FROM users')).rows[0].n).toBe(2);
        await c.end();
      }
      expect(await driftOf(t.slug)).toEqual([]);
      // The grace period over: the group holds the grants and no longer logs in.
      const { retires } = await schedule().tick(new Date(Date.now() + 3601_000));
      for (const id of retires) expect(await waitForOperation(s, id)).toMatchObject({ status: 'succeeded' });
      expect(await ended).toBe('57P01');
      await expect(tenantClient(before)).rejects.toMatchObject({ code: '28P01' });
      const c = await tenantClient(after);
      expect((await c.query('SELECT email FROM users ORDER BY 1')).rows).toEqual([
        { email: 'before@x' },
        { email: 'during@x' },
      ]);
      await c.end();
      const [role] = await superQuery<{ rolcanlogin: boolean }>(
        'postgres',
        'SELECT rolcanlogin FROM pg_roles WHERE rolname = $1',
        [group],
      );
      expect(role?.rolcanlogin).toBe(false);
      expect(await driftOf(t.slug)).toEqual([]);
    } finally {
      await connected.end().catch(() => undefined);
    }
  });
});

describe('the aws target', () => {
  it('refuses a rotation with 422 ROTATION_NOT_AVAILABLE_ON_TARGET, and creates nothing', async () => {
    const t = await onboard(s, 'bridge');
    // An engine without rotation steps, as the aws target's.
    const aws = { target: 'aws' } as unknown as Engine;
    const svc = new CredentialService(
      s.runtime.services.db,
      aws,
      { templateVersion: 1, tiers: {} } as never,
      {
        maxAttempts: 3,
      },
    );
    const ctx = { actor: { id: null, name: 'test', role: 'sre' }, requestId: 'r' };
    for (const call of [() => svc.rotateCredentials(ctx, t.slug), () => svc.rotateKey(ctx, t.slug)])
      await expect(call()).rejects.toMatchObject({ code: 'ROTATION_NOT_AVAILABLE_ON_TARGET' });
    const ops = await superQuery(
      s.controlDb,
      `SELECT 1 FROM operations WHERE tenant_id = $1 AND kind = 'rotate'`,
      [t.id],
    );
    expect(ops).toEqual([]);
  });
});
