import { describe, expect, it } from 'vitest';
import { TenantryError } from '../../control-plane/src/domain/errors.js';
import {
  assignWaves,
  type FleetMember,
  failureOutcome,
  normalizeWaves,
  type RolloutTier,
  waveState,
} from '../../control-plane/src/domain/rollout.js';

/** Wave planning and the error policy of fleet schema rollouts (domain/rollout.ts). */
const fleet: FleetMember[] = [
  ...Array.from({ length: 60 }, (_, i) => ({
    id: `p-${i}`,
    slug: `pool-${i}`,
    tier: 'pool' as RolloutTier,
    version: 1,
  })),
  ...Array.from({ length: 30 }, (_, i) => ({
    id: `b-${i}`,
    slug: `bridge-${i}`,
    tier: 'bridge' as RolloutTier,
    version: 1,
  })),
  ...Array.from({ length: 10 }, (_, i) => ({
    id: `s-${i}`,
    slug: `silo-${i}`,
    tier: 'silo' as RolloutTier,
    version: 1,
  })),
];
const inWave = (assignment: Map<string, number>, wave: number) =>
  fleet.filter((t) => assignment.get(t.id) === wave);
const refused = (fn: () => unknown, message: RegExp) => {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(TenantryError);
  expect((caught as TenantryError).code).toBe('ROLLOUT_INVALID');
  expect((caught as TenantryError).message).toMatch(message);
};

describe('normalizeWaves', () => {
  it('defaults to a canary of 3 tenants, one at a time, then the rest', () => {
    expect(normalizeWaves(undefined)).toEqual([
      { name: 'canary', selector: { kind: 'count', count: 3 }, parallelism: 1 },
      { name: 'rest', selector: { kind: 'rest' }, parallelism: 4 },
    ]);
  });

  it('adds a rest wave when the last wave selects, so no tenant is left behind', () => {
    expect(normalizeWaves([{ tiers: ['pool'], parallelism: 8 }])).toEqual([
      { name: 'wave-1', selector: { kind: 'tiers', tiers: ['pool'] }, parallelism: 8 },
      { name: 'rest', selector: { kind: 'rest' }, parallelism: 8 },
    ]);
  });

  it.each([
    [[{ tiers: ['pool' as const], slugs: ['a-b-c'] }], /selects by tiers and slugs/],
    [[{}, { percent: 10 }], /only the last wave may/],
    [
      [
        { name: 'x', count: 1 },
        { name: 'x', tiers: ['pool' as const] },
      ],
      /two waves are named x/,
    ],
    [[{ percent: 0 }], /percent must be above 0/],
    [[{ count: 0 }], /count must be a positive integer/],
    [[{ parallelism: 33 }], /parallelism must be an integer from 1 to 32/],
    [[{ slugs: [] }], /slugs must name at least one tenant/],
    [Array.from({ length: 21 }, () => ({ percent: 1 })), /at most 20 waves/],
  ])('refuses %j', (waves, message) => {
    refused(() => normalizeWaves(waves), message);
  });
});

describe('assignWaves', () => {
  it('puts every tenant in exactly one wave', () => {
    const waves = normalizeWaves([{ count: 3 }, { percent: 10 }, { tiers: ['silo'] }]);
    const a = assignWaves('ro_x', 2, waves, fleet);
    expect(a.size).toBe(fleet.length);
    expect(new Set(a.values())).toEqual(new Set([0, 1, 2, 3]));
  });

  it('a count spreads across tiers (the default canary takes one of each)', () => {
    const a = assignWaves('ro_x', 2, normalizeWaves(undefined), fleet);
    expect(
      inWave(a, 0)
        .map((t) => t.tier)
        .sort(),
    ).toEqual(['bridge', 'pool', 'silo']);
  });

  it('a percentage is of the tenants still behind, rounded up', () => {
    const behind = fleet.map((t, i) => (i % 2 === 0 ? t : { ...t, version: 2 }));
    const a = assignWaves('ro_x', 2, normalizeWaves([{ percent: 10 }]), behind);
    const first = behind.filter((t) => a.get(t.id) === 0);
    expect(first).toHaveLength(5);
    expect(first.every((t) => t.version === 1)).toBe(true);
  });

  it('is the same for the same rollout, and differs between rollouts', () => {
    const waves = normalizeWaves([{ percent: 20 }]);
    const ids = (r: string) => inWave(assignWaves(r, 2, waves, fleet), 0).map((t) => t.id);
    expect(ids('ro_a')).toEqual(ids('ro_a'));
    expect(ids('ro_a')).not.toEqual(ids('ro_b'));
  });

  it('slugs and tiers take tenants already at the version too; samples only those behind', () => {
    const at = fleet.map((t) => (t.slug === 'bridge-0' || t.tier === 'silo' ? { ...t, version: 2 } : t));
    const a = assignWaves(
      'ro_x',
      2,
      normalizeWaves([{ slugs: ['bridge-0'] }, { tiers: ['silo'] }, { count: 50 }]),
      at,
    );
    expect(at.filter((t) => a.get(t.id) === 0).map((t) => t.slug)).toEqual(['bridge-0']);
    expect(at.filter((t) => a.get(t.id) === 1)).toHaveLength(10);
    expect(at.filter((t) => a.get(t.id) === 2).every((t) => t.version === 1)).toBe(true);
  });

  it('refuses a slug of no live tenant, and one an earlier wave took', () => {
    refused(
      () => assignWaves('ro_x', 2, normalizeWaves([{ slugs: ['nope-1'] }]), fleet),
      /no live tenant for slug\(s\) nope-1/,
    );
    refused(
      () => assignWaves('ro_x', 2, normalizeWaves([{ tiers: ['pool'] }, { slugs: ['pool-3'] }]), fleet),
      /pool-3 already in an earlier wave/,
    );
  });
});

describe('the error policy', () => {
  it('pause: a failure past maxFailures pauses the rollout (failed); those within it are parked', () => {
    expect(failureOutcome({ onError: 'pause', maxFailures: 0 }, 0)).toEqual({
      status: 'failed',
      pause: true,
    });
    expect(failureOutcome({ onError: 'pause', maxFailures: 2 }, 1)).toEqual({
      status: 'parked',
      pause: false,
    });
    expect(failureOutcome({ onError: 'pause', maxFailures: 2 }, 2)).toEqual({
      status: 'failed',
      pause: true,
    });
  });

  it('continue: every failure is parked and the rollout goes on', () => {
    expect(failureOutcome({ onError: 'continue', maxFailures: 0 }, 40)).toEqual({
      status: 'parked',
      pause: false,
    });
  });

  it('a wave is healthy once nothing waits or runs and nothing failed; parked tenants do not hold it', () => {
    expect(waveState({ pending: 1, succeeded: 4 })).toBe('active');
    expect(waveState({ running: 1 })).toBe('active');
    expect(waveState({ succeeded: 4, parked: 2, skipped: 1 })).toBe('healthy');
    expect(waveState({ succeeded: 4, failed: 1 })).toBe('unhealthy');
  });
});
