import { type Actor, appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import { enqueueRolloutRun } from '../db/jobs.js';
import {
  findRollout,
  insertLedger,
  insertRollout,
  type LedgerRow,
  ledgerPage,
  ledgerTenant,
  listRollouts,
  liveFleet,
  openRollout,
  type RolloutRow,
  retryFailed,
  retryTenant,
  savePlatform,
  setRolloutStatus,
  skipPending,
  type WaveRecord,
  waveCounts,
} from '../db/rollouts.js';
import { TenantryError } from '../domain/errors.js';
import { newRolloutId } from '../domain/ids.js';
import type { Queryable } from '../domain/queryable.js';
import {
  assignWaves,
  normalizeWaves,
  type OnError,
  ROLLOUT_TENANT_STATUSES,
  type RolloutTenantStatus,
  type WaveCounts,
  type WaveRequest,
  waveState,
} from '../domain/rollout.js';

/** A version that drops a table or column, and the earlier version that stopped using it (the template lint finds them). */
export interface Contract {
  version: number;
  object: string;
  deprecatedAt: number;
}

export interface RequestContext {
  actor: Actor;
  requestId: string;
}

export interface StartRollout {
  toVersion: number;
  waves?: WaveRequest[];
  onError?: OnError;
  maxFailures?: number;
}

export interface RolloutProgress extends Record<RolloutTenantStatus, number> {
  total: number;
  /** Tenants the rollout is done with: succeeded, parked or skipped. */
  done: number;
  percent: number;
}

export interface WaveView extends WaveRecord {
  index: number;
  status: 'pending' | 'running' | 'healthy' | 'unhealthy';
  counts: Record<RolloutTenantStatus, number>;
  durationMs: number | null;
}

export interface RolloutView extends Omit<RolloutRow, 'waves' | 'currentWave'> {
  currentWave: string | null;
  durationMs: number | null;
  progress: RolloutProgress;
  waves: WaveView[];
}

export interface RolloutDetail extends RolloutView {
  tenants: (LedgerRow & { durationMs: number | null })[];
  nextCursor: string | null;
}

const zero = (): Record<RolloutTenantStatus, number> =>
  Object.fromEntries(ROLLOUT_TENANT_STATUSES.map((s) => [s, 0])) as Record<RolloutTenantStatus, number>;
const span = (a: string | null, b: string | null) => (a && b ? Date.parse(b) - Date.parse(a) : null);

const isUniqueViolation = (e: unknown, constraint: string) =>
  (e as { code?: string }).code === '23505' && (e as { constraint?: string }).constraint === constraint;

/**
 * The rollout use cases the API opens (docs/rollouts.md). Each writes its change and its audit
 * record in one transaction and enqueues the runner there; the runner does the migrating.
 */
export class RolloutService {
  constructor(
    private readonly db: Db,
    private readonly opts: {
      /** The newest version of the template directory this process loaded. */
      newestVersion: number;
      contracts: readonly Contract[];
      /** Rollouts run on the local target only (the aws target's tenant schemas live in stacks). */
      available: boolean;
    },
  ) {}

  private inProgress(open: RolloutRow): TenantryError {
    return new TenantryError(
      'ROLLOUT_IN_PROGRESS',
      `rollout ${open.id} (to version ${open.toVersion}) is ${open.status}: finish, resume or cancel it first`,
      { context: { rolloutId: open.id } },
    );
  }

  async create(ctx: RequestContext, input: StartRollout): Promise<RolloutView> {
    if (!this.opts.available)
      throw new TenantryError('ROLLOUT_INVALID', 'fleet schema rollouts run on the local target only');
    const newest = this.opts.newestVersion;
    if (!Number.isInteger(input.toVersion) || input.toVersion < 1 || input.toVersion > newest) {
      throw new TenantryError(
        'ROLLOUT_INVALID',
        `version ${input.toVersion} is not in the template directory, which has versions 1 to ${newest}`,
        { context: { toVersion: input.toVersion, newest } },
      );
    }
    const waves = normalizeWaves(input.waves);
    const onError = input.onError ?? 'pause';
    const maxFailures = input.maxFailures ?? 0;
    const id = newRolloutId();
    const created = await this.db
      .tx(async (q) => {
        const open = await openRollout(q);
        if (open) throw this.inProgress(open);
        const fleet = await liveFleet(q);
        this.checkContracts(input.toVersion, fleet);
        const wave = assignWaves(id, input.toVersion, waves, fleet);
        await insertRollout(q, {
          id,
          toVersion: input.toVersion,
          onError,
          maxFailures,
          waves: waves.map((w) => ({ ...w, startedAt: null, finishedAt: null })),
          createdBy: ctx.actor.name,
        });
        await insertLedger(
          q,
          id,
          fleet.map((t) => {
            const at = t.version >= input.toVersion;
            return {
              tenantId: t.id,
              slug: t.slug,
              tier: t.tier,
              wave: wave.get(t.id) ?? waves.length - 1,
              status: at ? 'skipped' : 'pending',
              fromVersion: t.version,
              note: at ? `already at version ${t.version}` : null,
            };
          }),
        );
        await enqueueRolloutRun(q, id);
        const pending = fleet.filter((t) => t.version < input.toVersion).length;
        await appendAudit(q, {
          actor: ctx.actor,
          action: 'rollout.create',
          requestId: ctx.requestId,
          details: {
            rolloutId: id,
            toVersion: input.toVersion,
            onError,
            maxFailures,
            waves: waves.map((w) => ({ name: w.name, selector: w.selector, parallelism: w.parallelism })),
            tenants: fleet.length,
            pending,
          },
        });
        return id;
      })
      .catch((e: unknown) => {
        if (isUniqueViolation(e, 'rollouts_one_open'))
          throw new TenantryError('ROLLOUT_IN_PROGRESS', 'another rollout was started at the same time');
        throw e;
      });
    return this.view(created);
  }

  /**
   * A version that drops what an earlier version stopped using may reach only tenants already past
   * that earlier version: a tenant's application still reads what its own version uses.
   */
  private checkContracts(toVersion: number, fleet: { slug: string; version: number }[]): void {
    for (const c of this.opts.contracts) {
      if (c.version > toVersion) continue;
      const blocked = fleet.filter((t) => t.version < c.version && t.version < c.deprecatedAt);
      if (blocked.length > 0) {
        throw new TenantryError(
          'ROLLOUT_INVALID',
          `version ${c.version} drops ${c.object}, which version ${c.deprecatedAt} stopped using; ${blocked.length} tenant(s) are still below version ${c.deprecatedAt} (${blocked
            .slice(0, 5)
            .map((t) => t.slug)
            .join(', ')}): roll out version ${c.deprecatedAt} first`,
          { context: { version: c.version, object: c.object, deprecatedAt: c.deprecatedAt } },
        );
      }
    }
  }

  async list(limit: number): Promise<RolloutView[]> {
    const rows = await listRollouts(this.db, limit);
    const counts = await waveCounts(
      this.db,
      rows.map((r) => r.id),
    );
    return rows.map((r) =>
      this.toView(
        r,
        counts.filter((c) => c.rolloutId === r.id),
      ),
    );
  }

  private async view(id: string, q: Queryable = this.db): Promise<RolloutView> {
    const r = await findRollout(q, id);
    if (!r) throw new TenantryError('ROLLOUT_NOT_FOUND', `no rollout ${id}`);
    return this.toView(r, await waveCounts(q, [id]));
  }

  private toView(
    r: RolloutRow,
    counts: { wave: number; status: RolloutTenantStatus; n: number }[],
  ): RolloutView {
    const byWave = r.waves.map(() => zero());
    const total = zero();
    for (const c of counts) {
      const w = byWave[c.wave];
      if (w) w[c.status] += c.n;
      total[c.status] += c.n;
    }
    const all = Object.values(total).reduce((a, b) => a + b, 0);
    const done = total.succeeded + total.parked + total.skipped;
    const { waves, currentWave, ...rest } = r;
    return {
      ...rest,
      currentWave: r.startedAt ? (waves[currentWave]?.name ?? null) : null,
      durationMs: r.startedAt ? span(r.startedAt, r.finishedAt ?? new Date().toISOString()) : null,
      progress: {
        ...total,
        total: all,
        done,
        percent: all === 0 ? 100 : Math.floor((done * 1000) / all) / 10,
      },
      waves: waves.map((w, index) => {
        const c = byWave[index] ?? zero();
        const state = waveState(c as WaveCounts);
        return {
          ...w,
          index,
          status: !w.startedAt ? 'pending' : state === 'active' ? 'running' : state,
          counts: c,
          durationMs: span(w.startedAt, w.finishedAt),
        };
      }),
    };
  }

  /** A rollout with a page of its ledger (slug order; `status` and `wave` filter). */
  async get(
    id: string,
    page: { statuses?: RolloutTenantStatus[]; wave?: string; cursor?: string; limit: number },
  ): Promise<RolloutDetail> {
    const view = await this.view(id);
    let wave: number | undefined;
    if (page.wave !== undefined) {
      wave = view.waves.findIndex((w) => w.name === page.wave);
      if (wave === -1)
        throw new TenantryError('ROLLOUT_INVALID', `rollout ${id} has no wave ${page.wave}`, {
          context: { wave: page.wave },
        });
    }
    let afterSlug: string | undefined;
    if (page.cursor !== undefined) {
      afterSlug = Buffer.from(page.cursor, 'base64url').toString('utf8');
      if (!/^[a-z][a-z0-9-]{2,39}$/.test(afterSlug))
        throw new TenantryError('VALIDATION_FAILED', 'cursor is not one this API handed out');
    }
    const rows = await ledgerPage(this.db, id, {
      ...(page.statuses ? { statuses: page.statuses } : {}),
      ...(wave !== undefined ? { wave } : {}),
      ...(afterSlug ? { afterSlug } : {}),
      limit: page.limit + 1,
    });
    const more = rows.length > page.limit;
    const items = rows.slice(0, page.limit);
    return {
      ...view,
      tenants: items.map((t) => ({ ...t, durationMs: span(t.startedAt, t.finishedAt) })),
      nextCursor:
        more && items.length > 0 ? Buffer.from((items.at(-1) as LedgerRow).slug).toString('base64url') : null,
    };
  }

  private async locked(q: Queryable, id: string): Promise<RolloutRow> {
    const r = await findRollout(q, id, { forUpdate: true });
    if (!r) throw new TenantryError('ROLLOUT_NOT_FOUND', `no rollout ${id}`);
    return r;
  }

  private conflict(r: RolloutRow, action: string): TenantryError {
    return new TenantryError(
      'ROLLOUT_STATE_CONFLICT',
      `rollout ${r.id} is ${r.status}: it cannot be ${action}`,
      {
        context: { rolloutId: r.id, status: r.status },
      },
    );
  }

  /** Stops starting tenants; those in flight finish. */
  async pause(ctx: RequestContext, id: string): Promise<RolloutView> {
    await this.db.tx(async (q) => {
      const r = await this.locked(q, id);
      if (r.status !== 'running') throw this.conflict(r, 'paused');
      await setRolloutStatus(q, id, 'paused', `paused by ${ctx.actor.name}`);
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'rollout.pause',
        requestId: ctx.requestId,
        details: { rolloutId: id },
      });
    });
    return this.view(id);
  }

  /** Goes on where it stopped: the failures that paused it are tried again (a failed platform step too). */
  async resume(ctx: RequestContext, id: string): Promise<RolloutView> {
    await this.db
      .tx(async (q) => {
        const r = await this.locked(q, id);
        if (r.status !== 'paused') throw this.conflict(r, 'resumed');
        const retried = await retryFailed(q, id);
        if ('status' in r.platform && r.platform.status === 'failed')
          await savePlatform(q, id, { ...r.platform, status: 'pending' });
        await setRolloutStatus(q, id, 'running');
        await enqueueRolloutRun(q, id);
        await appendAudit(q, {
          actor: ctx.actor,
          action: 'rollout.resume',
          requestId: ctx.requestId,
          details: { rolloutId: id, retried },
        });
      })
      .catch((e: unknown) => {
        if (isUniqueViolation(e, 'rollouts_one_open'))
          throw new TenantryError('ROLLOUT_IN_PROGRESS', 'another rollout is open');
        throw e;
      });
    return this.view(id);
  }

  /** Ends the rollout: tenants not started stay at their version (skipped); those in flight finish. */
  async cancel(ctx: RequestContext, id: string): Promise<RolloutView> {
    await this.db.tx(async (q) => {
      const r = await this.locked(q, id);
      if (r.status !== 'running' && r.status !== 'paused') throw this.conflict(r, 'cancelled');
      const skipped = await skipPending(q, id);
      await setRolloutStatus(q, id, 'cancelled');
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'rollout.cancel',
        requestId: ctx.requestId,
        details: { rolloutId: id, skipped },
      });
    });
    return this.view(id);
  }

  /**
   * A parked (or failed) tenant tried again, once its cause is fixed. A completed rollout is reopened
   * for it (unless another rollout is open); a paused one runs it on resume.
   */
  async retry(ctx: RequestContext, id: string, slug: string): Promise<RolloutView> {
    await this.db
      .tx(async (q) => {
        const r = await this.locked(q, id);
        if (r.status === 'cancelled') throw this.conflict(r, 'retried');
        const t = await ledgerTenant(q, id, slug);
        if (!t) throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug} in rollout ${id}`);
        if (t.status !== 'parked' && t.status !== 'failed') {
          throw new TenantryError(
            'ROLLOUT_STATE_CONFLICT',
            `tenant ${slug} is ${t.status} in rollout ${id}; only a parked or failed tenant can be retried`,
            { context: { status: t.status } },
          );
        }
        await retryTenant(q, id, t.tenantId);
        if (r.status === 'completed') await setRolloutStatus(q, id, 'running');
        if (r.status !== 'paused') await enqueueRolloutRun(q, id);
        await appendAudit(q, {
          actor: ctx.actor,
          action: 'rollout.tenant.retry',
          tenantId: t.tenantId,
          tenantSlug: t.slug,
          requestId: ctx.requestId,
          details: { rolloutId: id, previous: t.status, error: t.error },
        });
      })
      .catch((e: unknown) => {
        if (isUniqueViolation(e, 'rollouts_one_open'))
          throw new TenantryError(
            'ROLLOUT_IN_PROGRESS',
            'another rollout is open: this one cannot reopen for a retry',
          );
        throw e;
      });
    return this.view(id);
  }
}
