import * as crypto from 'node:crypto';
import { TenantryError } from './errors.js';
import type { Tier } from './tiers.js';

/**
 * Fleet schema rollouts, the rules without the I/O: a rollout's and a tenant's states, how waves
 * pick their tenants, when a failure pauses the rollout, and when a wave may start. The runner
 * (rollout/runner.ts) and the service (services/rollouts.ts) apply them; docs/rollouts.md tells them.
 */

export const ROLLOUT_STATUSES = ['running', 'paused', 'completed', 'cancelled'] as const;
export type RolloutStatus = (typeof ROLLOUT_STATUSES)[number];
/** A rollout that still holds the fleet's one rollout slot. */
export const OPEN_ROLLOUT_STATUSES: readonly RolloutStatus[] = ['running', 'paused'];

/**
 * A tenant in a rollout: `failed` is a failure that paused the rollout (retried on resume);
 * `parked` one the rollout went on without (retried on request); `skipped` nothing to do (already at
 * the version, offboarded, or the rollout was cancelled first).
 */
export const ROLLOUT_TENANT_STATUSES = [
  'pending',
  'running',
  'succeeded',
  'failed',
  'parked',
  'skipped',
] as const;
export type RolloutTenantStatus = (typeof ROLLOUT_TENANT_STATUSES)[number];

export const ON_ERROR = ['pause', 'continue'] as const;
export type OnError = (typeof ON_ERROR)[number];

/** Tiers a rollout migrates (the account tier's silo lives in its own AWS account). */
export type RolloutTier = Exclude<Tier, 'account'>;
export const ROLLOUT_TIERS: readonly RolloutTier[] = ['pool', 'bridge', 'silo'];

export const DEFAULT_PARALLELISM = 4;
export const MAX_PARALLELISM = 32;
export const MAX_WAVES = 20;
/** The default canary: this many tenants, spread across the tiers (one of each when all three exist). */
export const CANARY_COUNT = 3;

/** A wave as requested: at most one selector; none takes every tenant no earlier wave took. */
export interface WaveRequest {
  name?: string;
  tiers?: RolloutTier[];
  slugs?: string[];
  /** A share of the tenants the rollout migrates, 0 < percent ≤ 100. */
  percent?: number;
  /** This many tenants, spread across tiers. */
  count?: number;
  parallelism?: number;
}

export interface Wave {
  name: string;
  selector:
    | { kind: 'tiers'; tiers: RolloutTier[] }
    | { kind: 'slugs'; slugs: string[] }
    | { kind: 'percent'; percent: number }
    | { kind: 'count'; count: number }
    | { kind: 'rest' };
  parallelism: number;
}

/** Without waves: a canary of a few tenants (one per tier), then everything else. */
export function defaultWaves(): WaveRequest[] {
  return [
    { name: 'canary', count: CANARY_COUNT, parallelism: 1 },
    { name: 'rest', parallelism: DEFAULT_PARALLELISM },
  ];
}

const invalid = (message: string, context: Record<string, unknown> = {}) =>
  new TenantryError('ROLLOUT_INVALID', message, { context });

/**
 * The waves as the rollout records them: each with its name, one selector and its parallelism. When
 * the last wave selects, a `rest` wave (the last wave's parallelism) takes what no wave took, so no
 * tenant is left behind.
 */
