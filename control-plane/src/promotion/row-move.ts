import pg from 'pg';
import type { DataPlane } from '../dataplane/dataplane.js';
import { isTenantryError, TenantryError } from '../domain/errors.js';
import { tenantObjectName } from '../domain/naming.js';
import type { PromotionParams, StepContext, StepTenant } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import { isRowMoveStep } from '../domain/steps.js';
import type { Tier } from '../domain/tiers.js';
import {
  applyGrants,
  freezeTenant,
  ident,
  inTransaction,
  isTenantFrozen,
  proveFreeze,
  renewFreeze,
  unfreezeTenant,
} from '../providers/postgres/index.js';
import {
  applyDeferred,
  copyTable,
  createSlotAndCopy,
  type DeferredDdl,
  dropSecondary,
  listSecondary,
  vacuumTables,
} from './binary-copy.js';
import { assertSameDigests, digest, touchedDigests, verifyConsistent } from './digests.js';
import { LagWatch } from './lag-watch.js';
import { type Placement, placementOf, tablesOf } from './placement.js';
import {
  applyPending,
  clearPromotionMeta,
  dropReplication,
  ensureReplication,
  replicationNames,
  retainedWalBytes,
  slotExists,
  slotLagBytes,
  syncSequences,
} from './replication.js';

/**
 * The row move proper (`ROW_STEPS`: the same on every target, between provisioning and the routing
 * flip), and every step `RowMove.runStep` runs (`ROW_MOVE_STEP_NAMES`: the row move, the readying
 * of a provisioned target, and a rollback's freeze, restore and verification) are named in
 * domain/steps.ts. Routing (provision, the flips, the abort, drops) is each target's:
 * `promotion/local.ts` and `engine/aws.ts`.
 */
export { ROW_STEPS } from '../domain/steps.js';

/**
 * A named point inside a step, for fault injection (crash tests kill the process there). `report`
 * writes into the operation's progress. Never set in production.
 */
export type FaultHook = (
  point: string,
  ctx: { operationId: string; tenantId: string; report: (patch: Record<string, unknown>) => Promise<void> },
) => Promise<void>;

export type Report = (p: Record<string, unknown>) => Promise<void>;
export type Fault = (point: string) => Promise<void>;
export type ReplicationNames = { slot: string; publication: string };

export interface RowMoveOptions {
  /** Abort the promotion if the slot retains more WAL than this (it retains it for every tenant). */
  maxLagBytes: number;
  /** Catch-up ends when a pass applies no more than this many changes; the freeze drains the rest. */
  freezeBelowChanges: number;
  /** Longest the catch-up keeps chasing writers before freezing anyway. */
  maxCatchUpMs: number;
  /** How often the retained WAL is measured while a long step runs. */
  lagPollMs?: number;
  /** How long a freeze waits for the writers' older transactions before it is retried. */
  freezeWaitMs?: number;
  /**
   * The source's write freeze ends by itself this long after its last renewal, enforced by the
   * database's guard: a control plane that crashes inside the freeze holds the tenant's writes for
   * at most this long. Renewed while a step of the frozen window runs; made permanent just before
   * routing flips. Not set for placements a stack manages (the aws target's flip is a stack
   * update we do not renew across): those freezes stand until lifted.
   */
  freezeDeadlineMs?: number;
  /** Rows between two progress reports during a table's copy. */
  copyProgressRows?: number;
  /**
   * Where the promotion's placements are, when not where the local target puts them (the aws
   * target: the source on the shared cluster named by its config, the target in the tenant's
   * stack, perhaps on another server). `progress` is the operation's.
   */
  placements?: (
    t: StepTenant,
    params: PromotionParams,
    progress: Record<string, unknown>,
  ) => { from: Placement; to: Placement };
  fault?: FaultHook;
}

/** An error past the point of no return: the step must be retried forward, never undone. */
export function forwardOnly(e: unknown, what: string): TenantryError {
  if (isTenantryError(e) && e.context.forwardOnly) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new TenantryError('PROVIDER_FAILED', `${what}: ${msg}`, {
    retryable: true,
    context: { forwardOnly: true },
    cause: e,
  });
}

