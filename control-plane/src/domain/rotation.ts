import type { RotationPolicy, Tier } from './tiers.js';

/**
 * Credential and key rotation, as the domain sees it: what a `rotate` operation is asked to do, and
 * when a scheduled one is due. Plain values and arithmetic; the SQL, the data plane and the job queue
 * live elsewhere (db/rotations.ts, engine/local-resources.ts, rotation/).
 */

/**
 * What a `rotate` operation does:
 * - `password`: a new password on the idle login of the group, published as the secret's new
 *   current version (the old version stays as the previous one). The group's old login keeps
 *   working until its grace period ends.
 * - `retire`: after the grace period, every login of the group but the current one loses its
 *   password and its sessions.
 * - `key`: the tenant's data key replaced, every version of its secrets re-encrypted under the new
 *   key, the old key destroyed.
 */
export const ROTATIONS = ['password', 'retire', 'key'] as const;
export type Rotation = (typeof ROTATIONS)[number];

/** Whose login a rotation changes: the tenant's own, or the pool's shared login (every pool tenant's). */
export type RotationSubject = 'tenant' | 'pool';

/** A `rotate` operation's params. */
export interface RotationParams {
  rotate: Rotation;
  subject: RotationSubject;
  /** `password`: how long the old login keeps working once the new password is published. */
  graceMs?: number;
  /** Who asked: an operator through the API, or the schedule. */
  reason: 'api' | 'schedule';
}

export const isRotationParams = (p: Record<string, unknown>): p is Record<string, unknown> & RotationParams =>
  (ROTATIONS as readonly string[]).includes(String(p.rotate)) &&
  (p.subject === 'tenant' || p.subject === 'pool');

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;

export const rotationIntervalMs = (p: RotationPolicy): number => p.everyDays * DAY_MS;
export const rotationSpreadMs = (p: RotationPolicy): number => p.spreadHours * HOUR_MS;
export const rotationGraceMs = (p: RotationPolicy): number => p.graceMinutes * MINUTE_MS;

/**
 * A subject's fixed offset within the spread window: a hash of its id (FNV-1a, then murmur3's
 * finalizer, which spreads ids that differ in a few characters), so each tenant keeps its own slot
 * rotation after rotation and a fleet created in one minute still rotates across the window.
 */
export function rotationOffsetMs(subjectId: string, spreadMs: number): number {
  if (spreadMs <= 0) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < subjectId.length; i++) {
    h ^= subjectId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return Math.floor(((h >>> 0) / 0x1_0000_0000) * spreadMs);
}

/** When a subject whose password is `since` old (ms epoch) is next due: one interval on, plus its offset. */
export const rotationDueAt = (since: number, policy: RotationPolicy, subjectId: string): number =>
  since + rotationIntervalMs(policy) + rotationOffsetMs(subjectId, rotationSpreadMs(policy));

/**
 * The oldest a password may be before drift calls it unexpected: the interval and the whole spread
 * window, plus a day for a schedule held back by busy tenants or the per-minute cap.
 */
export const maxPasswordAgeMs = (policy: RotationPolicy): number =>
  rotationIntervalMs(policy) + rotationSpreadMs(policy) + DAY_MS;

/** A subject the schedule may rotate: a tenant, or the pool's shared login. */
export interface RotationCandidate {
  /** The tenant's id, or `pool`. */
  subjectId: string;
  tier: Tier;
  /** When its current password was set (ms epoch): its last rotation, or its onboarding. */
  since: number;
  /** An operation of the subject is queued or running (it waits for a later tick). */
  busy: boolean;
  /** Its previous rotation's old login is not retired yet (the retire comes first). */
  inGrace: boolean;
}

/**
 * The subjects due now, in the order they fell due, at most `cap` (the scheduler's per-tick budget:
 * with a tick a minute, no more than `cap` rotations start in any minute). Busy subjects and subjects
 * still in a grace period wait; tiers without a policy never rotate on their own.
 */
export function selectDueRotations<C extends RotationCandidate>(
  candidates: readonly C[],
  policies: Partial<Record<Tier, RotationPolicy>>,
  now: number,
  cap: number,
): (C & { dueAt: number })[] {
  const due: (C & { dueAt: number })[] = [];
  for (const c of candidates) {
    const policy = policies[c.tier];
    if (!policy || c.busy || c.inGrace) continue;
    const dueAt = rotationDueAt(c.since, policy, c.subjectId);
    if (dueAt <= now) due.push({ ...c, dueAt });
  }
  due.sort((a, b) => a.dueAt - b.dueAt || (a.subjectId < b.subjectId ? -1 : 1));
  return due.slice(0, Math.max(0, cap));
}