export function normalizeWaves(requested: WaveRequest[] | undefined): Wave[] {
  const input = requested && requested.length > 0 ? requested : defaultWaves();
  if (input.length > MAX_WAVES) throw invalid(`a rollout has at most ${MAX_WAVES} waves`);
  const waves = input.map((w, i): Wave => {
    const given = (['tiers', 'slugs', 'percent', 'count'] as const).filter((k) => w[k] !== undefined);
    if (given.length > 1) {
      throw invalid(
        `wave ${i + 1} selects by ${given.join(' and ')}: a wave selects by one of tiers, slugs, percent or count`,
        { wave: i },
      );
    }
    const parallelism = w.parallelism ?? DEFAULT_PARALLELISM;
    if (!Number.isInteger(parallelism) || parallelism < 1 || parallelism > MAX_PARALLELISM)
      throw invalid(`wave ${i + 1}: parallelism must be an integer from 1 to ${MAX_PARALLELISM}`);
    const name = w.name ?? `wave-${i + 1}`;
    if (w.tiers !== undefined) {
      if (w.tiers.length === 0) throw invalid(`wave ${i + 1}: tiers must name at least one tier`);
      return { name, selector: { kind: 'tiers', tiers: [...new Set(w.tiers)] }, parallelism };
    }
    if (w.slugs !== undefined) {
      if (w.slugs.length === 0) throw invalid(`wave ${i + 1}: slugs must name at least one tenant`);
      return { name, selector: { kind: 'slugs', slugs: [...new Set(w.slugs)] }, parallelism };
    }
    if (w.percent !== undefined) {
      if (!(w.percent > 0 && w.percent <= 100))
        throw invalid(`wave ${i + 1}: percent must be above 0 and at most 100`);
      return { name, selector: { kind: 'percent', percent: w.percent }, parallelism };
    }
    if (w.count !== undefined) {
      if (!Number.isInteger(w.count) || w.count < 1)
        throw invalid(`wave ${i + 1}: count must be a positive integer`);
      return { name, selector: { kind: 'count', count: w.count }, parallelism };
    }
    return { name, selector: { kind: 'rest' }, parallelism };
  });
  waves.slice(0, -1).forEach((w, i) => {
    if (w.selector.kind === 'rest')
      throw invalid(`wave ${i + 1} selects every remaining tenant, so only the last wave may`);
  });
  const names = waves.map((w) => w.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw invalid(`two waves are named ${dup}`);
  const last = waves[waves.length - 1] as Wave;
  if (last.selector.kind !== 'rest') {
    if (names.includes('rest')) throw invalid('a wave named rest must be the last and select nothing');
    waves.push({ name: 'rest', selector: { kind: 'rest' }, parallelism: last.parallelism });
  }
  return waves;
}

/** A live tenant as the rollout plans it. */
export interface FleetMember {
  id: string;
  slug: string;
  tier: RolloutTier;
  version: number;
}

/**
 * Which wave each tenant is in. Tiers and slugs take every match (a tenant already at the version
 * too, recorded as skipped); percent and count sample, deterministically per rollout, among the
 * tenants still behind the version; the rest wave takes the remainder. A slug that names no live
 * tenant, or one already taken by an earlier wave, is refused.
 */
export function assignWaves(
  rolloutId: string,
  toVersion: number,
  waves: Wave[],
  fleet: FleetMember[],
): Map<string, number> {
  const bySlug = new Map(fleet.map((t) => [t.slug, t]));
  const unknown = waves.flatMap((w) =>
    w.selector.kind === 'slugs' ? w.selector.slugs.filter((s) => !bySlug.has(s)) : [],
  );
  if (unknown.length > 0) {
    throw invalid(`no live tenant for slug(s) ${unknown.slice(0, 20).join(', ')}`, { slugs: unknown });
  }
  // crypto.hash is the same digest at a quarter of a createHash chain's cost (10,000 tenants: 30 to
  // 7 ms per POST); it came in Node 20.12, and package.json allows 20.11 (hence the namespace import).
  const order = (t: FleetMember) =>
    typeof crypto.hash === 'function'
      ? crypto.hash('sha256', `${rolloutId}:${t.id}`, 'hex')
      : crypto.createHash('sha256').update(`${rolloutId}:${t.id}`).digest('hex');
  const ranked = [...fleet].map((t) => ({ t, key: order(t) })).sort((a, b) => (a.key < b.key ? -1 : 1));
  const behind = ranked.filter((r) => r.t.version < toVersion).map((r) => r.t);
  const behindTotal = behind.length;
  const wave = new Map<string, number>();
  waves.forEach((w, i) => {
    const sel = w.selector;
    const free = (t: FleetMember) => !wave.has(t.id);
    if (sel.kind === 'slugs') {
      const taken = sel.slugs.filter((s) => wave.has((bySlug.get(s) as FleetMember).id));
      if (taken.length > 0)
        throw invalid(`wave ${w.name}: ${taken.join(', ')} already in an earlier wave`, { slugs: taken });
      for (const s of sel.slugs) wave.set((bySlug.get(s) as FleetMember).id, i);
    } else if (sel.kind === 'tiers') {
      for (const { t } of ranked) if (free(t) && sel.tiers.includes(t.tier)) wave.set(t.id, i);
    } else if (sel.kind === 'percent') {
      const n = Math.ceil((sel.percent / 100) * behindTotal);
      for (const t of behind.filter(free).slice(0, n)) wave.set(t.id, i);
    } else if (sel.kind === 'count') {
      // Round-robin across tiers, so a canary exercises every tier's path.
      const queues = ROLLOUT_TIERS.map((tier) => behind.filter((t) => free(t) && t.tier === tier));
      let n = sel.count;
      while (n > 0 && queues.some((q) => q.length > 0)) {
        for (const q of queues) {
          const t = q.shift();
          if (!t || n === 0) continue;
          wave.set(t.id, i);
          n--;
        }
      }
    } else {
      for (const { t } of ranked) if (free(t)) wave.set(t.id, i);
    }
  });
  return wave;
}

/** What a tenant's terminal failure becomes, given the rollout's error policy and failures so far. */
export function failureOutcome(
  policy: { onError: OnError; maxFailures: number },
  failuresBefore: number,
): { status: 'failed' | 'parked'; pause: boolean } {
  if (policy.onError === 'continue') return { status: 'parked', pause: false };
  const pause = failuresBefore + 1 > policy.maxFailures;
  return { status: pause ? 'failed' : 'parked', pause };
}

export type WaveCounts = Partial<Record<RolloutTenantStatus, number>>;

/**
 * A wave is done once none of its tenants waits or runs; it is healthy, and the next may start,
 * when it is done and none of its tenants is `failed` (a failure that paused the rollout).
 */
export function waveState(counts: WaveCounts): 'active' | 'healthy' | 'unhealthy' {
  if ((counts.pending ?? 0) + (counts.running ?? 0) > 0) return 'active';
  return (counts.failed ?? 0) > 0 ? 'unhealthy' : 'healthy';
}

/** Tenants the rollout counts as failures against `maxFailures`. */
export const failuresIn = (counts: WaveCounts): number => (counts.failed ?? 0) + (counts.parked ?? 0);

/** A rollout id as the API hands it out. */
export const ROLLOUT_ID_PATTERN = '^ro_[0-9a-f]{28}$';
