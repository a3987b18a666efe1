import type { TaskList } from 'graphile-worker';
import type { Logger } from 'pino';
import type { Db } from '../db/db.js';
import { retiresDue, rotationCandidates } from '../db/rotations.js';
import { isTenantryError } from '../domain/errors.js';
import { selectDueRotations } from '../domain/rotation.js';
import type { RotationPolicy, Tier, TierCatalog } from '../domain/tiers.js';
import { type CredentialService, SCHEDULER_ACTOR } from '../services/credentials.js';

/** graphile-worker's cron task of the rotation schedule. */
export const ROTATION_TICK_TASK = 'credential-rotation-tick';

export interface RotationScheduleOptions {
  /** Rotations and retires started per tick at most (a tick a minute: the most that start in any minute). */
  maxPerTick: number;
  /** Five-field cron of the ticks, or null: no scheduled rotation (rotations on request only). */
  schedule: string | null;
  log: Logger;
}

export interface TickResult {
  /** Operations started (their ids): retires of ended grace periods, then due rotations. */
  retires: string[];
  rotations: string[];
  /** Subjects due or to retire that were left for a later tick (busy, refused, over the cap). */
  deferred: number;
}

/**
 * Scheduled credential rotation, per tier (`rotation` in templates/tiers.json), on the job queue: each
 * tick first retires the old logins whose grace period is over, then starts the rotations that are
 * due, oldest first, at most `maxPerTick` operations in all. A subject falls due one interval after
 * its last rotation (or its onboarding) plus its own offset within the tier's spread window
 * (domain/rotation.ts), so a fleet onboarded in one minute still rotates across the window, and the
 * cap bounds what starts in any minute whatever the backlog (a fleet that never rotated, after an
 * upgrade). Each start goes through CredentialService, the API's checks and audit included: a tenant
 * with an operation in flight (a promotion, say) waits for a later tick.
 */
export class RotationSchedule {
  private readonly policies: Partial<Record<Tier, RotationPolicy>>;

  constructor(
    private readonly db: Db,
    private readonly credentials: CredentialService,
    catalog: TierCatalog,
    private readonly opts: RotationScheduleOptions,
  ) {
    this.policies = Object.fromEntries(
      Object.entries(catalog.tiers)
        .filter(([, def]) => def.rotation !== undefined)
        .map(([tier, def]) => [tier, def.rotation]),
    );
  }

  async tick(now = new Date()): Promise<TickResult> {
    const ctx = { actor: SCHEDULER_ACTOR, requestId: `schedule:${now.toISOString()}` };
    const out: TickResult = { retires: [], rotations: [], deferred: 0 };
    const budget = () => this.opts.maxPerTick - out.retires.length - out.rotations.length;
    const start = async (run: () => Promise<{ body: { operation: { id: string } } }>, into: string[]) => {
      try {
        into.push((await run()).body.operation.id);
      } catch (e) {
        // Refused now (busy, in grace, no longer active): a later tick tries again.
        if (!isTenantryError(e) || e.retryable) throw e;
        out.deferred++;
        this.opts.log.debug({ err: e.message, code: e.code }, 'scheduled rotation deferred');
      }
    };
    const toRetire = await retiresDue(this.db, now, this.opts.maxPerTick);
    for (const r of toRetire) {
      if (budget() <= 0 || !r.tenantId) {
        out.deferred++;
        continue;
      }
      const tenantId = r.tenantId;
      await start(() => this.credentials.retire(ctx, tenantId), out.retires);
    }
    const due = selectDueRotations(
      await rotationCandidates(this.db),
      this.policies,
      now.getTime(),
      Math.max(0, budget()),
    );
    for (const d of due) {
      await start(
        () => this.credentials.rotateCredentials(ctx, d.slug, { reason: 'schedule' }),
        out.rotations,
      );
    }
    if (out.retires.length + out.rotations.length > 0)
      this.opts.log.info(
        { retires: out.retires.length, rotations: out.rotations.length, deferred: out.deferred },
        'scheduled credential rotations started',
      );
    return out;
  }

  /** The job queue's task of the ticks. */
  get taskList(): TaskList {
    return {
      [ROTATION_TICK_TASK]: async () => {
        await this.tick();
      },
    };
  }

  /** graphile-worker's `crontab` line ('' when off): one tick per minute across processes. */
  get crontab(): string {
    return this.opts.schedule === null
      ? ''
      : `${this.opts.schedule} ${ROTATION_TICK_TASK} ?jobKey=credential-rotation-tick&max=1\n`;
  }
}