/** How long the freeze recorded in `progress` has lasted so far (null when none was recorded). */
export function freezeLasted(progress: Record<string, unknown>): number | null {
  const started = Date.parse(String(progress.freezeStartedAt ?? ''));
  return Number.isNaN(started) ? null : Date.now() - started;
}

/** What a cutover reports: how long writes were frozen, when routing flipped, the window's end. */
export function cutoverReport(
  progress: Record<string, unknown>,
  cutoverAt: number,
  rollbackWindowMs: number,
): Record<string, unknown> {
  return {
    writeFreezeMs: freezeLasted(progress),
    cutoverAt: new Date(cutoverAt).toISOString(),
    rollbackUntil: new Date(cutoverAt + rollbackWindowMs).toISOString(),
  };
}

/** The freeze passed its deadline between its renewal and being made permanent: retried, re-frozen. */
const lapsedBeforeFlip = () =>
  new TenantryError(
    'PROVIDER_FAILED',
    'the write freeze lapsed just before the flip; retrying with a new freeze',
    {
      retryable: true,
    },
  );

/**
 * Moves a tenant's rows between two placements while it keeps writing, on any target: copy,
 * stream the changes through a row-filtered logical slot, verify every row on a consistent pair of
 * states, freeze this tenant's writes in the database (and prove the freeze holds), drain, verify
 * what changed since; for a rollback, restore the rows and verify them. It knows placements and
 * the data plane, never a key store: where routing points, and when a freeze is lifted, is each
 * target's routing (`LocalPromotion` in promotion/local.ts, `AwsEngine` in engine/aws.ts).
 */
export class RowMove {
  constructor(
    readonly dp: DataPlane,
    private readonly opts: RowMoveOptions,
  ) {}

  /** Fault injection for tests: a hook run at named points inside the steps. */
  setFaultHook(hook: FaultHook | undefined): void {
    this.opts.fault = hook;
  }

  /** The fault points of one operation (no-ops unless a hook is set). */
  faults(operationId: string, tenantId: string, report: Report): Fault {
    return (point: string) =>
      this.opts.fault?.(point, { operationId, tenantId, report }) ?? Promise.resolve();
  }

  /** The admin URL of a placement's database. */
  private urlOf(p: Placement): string {
    return (p.server ?? this.dp).urlFor(p.database);
  }

  /** Runs `fn` on a session of the database holding a placement. */
  async on<T>(p: Placement, fn: (db: Queryable) => Promise<T>): Promise<T> {
    // Another server, or a tenant context to set: a session of its own, never a pooled one.
    if (p.server || p.context) {
      const c = await this.client(p);
      try {
        return await fn(c);
      } finally {
        await c.end().catch(() => undefined);
      }
    }
    return p.database === this.dp.names.database
      ? this.dp.withData(fn)
      : this.dp.withDatabase(p.database, fn);
  }

