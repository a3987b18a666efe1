import { describe, expect, it } from 'vitest';
import {
  maxPasswordAgeMs,
  type RotationCandidate,
  rotationDueAt,
  rotationOffsetMs,
  selectDueRotations,
} from '../../control-plane/src/domain/rotation.js';

const DAY = 86_400_000;
const policy = { everyDays: 30, spreadHours: 24, graceMinutes: 60 };
const uuid = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;

describe('when a rotation is due', () => {
  it('each subject keeps its own offset inside the spread window', () => {
    const spread = 24 * 3600_000;
    const offsets = Array.from({ length: 1000 }, (_, i) => rotationOffsetMs(uuid(i), spread));
    expect(offsets.every((o) => o >= 0 && o < spread)).toBe(true);
    expect(rotationOffsetMs(uuid(7), spread)).toBe(offsets[7]);
    // 1,000 subjects over 1,440 minutes: no hour holds more than twice its share.
    const perHour = new Map<number, number>();
    for (const o of offsets)
      perHour.set(Math.floor(o / 3600_000), (perHour.get(Math.floor(o / 3600_000)) ?? 0) + 1);
    expect(perHour.size).toBe(24);
    expect(Math.max(...perHour.values())).toBeLessThanOrEqual(2 * (1000 / 24));
    expect(rotationOffsetMs(uuid(1), 0)).toBe(0);
  });

  it('falls due one interval after the last rotation, plus the offset', () => {
    const since = Date.UTC(2026, 0, 1);
    expect(rotationDueAt(since, policy, uuid(3))).toBe(since + 30 * DAY + rotationOffsetMs(uuid(3), DAY));
    expect(maxPasswordAgeMs(policy)).toBe(32 * DAY);
  });

  it('selects the due subjects oldest first, skipping busy ones, those in a grace period and tiers without a policy, at most the cap', () => {
    const since = Date.UTC(2026, 0, 1);
    const c = (i: number, over: Partial<RotationCandidate> = {}): RotationCandidate => ({
      subjectId: uuid(i),
      tier: 'bridge',
      since,
      busy: false,
      inGrace: false,
      ...over,
    });
    const candidates = [
      c(1),
      c(2, { busy: true }),
      c(3, { inGrace: true }),
      c(4, { tier: 'pool' }),
      c(5, { since: since + 40 * DAY }),
      c(6, { since: since - DAY }),
      c(7),
    ];
    const now = since + 32 * DAY;
    const due = selectDueRotations(candidates, { bridge: policy }, now, 10);
    expect(due.map((d) => d.subjectId)).toEqual(
      [candidates[5]!, candidates[0]!, candidates[6]!]
        .map((x) => ({ id: x.subjectId, at: rotationDueAt(x.since, policy, x.subjectId) }))
        .sort((a, b) => a.at - b.at)
        .map((x) => x.id),
    );
    expect(selectDueRotations(candidates, { bridge: policy }, now, 2)).toHaveLength(2);
    expect(selectDueRotations(candidates, { bridge: policy }, since + 29 * DAY, 10)).toEqual([]);
  });
});
