import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RotationPolicy, TierCatalog } from '../../control-plane/src/domain/tiers.js';
import { RotationSchedule } from '../../control-plane/src/rotation/schedule.js';
import { startStack, superQuery, type TestStack } from '../helpers/runtime.js';

/**
 * The rotation schedule over a fleet: 1,000 tenants onboarded in the same minute fall due across the
 * tier's spread window, at most the configured number per tick (a tick a minute). The control plane
 * runs without a worker here (TENANTRY_ROLE=api): the rotations the ticks start stay queued, which is
 * what marks a tenant busy for the next ticks, and nothing touches a data plane the rows do not have.
 */
const FLEET = 1000;
const MINUTE = 60_000;
const T0 = Date.UTC(2026, 0, 1);
let s: TestStack;

beforeAll(async () => {
  s = await startStack({ TENANTRY_ROLE: 'api', TENANTRY_ROTATION_SCHEDULE: 'off' });
});
afterAll(async () => {
  await s?.close();
});

/** `n` active bridge tenants of `prefix`, all onboarded at T0. */
async function fleet(prefix: string, n: number): Promise<void> {
  await superQuery(
    s.controlDb,
    `INSERT INTO tenants (id, slug, name, tier, status, template_version, created_at, updated_at)
     SELECT gen_random_uuid(), $1 || i, 'Fleet ' || i, 'bridge', 'active', 1, $2, $2
       FROM generate_series(1, $3::int) i`,
    [prefix, new Date(T0), n],
  );
}

const scheduleOf = (rotation: RotationPolicy, maxPerTick: number) =>
  new RotationSchedule(
    s.runtime.services.db,
    s.runtime.services.credentials,
    { templateVersion: 1, tiers: { bridge: { rotation } } } as unknown as TierCatalog,
    { maxPerTick, schedule: null, log: pino({ level: 'silent' }) },
  );

/** Runs one tick a minute from `from` until every tenant of `prefix` has its rotation; the starts per tick. */
async function ticks(schedule: RotationSchedule, prefix: string, from: number, maxTicks: number) {
  const started: number[] = [];
  for (let k = 0; k < maxTicks; k++) {
    const r = await schedule.tick(new Date(from + k * MINUTE));
    started.push(r.rotations.length);
    const [left] = await superQuery<{ n: number }>(
      s.controlDb,
      `SELECT count(*)::int AS n FROM tenants t WHERE t.slug LIKE $1 || '%'
          AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.tenant_id = t.id AND o.kind = 'rotate')`,
      [prefix],
    );
    if (left?.n === 0) break;
  }
  return started;
}

describe('a scheduled rotation over 1,000 tenants', () => {
  it('spreads them over the tier window, each tenant at its own offset, never more than the cap in a minute', async () => {
    await fleet('spread-', FLEET);
    const policy = { everyDays: 30, spreadHours: 2, graceMinutes: 60 };
    const schedule = scheduleOf(policy, 25);
    // Nothing is due before the interval has passed since the onboarding.
    expect((await schedule.tick(new Date(T0 + 29 * 24 * 60 * MINUTE))).rotations).toEqual([]);
    const started = await ticks(schedule, 'spread-', T0 + 30 * 24 * 60 * MINUTE, 200);
    expect(started.reduce((a, b) => a + b, 0)).toBe(FLEET);
    expect(Math.max(...started)).toBeLessThanOrEqual(25);
    // Across the two-hour window: about 8 a minute, in most of its 120 minutes, none after it ends
    // (the cap never held any back), the first minute far from the whole fleet.
    expect(started.length).toBeLessThanOrEqual(121);
    expect(started.filter((n) => n > 0).length).toBeGreaterThanOrEqual(100);
    expect(started[0]).toBeLessThanOrEqual(25);
    const ops = await superQuery<{ n: number; reason: string; kind: string }>(
      s.controlDb,
      `SELECT count(*)::int AS n, o.params ->> 'reason' AS reason, o.params ->> 'rotate' AS kind FROM operations o
         JOIN tenants t ON t.id = o.tenant_id WHERE t.slug LIKE 'spread-%' GROUP BY 2, 3`,
    );
    expect(ops).toEqual([{ n: FLEET, reason: 'schedule', kind: 'password' }]);
    // Each one audited as the scheduler's.
    const [audit] = await superQuery<{ n: number }>(
      s.controlDb,
      `SELECT count(*)::int AS n FROM audit_log WHERE action = 'tenant.credentials.rotate' AND actor_name = 'tenantry-scheduler'
          AND tenant_slug LIKE 'spread-%'`,
    );
    expect(audit?.n).toBe(FLEET);
  });

  it('with no spread window configured, the per-tick cap alone spreads them: exactly the cap a minute', async () => {
    await fleet('burst-', FLEET);
    const schedule = scheduleOf({ everyDays: 30, spreadHours: 0, graceMinutes: 60 }, 25);
    const started = await ticks(schedule, 'burst-', T0 + 30 * 24 * 60 * MINUTE, 100);
    expect(started).toEqual(Array.from({ length: FLEET / 25 }, () => 25));
  });
});