  /** A dedicated client (COPY streams and session settings need one). */
  private async client(p: Placement): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: this.urlOf(p) });
    c.on('error', () => {});
    await c.connect();
    if (p.context) {
      await c
        .query('SELECT set_config($1, $2, false)', [p.context.setting, p.context.tenantId])
        .catch(async (e) => {
          await c.end().catch(() => undefined);
          throw e;
        });
    }
    return c;
  }

  /** Dedicated clients on each placement, always closed. */
  private async withClients<T>(ps: Placement[], fn: (...clients: pg.Client[]) => Promise<T>): Promise<T> {
    const clients: pg.Client[] = [];
    try {
      for (const p of ps) clients.push(await this.client(p));
      return await fn(...clients);
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    }
  }

  /**
   * Sessions kept open across the steps of one operation's write freeze (freeze, drain, verify,
   * cutover): opening a connection is most of a short step, and these steps are the freeze window.
   * Ended at the cutover or the abort, and whenever a step using them fails.
   */
  private readonly sessions = new Map<string, Promise<pg.Client>>();

  private session(operationId: string, p: Placement): Promise<pg.Client> {
    const key = `${operationId}/${this.urlOf(p)}`;
    let c = this.sessions.get(key);
    if (!c) {
      c = this.client(p).then((client) => {
        client.on('error', () => this.sessions.delete(key));
        client.on('end', () => this.sessions.delete(key));
        return client;
      });
      c.catch(() => this.sessions.delete(key));
      this.sessions.set(key, c);
    }
    return c;
  }

  /** Runs `fn` on the operation's kept sessions of each placement (all ended if it fails). */
  async inSessions<T>(
    operationId: string,
    ps: Placement[],
    fn: (...clients: pg.Client[]) => Promise<T>,
  ): Promise<T> {
    try {
      const clients = await Promise.all(ps.map((p) => this.session(operationId, p)));
      return await fn(...clients);
    } catch (e) {
      await this.endSessions(operationId);
      throw e;
    }
  }

  /** Ends every session kept across a write freeze (at shutdown: the freeze itself is durable). */
  async close(): Promise<void> {
    await Promise.all([...this.sessions.values()].map((c) => c.then((x) => x.end()).catch(() => undefined)));
    this.sessions.clear();
  }

  /** Ends the sessions one operation kept across its write freeze. */
  async endSessions(operationId: string): Promise<void> {
    for (const [key, c] of [...this.sessions]) {
      if (!key.startsWith(`${operationId}/`)) continue;
      this.sessions.delete(key);
      await c.then((x) => x.end()).catch(() => undefined);
    }
  }

  /** Where a promotion's rows are and go (for a rollback: `from` the placement being left). */
  placements(t: StepTenant, params: PromotionParams, progress: Record<string, unknown> = {}) {
    const context = { setting: this.dp.names.tenantSetting, tenantId: t.id };
    const local = (tier: Tier) => {
      const p = placementOf(this.dp, t.slug, tier);
      return p.shared ? { ...p, context } : p;
    };
    return (
      this.opts.placements?.(t, params, progress) ?? {
        from: local(params.fromTier),
        to: local(params.toTier),
      }
    );
  }

  private freeze(
    t: StepTenant,
    p: Placement,
    reason: 'promotion' | 'promotion-target',
    session?: Queryable,
  ): Promise<void> {
    const run = (db: Queryable) =>
      freezeTenant(db, {
        schema: p.schema,
        tenantId: t.id,
        reason,
        ...(p.owner ? { owner: p.owner } : {}),
        writers: p.writers,
        waitMs: this.opts.freezeWaitMs ?? 15_000,
        ...(reason === 'promotion' && this.freezeDeadline() ? { deadlineMs: this.freezeDeadline()! } : {}),
      });
    return session ? run(session) : this.on(p, run);
  }

  /** The deadline of a promotion's source freeze (none on placements a stack manages). */
  private freezeDeadline(): number | undefined {
    return this.opts.placements ? undefined : this.opts.freezeDeadlineMs;
  }

  /**
   * Proves, from inside the freeze, that it holds: every guard there and firing, and a write as
   * the tenant refused. A freeze that does not hold fails the step for good, and the promotion is
   * undone with the tenant where it was, every row in place.
   */
  private async proveFrozen(t: StepTenant, p: Placement, session?: Queryable): Promise<void> {
    const run = (db: Queryable) =>
      proveFreeze(db, {
        schema: p.schema,
        tenantId: t.id,
        shared: p.shared,
        ...(p.writers?.[0] ? { writer: p.writers[0] } : {}),
        ...(p.context ? { tenantSetting: p.context.setting } : {}),
      });
    try {
      await (session ? run(session) : this.on(p, run));
    } catch (e) {
      // A probe that could not run (a lost connection, a lock timeout) is retried like any step.
      if ((e as { code?: string }).code !== 'FREEZE_DOES_NOT_HOLD') throw e;
      throw new TenantryError('PROVIDER_FAILED', (e as Error).message, {
        retryable: false,
        context: { freezeHolds: false },
        cause: e,
      });
    }
  }

  /**
   * Runs a step of the frozen window with the freeze of `p` held: its deadline is renewed now and
   * every third of it while the step runs. A freeze found lapsed (the process that held it
   * crashed, or a retry came late) is taken anew and proven, and `fn` is told so: the writes that
   * went through meanwhile must be drained (or restored) again before any cutover.
   */
  private async holdingFreeze<T>(
    t: StepTenant,
    p: Placement,
    fn: (refrozen: boolean) => Promise<T>,
  ): Promise<T> {
    const deadline = this.freezeDeadline();
    if (!deadline) return fn(false);
    const renew = () => this.on(p, (db) => renewFreeze(db, p.schema, t.id, deadline));
    let refrozen = false;
    if (!(await renew())) {
      await this.freeze(t, p, 'promotion');
      await this.proveFrozen(t, p);
      refrozen = true;
    }
    const timer = setInterval(
      () => void renew().catch(() => undefined),
      Math.max(50, Math.floor(deadline / 3)),
    );
    timer.unref();
    try {
      return await fn(refrozen);
    } finally {
      clearInterval(timer);
    }
  }

  /**
   * Just before a routing flip: the freeze of `p` must stand through it. Taken anew if it lapsed
   * (then `onRefrozen` drains or restores, and verifies, again), then made permanent (its deadline
   * removed), so no deadline can pass between here and the flip.
   */
  async pinFreeze(t: StepTenant, p: Placement, onRefrozen: () => Promise<void>): Promise<void> {
    await this.holdingFreeze(t, p, async (refrozen) => {
      if (refrozen) await onRefrozen();
      if (!(await this.on(p, (db) => renewFreeze(db, p.schema, t.id, null)))) throw lapsedBeforeFlip();
    });
  }

  /**
   * Lifts the tenant's freeze of a placement: it is writable again. Only each target's routing
   * decides when (after its flip, or when it undoes a move). With `operationId`, on the session
   * that operation kept across its freeze.
   */
  unfreeze(t: StepTenant, p: Placement, operationId?: string): Promise<void> {
    return operationId
      ? this.inSessions(operationId, [p], (db) => unfreezeTenant(db!, p.schema, t.id))
      : this.on(p, (db) => unfreezeTenant(db, p.schema, t.id));
  }

  /** Whether the tenant's freeze of a placement stands. */
  isFrozen(t: StepTenant, p: Placement): Promise<boolean> {
    return this.on(p, (db) => isTenantFrozen(db, p.schema, t.id));
  }

  /** Drops the promotion's slot and publication and its bookkeeping on the source's cluster. */
  async dropReplication(names: ReplicationNames): Promise<void> {
    await this.dp.withData(async (db) => {
      await dropReplication(db, names);
      await clearPromotionMeta(db, names.slot);
    });
  }

  /** Drops the promotion's bookkeeping rows (they hold key values) on a placement's database. */
  clearMeta(p: Placement, names: ReplicationNames): Promise<void> {
    return this.on(p, (db) => clearPromotionMeta(db, names.slot));
  }

  private async assertSlot(names: { slot: string }): Promise<void> {
    if (!(await this.dp.withData((db) => slotExists(db, names.slot)))) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        `replication slot ${names.slot} is gone (dropped past the lag limit while the promotion waited, or by hand); the promotion is aborted`,
      );
    }
  }

  /**
   * Runs a long step under the lag watch: the slot's retained WAL is measured every lagPollMs and
   * reported; past the limit the guarded sessions' statements are cancelled and the step fails with
   * the lag error (the promotion then aborts).
   */
  private async watched<T>(
    names: { slot: string },
    report: Report,
    fn: (watch: LagWatch, guard: (c: pg.Client, p: Placement) => Promise<void>) => Promise<T>,
  ): Promise<T> {
    // Backend pids per server: a pid means something only on the server it came from.
    const pids = new Map<Placement | null, number[]>();
    const cancel = (db: Queryable, list: number[]) =>
      db.query('SELECT pg_cancel_backend(pid) FROM unnest($1::int[]) pid', [list]);
    const watch = new LagWatch(
      names.slot,
      this.opts.maxLagBytes,
      () => this.dp.withData((db) => retainedWalBytes(db, names.slot)),
      (bytes) => report({ retainedWalBytes: bytes }),
      async () => {
        for (const [p, list] of pids) {
          await (p ? this.on(p, (db) => cancel(db, list)) : this.dp.withData((db) => cancel(db, list)));
        }
      },
    ).start(this.opts.lagPollMs ?? 1000);
    const guard = async (c: pg.Client, p: Placement) => {
      const { rows } = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      const key = p.server ? p : null;
      pids.set(key, [...(pids.get(key) ?? []), rows[0]!.pid]);
    };
    try {
      const out = await fn(watch, guard);
      await watch.sample();
      return out;
    } catch (e) {
      watch.check(); // the lag breach, rather than the cancelled statement it caused
      throw e;
    } finally {
      watch.stop();
    }
  }

  /** Runs one of `ROW_MOVE_STEP_NAMES` (domain/steps.ts). */
  async runStep(ctx: StepContext): Promise<undefined> {
    const params = ctx.params as unknown as PromotionParams;
    const t = ctx.tenant;
    const progress = ctx.progress ?? {};
    const { from, to } = this.placements(t, params, progress);
    const names = replicationNames(params.rollbackOf ?? ctx.operationId);
    const report = ctx.report ?? (async () => {});
    const fault = this.faults(ctx.operationId, t.id, report);
    const step = ctx.step;
    if (!isRowMoveStep(step)) throw new TenantryError('PROVIDER_FAILED', `unknown promotion step ${step}`);
    switch (step) {
      case 'prepare-target':
        await this.prepareTarget(t, to, progress, report);
        return undefined;
      case 'replication':
        await this.dp.withData((db) => ensureReplication(db, from, t.id, names));
        return undefined;
      case 'copy':
        await this.watched(names, report, (watch, guard) =>
          this.withClients([from, to], async (src, dst) => {
            await guard(src!, from);
            await guard(dst!, to);
            const rowsCopied: Record<string, number> = {};
            // Progress is written as the rows stream, one report at a time.
            let pending: Promise<void> = Promise.resolve();
            const timing = await createSlotAndCopy(this.urlOf(from), src!, dst!, from, to, t.id, names, {
              every: this.opts.copyProgressRows ?? 50_000,
              onRows: (table, n, done) => {
                watch.check();
                rowsCopied[table] = n;
                const patch = { rowsCopied: { ...rowsCopied } };
                pending = pending.then(() => report(patch)).catch(() => undefined);
                return done ? pending : undefined;
              },
              fault,
            });
            await pending;
            await report(timing);
          }),
        );
        return undefined;
      case 'indexes': {
        const deferred = progress.deferredDdl as DeferredDdl | undefined;
        await this.watched(names, report, (_watch, guard) =>
          this.withClients([to], async (dst) => {
            await guard(dst!, to);
            if (deferred) await applyDeferred(dst!, deferred.create);
            await vacuumTables(dst!, to.schema);
          }),
        );
        return undefined;
      }
      case 'catch-up':
        await this.assertSlot(names);
        await this.watched(names, report, (watch, guard) =>
          this.withClients([from, to], async (src, dst) => {
            await guard(src!, from);
            await guard(dst!, to);
            await fault('catch-up:start');
            await this.catchUp(src!, dst!, to, names, watch, report, fault, ctx.signal);
          }),
        );
        return undefined;
      case 'verify-full':
        // Every row, on a consistent pair of states, outside the freeze; then catch up again.
        await this.assertSlot(names);
        await this.watched(names, report, (watch, guard) =>
          this.withClients([from, from, to], async (peek, snap, dst) => {
            await guard(peek!, from);
            await guard(snap!, from);
            await guard(dst!, to);
            const t0 = performance.now();
            const full = await verifyConsistent(
              this.urlOf(from),
              peek!,
              snap!,
              dst!,
              from,
              to,
              t.id,
              names,
              fault,
            );
            await report({ verification: { full }, verifyFullMs: Math.round(performance.now() - t0) });
            await this.catchUp(peek!, dst!, to, names, watch, report, fault, ctx.signal);
            // The tenant's role may reach the target from now on (outside the freeze window); the
            // target stays frozen, so nothing but the promotion writes it before the cutover.
            if (!to.managed) {
              await applyGrants(dst!, {
                database: to.database,
                schema: to.schema,
                role: tenantObjectName(t.slug),
                owner: this.dp.names.ownerRole,
              });
            }
          }),
        );
        return undefined;
      case 'freeze':
        await fault('freeze:before-freeze');
        await this.inSessions(ctx.operationId, [from], async (src) => {
          // A rerun after a crash keeps the first start; one after a freeze that gave up starts anew.
          if (!progress.freezeStartedAt || !(await isTenantFrozen(src!, from.schema, t.id)))
            await report({ freezeStartedAt: new Date().toISOString() });
          await this.freeze(t, from, 'promotion', src);
          // Before anything is drained: the freeze must be shown to hold, not assumed to.
          await this.proveFrozen(t, from, src);
        });
        await fault('freeze:after-freeze');
        return undefined;
      case 'drain': {
        await this.assertSlot(names);
        const out = await this.holdingFreeze(t, from, () =>
          this.inSessions(ctx.operationId, [from, to], async (src, dst) => {
            await fault('drain:start');
            await applyPending(src!, dst!, to, names, { fault });
            return {
              sequences: await syncSequences(src!, dst!, from, to),
              lag: await slotLagBytes(src!, names.slot),
            };
          }),
        );
        await report({ replicationLagBytes: out.lag, sequences: out.sequences });
        return undefined;
      }
      case 'verify':
        await this.holdingFreeze(t, from, async (refrozen) => {
          if (refrozen) await this.redrain(ctx.operationId, from, to, names, fault);
          await this.verifyChanged(ctx.operationId, from, to, names, progress, report);
        });
        return undefined;
      /* ---- rollback: `from` is the tier being left (the promotion's target), `to` the original source */
      case 'freeze-target':
        if (!progress.freezeStartedAt) await report({ freezeStartedAt: new Date().toISOString() });
        await this.freeze(t, from, 'promotion');
        await this.proveFrozen(t, from);
        return undefined;
      case 'restore':
        await this.holdingFreeze(t, from, () => this.restore(t, from, to, report, fault));
        return undefined;
      case 'verify-restore':
        await this.holdingFreeze(t, from, async (refrozen) => {
          if (refrozen) await this.restore(t, from, to, report, fault);
          await this.verifyRestored(t, from, to, report);
        });
        return undefined;
      default: {
        const unknown: never = step; // every row-move step has its case
        throw new TenantryError('PROVIDER_FAILED', `unknown promotion step ${unknown}`);
      }
    }
  }

  /** Applies the slot until a pass applies little (the freeze drains the rest) or patience runs out. */
  private async catchUp(
    src: pg.Client,
    dst: pg.Client,
    to: Placement,
    names: ReplicationNames,
    watch: LagWatch,
    report: Report,
    fault: Fault,
    signal: AbortSignal,
  ): Promise<void> {
    const deadline = Date.now() + this.opts.maxCatchUpMs;
    for (;;) {
      await watch.sample();
      await report({ replicationLagBytes: await slotLagBytes(src, names.slot) });
      const applied = await applyPending(src, dst, to, names, { fault });
      if (applied.changes <= this.opts.freezeBelowChanges || Date.now() > deadline) break;
      if (signal.aborted) throw new Error('aborted');
    }
  }

  /**
   * The provisioned target, readied for the copy: its secondary indexes and constraints dropped
   * (rebuilt after it), and frozen: nobody but the promotion (in replica mode) writes it before
   * its cutover. The aws target runs this on the placement its stack created.
   */
  async prepareTarget(
    t: StepTenant,
    to: Placement,
    progress: Record<string, unknown>,
    report: Report,
  ): Promise<void> {
    await this.on(to, async (db) => {
      let deferred = progress.deferredDdl as DeferredDdl | undefined;
      if (!deferred) {
        deferred = await listSecondary(db, to.schema);
        await report({ deferredDdl: deferred }); // persisted before anything is dropped
      }
      await dropSecondary(db, deferred);
    });
    await this.freeze(t, to, 'promotion-target');
  }

  /** Drains the slot again (a freeze that lapsed let writes through) and carries sequences over. */
  async redrain(
    operationId: string,
    from: Placement,
    to: Placement,
    names: ReplicationNames,
    fault: Fault,
  ): Promise<void> {
    await this.inSessions(operationId, [from, to], async (src, dst) => {
      await applyPending(src!, dst!, to, names, { fault });
      await syncSequences(src!, dst!, from, to);
    });
  }

  /** Inside the freeze, only the rows changed since the full verification: the freeze does not grow with size. */
  async verifyChanged(
    operationId: string,
    from: Placement,
    to: Placement,
    names: ReplicationNames,
    progress: Record<string, unknown>,
    report: Report,
  ): Promise<void> {
    const d = await this.inSessions(operationId, [from, to], async (src, dst) =>
      touchedDigests(src!, dst!, from, to, await tablesOf(src!, from.schema), names.slot),
    );
    const previous = (progress.verification as Record<string, unknown> | undefined) ?? {};
    await report({ verification: { ...previous, changedKeys: d.keys, changed: d } });
    assertSameDigests(d.source, d.target, 'rows changed since the full verification');
  }

  /**
   * Rollback: the original placement gets the current rows back (including those written after
   * cutover), in one transaction, and its sequences are brought at least as far as the current ones.
   */
  async restore(
    t: StepTenant,
    current: Placement,
    original: Placement,
    report: Report,
    fault: Fault,
  ): Promise<void> {
    await this.withClients([current, original], async (src, dst) => {
      // Our own writes pass the original placement's freeze and its foreign keys.
      await dst!.query(`SET session_replication_role = replica`);
      const tables = await tablesOf(src!, current.schema);
      const rowsRestored: Record<string, number> = {};
      await inTransaction(dst!, async () => {
        for (const table of tables) {
          await dst!.query(`DELETE FROM ${ident(original.schema)}.${ident(table)} WHERE tenant_id = $1`, [
            t.id,
          ]);
        }
        await fault('restore:after-delete');
        for (const table of tables) {
          if (!original.shared) {
            rowsRestored[table] = await copyTable(src!, dst!, current, original, table, t.id, {
              truncate: false,
            });
            continue;
          }
          // COPY FROM is refused on a table with row-level security to a role that does not bypass
          // it (an RDS master user): the rows stream into a temporary copy, then go in by INSERT,
          // checked by the pool's policy under the tenant context this session set.
          const target = `${ident(original.schema)}.${ident(table)}`;
          await dst!.query(`CREATE TEMP TABLE ${ident(table)} (LIKE ${target}) ON COMMIT DROP`);
          rowsRestored[table] = await copyTable(
            src!,
            dst!,
            current,
            { ...original, schema: 'pg_temp' },
            table,
            t.id,
            {
              truncate: false,
            },
          );
          await dst!.query(`INSERT INTO ${target} SELECT * FROM pg_temp.${ident(table)}`);
        }
      });
      const sequences = await syncSequences(src!, dst!, current, original);
      await report({ rowsRestored, sequences });
    });
  }

  /** The original placement holds exactly the current placement's rows. */
  async verifyRestored(
    t: StepTenant,
    current: Placement,
    original: Placement,
    report: Report,
  ): Promise<void> {
    const tables = await this.on(current, (db) => tablesOf(db, current.schema));
    const [a, b] = await Promise.all([
      this.on(current, (db) => digest(db, current, t.id, tables)),
      this.on(original, (db) => digest(db, original, t.id, tables)),
    ]);
    await report({ verification: { source: a, target: b } });
    assertSameDigests(a, b, 'restored rows');
  }

  /**
   * Drops slots and publications of promotions no longer in flight, and the slot of a promotion
   * waiting to be retried (`idle`) that retains more WAL than the limit: that promotion then aborts
   * when it runs again, instead of holding every tenant's WAL while it waits.
   */
  async sweepOrphans(liveOperationIds: string[], idleOperationIds: string[] = []): Promise<string[]> {
    const live = new Set(liveOperationIds.map((id) => replicationNames(id).slot));
    return this.dp.withData(async (db) => {
      const { rows } = await db.query<{ name: string }>(
        `SELECT slot_name AS name FROM pg_replication_slots WHERE slot_name LIKE 'tenantry_promo_%' AND NOT active
         UNION SELECT pubname FROM pg_publication WHERE pubname LIKE 'tenantry_promo_%'`,
      );
      const dead = [...new Set(rows.map((r) => r.name))].filter((name) => !live.has(name));
      for (const id of idleOperationIds) {
        const names = replicationNames(id);
        const held = await retainedWalBytes(db, names.slot);
        if (held !== null && held > this.opts.maxLagBytes) dead.push(names.slot);
      }
      for (const name of dead) await dropReplication(db, { slot: name, publication: name });
      return dead;
    });
  }
}
