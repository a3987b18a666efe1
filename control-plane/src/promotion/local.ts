import pg from 'pg';
import { isTenantryError, TenantryError } from '../domain/errors.js';
import { tenantKeyAlias, tenantObjectName, tenantSecretName } from '../domain/naming.js';
import type {
  KeyStore,
  PromotionParams,
  SecretStore,
  StepContext,
  StepOutputs,
  StepTenant,
} from '../domain/ports.js';
import type { Tier, TierCatalog } from '../domain/tiers.js';
import type { DataPlane } from '../engine/dataplane.js';
import {
  applyGrants,
  applyRole,
  databaseProvider,
  freezeTenant,
  grantsProvider,
  ident,
  inTransaction,
  isTenantFrozen,
  poolMembershipProvider,
  proveFreeze,
  type Queryable,
  renewFreeze,
  roleProvider,
  schemaProvider,
  type TenantTemplate,
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
  lateChanges,
  replicationNames,
  retainedWalBytes,
  slotExists,
  slotLagBytes,
  syncSequences,
} from './replication.js';

/** The row move proper: the same on every target, between provisioning and the routing flip. */
export const ROW_STEPS = [
  'replication',
  'copy',
  'indexes',
  'catch-up',
  'verify-full',
  'freeze',
  'drain',
  'verify',
];
export const PROMOTE_STEPS = ['provision', ...ROW_STEPS, 'cutover'];
export const ROLLBACK_STEPS = ['freeze-target', 'restore', 'verify-restore', 'cutover-back', 'drop-target'];
export const ABORT_STEPS = ['abort'];

/**
 * A named point inside a step, for fault injection (crash tests kill the process there). `report`
 * writes into the operation's progress. Never set in production.
 */
export type FaultHook = (
  point: string,
  ctx: { operationId: string; tenantId: string; report: (patch: Record<string, unknown>) => Promise<void> },
) => Promise<void>;

export interface PromotionOptions {
  /** Abort the promotion if the slot retains more WAL than this (it retains it for every tenant). */
  maxLagBytes: number;
  /** Catch-up ends when a pass applies no more than this many changes; the freeze drains the rest. */
  freezeBelowChanges: number;
  /** Longest the catch-up keeps chasing writers before freezing anyway. */
  maxCatchUpMs: number;
  /** How long the source stays read-only, for rollback, before it is deleted. */
  rollbackWindowMs: number;
  generatePassword: () => string;
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
function freezeLasted(progress: Record<string, unknown>): number | null {
  const started = Date.parse(String(progress.freezeStartedAt ?? ''));
  return Number.isNaN(started) ? null : Date.now() - started;
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

const samePlacement = (v: Record<string, unknown> | undefined, p: Placement) =>
  v?.database === p.database && v?.schema === p.schema;

/**
 * Moves a tenant's rows between placements on the local target (pool → bridge, pool → silo,
 * bridge → silo) while it keeps writing: copy, stream the changes through a row-filtered logical
 * slot, verify every row on a consistent pair of states, freeze this tenant's writes in the
 * database, drain, verify what changed since, cut over. The source stays frozen and intact for the
 * rollback window. Every step is idempotent and resumable; past the routing flip, forward only.
 */
export class LocalPromotion {
  constructor(
    private readonly dp: DataPlane,
    private readonly keys: KeyStore & SecretStore,
    private readonly catalog: TierCatalog,
    private readonly template: TenantTemplate,
    private readonly opts: PromotionOptions,
  ) {}

  /** Fault injection for tests: a hook run at named points inside the steps. */
  setFaultHook(hook: FaultHook | undefined): void {
    this.opts.fault = hook;
  }

  /** The admin URL of a placement's database. */
  private urlOf(p: Placement): string {
    return (p.server ?? this.dp).urlFor(p.database);
  }

  /** Runs `fn` on a session of the database holding a placement. */
  private async on<T>(p: Placement, fn: (db: Queryable) => Promise<T>): Promise<T> {
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

  private async inSessions<T>(
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

  private async endSessions(operationId: string): Promise<void> {
    for (const [key, c] of [...this.sessions]) {
      if (!key.startsWith(`${operationId}/`)) continue;
      this.sessions.delete(key);
      await c.then((x) => x.end()).catch(() => undefined);
    }
  }

  private placements(t: StepTenant, params: PromotionParams, progress: Record<string, unknown> = {}) {
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

  private stagingSecret = (slug: string) => `tenantry/${slug}/promotion`;

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

  private unfreeze(t: StepTenant, p: Placement): Promise<void> {
    return this.on(p, (db) => unfreezeTenant(db, p.schema, t.id));
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
    report: (p: Record<string, unknown>) => Promise<void>,
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

  async runStep(ctx: StepContext): Promise<StepOutputs | undefined> {
    const params = ctx.params as unknown as PromotionParams;
    const t = ctx.tenant;
    const progress = ctx.progress ?? {};
    const { from, to } = this.placements(t, params, progress);
    const names = replicationNames(params.rollbackOf ?? ctx.operationId);
    const report = ctx.report ?? (async () => {});
    const fault = (point: string) =>
      this.opts.fault?.(point, { operationId: ctx.operationId, tenantId: t.id, report }) ?? Promise.resolve();
    switch (ctx.step) {
      case 'provision':
        return this.provision(t, params, to, progress, report);
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
      case 'cutover': {
        const out = await this.cutover(ctx.operationId, t, params, from, to, names, progress, report, fault);
        await this.endSessions(ctx.operationId);
        return out;
      }
      case 'abort':
        await this.endSessions(ctx.operationId);
        await this.abort(t, params, from, to, names, fault);
        return undefined;
      /* ---- steps of a promotion whose placements a stack manages (aws target) */
      case 'prepare-target':
        await this.prepareTarget(t, to, progress, report);
        return undefined;
      case 'release':
        await this.release(ctx.operationId, t, to, names, progress, report);
        return undefined;
      case 'release-back': {
        // A rollback on a managed placement, once routing flipped back: the original writable again.
        await this.unfreeze(t, to);
        await report({ writeFreezeMs: freezeLasted(progress) });
        return undefined;
      }
      case 'abort-rollback-data':
        // A rollback that failed before routing flipped back (the caller checked): the tenant stays, writable.
        await this.unfreeze(t, from);
        return undefined;
      case 'abort-data':
        // Before routing flipped (the caller checked): the source writable again, the slot gone;
        // the staged target is the stack's to delete.
        await this.endSessions(ctx.operationId);
        await this.unfreeze(t, from);
        await this.dp.withData(async (db) => {
          await dropReplication(db, names);
          await clearPromotionMeta(db, names.slot);
        });
        return undefined;
      case 'abort-rollback': {
        // A rollback that failed before cutting back: the tenant stays where it is, writable again.
        const current = await this.keys.getSecret(tenantSecretName(t.slug));
        if (samePlacement(current?.value, to)) {
          throw new TenantryError(
            'PROVIDER_FAILED',
            'the rollback already flipped routing back; it can only be finished forward (resume it)',
            { context: { forwardOnly: true } },
          );
        }
        await this.unfreeze(t, from);
        return undefined;
      }
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
      case 'cutover-back':
        return this.cutoverBack(t, params, from, to, progress, report, fault);
      case 'drop-target':
        await this.dropPlacement(t, from, params.toTier === 'pool');
        return undefined;
      default:
        throw new TenantryError('PROVIDER_FAILED', `unknown promotion step ${ctx.step}`);
    }
  }

  /** Applies the slot until a pass applies little (the freeze drains the rest) or patience runs out. */
  private async catchUp(
    src: pg.Client,
    dst: pg.Client,
    to: Placement,
    names: { slot: string; publication: string },
    watch: LagWatch,
    report: (p: Record<string, unknown>) => Promise<void>,
    fault: (point: string) => Promise<void>,
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

  private async provision(
    t: StepTenant,
    params: PromotionParams,
    to: Placement,
    progress: Record<string, unknown>,
    report: (p: Record<string, unknown>) => Promise<void>,
  ): Promise<StepOutputs | undefined> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    // The target's credentials: the bridge role carries over to silo; a pool tenant gets a role of its own.
    const staging = await this.keys.getSecret(this.stagingSecret(t.slug));
    let password = staging?.value.password as string | undefined;
    if (!password) {
      const current = await this.keys.getSecret(tenantSecretName(t.slug));
      password =
        params.fromTier === 'pool' ? this.opts.generatePassword() : (current?.value.password as string);
      await this.keys.putSecret(this.stagingSecret(t.slug), tenantKeyAlias(t.slug), { password });
    }
    if (params.fromTier === 'pool') {
      // A new role, not live until the cutover grants it anything.
      const limits = this.catalog.tiers[params.toTier].role;
      await this.dp.withMaintenance((db) =>
        applyRole(db, { name, ...limits, searchPath: [to.schema], password }),
      );
    }
    // A bridge role is live: its own settings change only at the cutover.
    if (to.tier === 'silo') {
      await this.dp.withMaintenance(async (db) => {
        await databaseProvider.create(db, { name, owner: n.ownerRole, template: n.siloTemplate });
        // Sessions in the silo resolve its tables from the first instant of the cutover.
        await db.query(
          `ALTER ROLE ${ident(name)} IN DATABASE ${ident(name)} SET search_path = ${ident(to.schema)}`,
        );
      });
    }
    await this.on(to, (db) =>
      schemaProvider.create(db, { name: to.schema, owner: n.ownerRole, template: this.template }),
    );
    await this.prepareTarget(t, to, progress, report);
    return undefined;
  }

  /**
   * The provisioned target, readied for the copy: its secondary indexes and constraints dropped
   * (rebuilt after it), and frozen: nobody but the promotion (in replica mode) writes it before
   * its cutover. The aws target runs this on the placement its stack created.
   */
  private async prepareTarget(
    t: StepTenant,
    to: Placement,
    progress: Record<string, unknown>,
    report: (p: Record<string, unknown>) => Promise<void>,
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

  /** What a cutover reports: how long writes were frozen, when routing flipped, the window's end. */
  private cutoverReport(progress: Record<string, unknown>, cutoverAt: number): Record<string, unknown> {
    return {
      writeFreezeMs: freezeLasted(progress),
      cutoverAt: new Date(cutoverAt).toISOString(),
      rollbackUntil: new Date(cutoverAt + this.opts.rollbackWindowMs).toISOString(),
    };
  }

  /**
   * After routing flipped to a managed target (the aws target's `up`): the target becomes the
   * tenant's, writable (the write freeze ends here), and the slot that holds every shared tenant's
   * WAL is dropped. Forward only.
   */
  private async release(
    operationId: string,
    t: StepTenant,
    to: Placement,
    names: { slot: string; publication: string },
    progress: Record<string, unknown>,
    report: (p: Record<string, unknown>) => Promise<void>,
  ): Promise<void> {
    try {
      await this.inSessions(operationId, [to], (db) => unfreezeTenant(db!, to.schema, t.id));
      const parsed = Date.parse(String(progress.cutoverAt ?? ''));
      await report(this.cutoverReport(progress, Number.isNaN(parsed) ? Date.now() : parsed));
      await this.on(to, (db) => clearPromotionMeta(db, names.slot));
      await this.dp.withData(async (db) => {
        await dropReplication(db, names);
        await clearPromotionMeta(db, names.slot);
      });
    } catch (e) {
      throw forwardOnly(e, 'the cutover flipped routing and must be finished forward');
    } finally {
      await this.endSessions(operationId);
    }
  }

  /** Drains the slot again (a freeze that lapsed let writes through) and carries sequences over. */
  private async redrain(
    operationId: string,
    from: Placement,
    to: Placement,
    names: { slot: string; publication: string },
    fault: (point: string) => Promise<void>,
  ): Promise<void> {
    await this.inSessions(operationId, [from, to], async (src, dst) => {
      await applyPending(src!, dst!, to, names, { fault });
      await syncSequences(src!, dst!, from, to);
    });
  }

  /** Inside the freeze, only the rows changed since the full verification: the freeze does not grow with size. */
  private async verifyChanged(
    operationId: string,
    from: Placement,
    to: Placement,
    names: { slot: string; publication: string },
    progress: Record<string, unknown>,
    report: (p: Record<string, unknown>) => Promise<void>,
  ): Promise<void> {
    const d = await this.inSessions(operationId, [from, to], async (src, dst) =>
      touchedDigests(src!, dst!, from, to, await tablesOf(src!, from.schema), names.slot),
    );
    const previous = (progress.verification as Record<string, unknown> | undefined) ?? {};
    await report({ verification: { ...previous, changedKeys: d.keys, changed: d } });
    assertSameDigests(d.source, d.target, 'rows changed since the full verification');
  }

  private async cutover(
    operationId: string,
    t: StepTenant,
    params: PromotionParams,
    from: Placement,
    to: Placement,
    names: { slot: string; publication: string },
    progress: Record<string, unknown>,
    report: (p: Record<string, unknown>) => Promise<void>,
    fault: (point: string) => Promise<void>,
  ): Promise<StepOutputs> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const current = await this.keys.getSecret(tenantSecretName(t.slug));
    let cutoverAt = typeof progress.cutoverAt === 'string' ? Date.parse(progress.cutoverAt) : Number.NaN;
    if (!samePlacement(current?.value, to)) {
      const password = (await this.keys.getSecret(this.stagingSecret(t.slug)))?.value.password;
      if (typeof password !== 'string')
        throw new TenantryError('SECRET_UNAVAILABLE', 'staged credentials are missing');
      // The source's freeze must stand through the flip: taken anew (then drained and verified
      // again) if it lapsed, then made permanent, so no deadline can pass between here and the
      // flip. A last drain takes anything that slipped in before it became permanent.
      await this.holdingFreeze(t, from, async (refrozen) => {
        if (refrozen) {
          await this.redrain(operationId, from, to, names, fault);
          await this.verifyChanged(operationId, from, to, names, progress, report);
        }
        if (!(await this.on(from, (db) => renewFreeze(db, from.schema, t.id, null))))
          throw lapsedBeforeFlip();
      });
      await this.redrain(operationId, from, to, names, fault);
      // The point of no return: routing flips to the target (its role was granted access to it,
      // still frozen, after the full verification; an abort before this line loses nothing).
      await this.keys.putSecret(tenantSecretName(t.slug), tenantKeyAlias(t.slug), {
        tenantId: t.id,
        tier: params.toTier,
        host: this.dp.host,
        port: this.dp.port,
        database: to.database,
        schema: to.schema,
        user: name,
        password,
      });
      cutoverAt = Date.now();
      await fault('cutover:after-flip');
    }
    // After the flip, before the target takes writes: the source must not have taken one past
    // the drain point. If it did (its freeze was bypassed), those writes are carried to the
    // target, still frozen, and the promotion does not report success: it fails forward-only,
    // naming them, and a resume finishes it once nothing more arrives.
    // (A target already writable, or the slot already gone, means an earlier run of this step
    // passed this check and went on.)
    const late = await this.inSessions(operationId, [from, to], async (src, dst) =>
      (await isTenantFrozen(dst!, to.schema, t.id)) && (await slotExists(src!, names.slot))
        ? lateChanges(src!, names)
        : 0,
    ).catch((e: unknown) => {
      throw forwardOnly(e, 'the cutover flipped routing and must be finished forward');
    });
    if (late > 0) {
      await this.redrain(operationId, from, to, names, fault).catch((e: unknown) => {
        throw forwardOnly(e, 'the cutover flipped routing and must be finished forward');
      });
      await report({ lateWrites: late });
      // Not retried by itself: a person looks at how the freeze was bypassed, then resumes.
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the source took ${late} write(s) after the drain point, past its freeze; they were carried to the new placement, which stays read-only until the promotion is resumed`,
        { retryable: false, context: { forwardOnly: true, lateWrites: late } },
      );
    }
    try {
      if (Number.isNaN(cutoverAt)) cutoverAt = Date.now();
      // The target becomes the tenant's, writable: the write freeze ends here.
      await this.inSessions(operationId, [to], async (db) => {
        await unfreezeTenant(db!, to.schema, t.id);
        await applyGrants(db!, { database: to.database, schema: to.schema, role: name, owner: n.ownerRole });
      });
      await report(this.cutoverReport(progress, cutoverAt));
      await this.on(to, (db) => clearPromotionMeta(db, names.slot));
      // The role takes the target tier's settings.
      const limits = this.catalog.tiers[params.toTier].role;
      await this.dp.withMaintenance((db) => applyRole(db, { name, ...limits, searchPath: [to.schema] }));
      if (from.tier === 'bridge') {
        // The role keeps no way back into the shared database (rollback grants it again).
        await this.dp.withData((db) =>
          grantsProvider.delete(db, {
            database: n.database,
            schema: from.schema,
            role: name,
            owner: n.ownerRole,
          }),
        );
      }
      // The slot holds WAL for every tenant of the shared database: release it at once.
      await this.dp.withData(async (db) => {
        await dropReplication(db, names);
        await clearPromotionMeta(db, names.slot);
      });
      await this.keys.deleteSecret(this.stagingSecret(t.slug));
    } catch (e) {
      throw forwardOnly(e, 'the cutover flipped routing and must be finished forward');
    }
    return { tier: params.toTier, database: to.database, schema: to.schema, user: name };
  }

  /** Undoes a promotion that failed before its cutover: the tenant stays on its source, untouched. */
  private async abort(
    t: StepTenant,
    params: PromotionParams,
    from: Placement,
    to: Placement,
    names: { slot: string; publication: string },
    fault: (point: string) => Promise<void>,
  ): Promise<void> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const current = await this.keys.getSecret(tenantSecretName(t.slug));
    if (current && !samePlacement(current.value, from)) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        'the cutover already flipped routing to the target; the promotion can only be finished forward (resume it)',
        { context: { forwardOnly: true } },
      );
    }
    await this.unfreeze(t, from);
    if (from.tier === 'bridge') {
      // The live role, as it was (in case an earlier version of this promotion changed it).
      const limits = this.catalog.tiers.bridge.role;
      await this.dp.withMaintenance((db) => applyRole(db, { name, ...limits, searchPath: [from.schema] }));
      await this.dp.withData((db) =>
        applyGrants(db, { database: n.database, schema: from.schema, role: name, owner: n.ownerRole }),
      );
    }
    await fault('abort:after-unfreeze');
    await this.dp.withData(async (db) => {
      await dropReplication(db, names);
      await clearPromotionMeta(db, names.slot);
    });
    await this.dropPlacement(t, to, params.fromTier === 'pool');
    await this.keys.deleteSecret(this.stagingSecret(t.slug));
  }

  /** Removes a placement's objects; its role too when the role belongs to it alone. */
  private async dropPlacement(
    t: StepTenant,
    p: Placement,
    dropRole: boolean,
    afterBatch?: () => Promise<void>,
  ): Promise<void> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const limits = this.catalog.tiers.bridge.role;
    if (p.tier === 'silo') {
      await this.dp.withMaintenance((db) => databaseProvider.delete(db, { name, owner: n.ownerRole }));
    } else if (p.tier === 'bridge') {
      await this.dp.withData(async (db) => {
        await grantsProvider.delete(db, {
          database: n.database,
          schema: p.schema,
          role: name,
          owner: n.ownerRole,
        });
        await schemaProvider.delete(db, { name: p.schema, owner: n.ownerRole, template: this.template });
        await unfreezeTenant(db, p.schema, t.id);
      });
    } else {
      await this.dp.withData((db) =>
        poolMembershipProvider.delete(db, {
          schema: n.poolSchema,
          tenantId: t.id,
          slug: t.slug,
          setting: n.tenantSetting,
          writers: [n.poolRole],
          // The tenant's rows leave the pool; a late write through the shared role is refused.
          freezeReason: 'moved',
          freezeWaitMs: this.opts.freezeWaitMs ?? 15_000,
          ...(afterBatch ? { afterBatch } : {}),
        }),
      );
    }
    if (dropRole) {
      await this.dp.withData((data) =>
        this.dp.withMaintenance((db) => roleProvider.delete(db, { name, ...limits, cleanupIn: [data] })),
      );
    }
  }

  /**
   * Rollback: the original placement gets the current rows back (including those written after
   * cutover), in one transaction, and its sequences are brought at least as far as the current ones.
   */
  private async restore(
    t: StepTenant,
    current: Placement,
    original: Placement,
    report: (p: Record<string, unknown>) => Promise<void>,
    fault: (point: string) => Promise<void>,
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
  private async verifyRestored(
    t: StepTenant,
    current: Placement,
    original: Placement,
    report: (p: Record<string, unknown>) => Promise<void>,
  ): Promise<void> {
    const tables = await this.on(current, (db) => tablesOf(db, current.schema));
    const [a, b] = await Promise.all([
      this.on(current, (db) => digest(db, current, t.id, tables)),
      this.on(original, (db) => digest(db, original, t.id, tables)),
    ]);
    await report({ verification: { source: a, target: b } });
    assertSameDigests(a, b, 'restored rows');
  }

  private async cutoverBack(
    t: StepTenant,
    params: PromotionParams,
    current: Placement,
    original: Placement,
    progress: Record<string, unknown>,
    report: (p: Record<string, unknown>) => Promise<void>,
    fault: (point: string) => Promise<void>,
  ): Promise<StepOutputs> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const secret = await this.keys.getSecret(tenantSecretName(t.slug));
    const descriptor =
      original.tier === 'pool'
        ? {
            user: n.poolRole,
            password: (await this.keys.getSecret('tenantry/platform/pool-role'))?.value.password,
            tenantSetting: n.tenantSetting,
          }
        : { user: name, password: secret?.value.password };
    if (!samePlacement(secret?.value, original)) {
      // As for a promotion: the current placement's freeze stands through the flip (restored and
      // verified again if it lapsed), made permanent first.
      await this.holdingFreeze(t, current, async (refrozen) => {
        if (refrozen) {
          await this.restore(t, current, original, report, fault);
          await this.verifyRestored(t, current, original, report);
        }
        if (!(await this.on(current, (db) => renewFreeze(db, current.schema, t.id, null))))
          throw lapsedBeforeFlip();
      });
      await this.keys.putSecret(tenantSecretName(t.slug), tenantKeyAlias(t.slug), {
        tenantId: t.id,
        tier: params.toTier,
        host: this.dp.host,
        port: this.dp.port,
        database: original.database,
        schema: original.schema,
        ...descriptor,
      });
      await fault('cutover-back:after-flip');
    }
    // After the flip back, before the original takes writes: the placement being left must hold
    // exactly what was restored. If it took a write past its freeze, the rows are restored again
    // and the rollback does not report success (forward-only; a resume finishes it).
    try {
      // (An original already writable means an earlier run of this step passed this check.)
      if (await this.on(original, (db) => isTenantFrozen(db, original.schema, t.id)))
        await this.verifyRestored(t, current, original, report);
    } catch (e) {
      await this.restore(t, current, original, report, fault).catch(() => undefined);
      throw forwardOnly(
        e,
        'the placement being left took writes after its rows were restored; restored again, resume to finish',
      );
    }
    try {
      if (original.tier === 'bridge') {
        const limits = this.catalog.tiers.bridge.role;
        await this.dp.withMaintenance((db) =>
          applyRole(db, { name, ...limits, searchPath: [original.schema] }),
        );
        await this.dp.withData((db) =>
          applyGrants(db, { database: n.database, schema: original.schema, role: name, owner: n.ownerRole }),
        );
      }
      await this.unfreeze(t, original);
      await report({ writeFreezeMs: freezeLasted(progress) });
    } catch (e) {
      throw forwardOnly(e, 'the rollback flipped routing back and must be finished forward');
    }
    return {
      tier: params.toTier,
      database: original.database,
      schema: original.schema,
      user: String(descriptor.user),
    };
  }

  /**
   * Deletes a promotion's source placement once its rollback window is over, whatever the tenant's
   * tier now is (a later promotion may have moved it on): never the placement it is routed to.
   */
  async cleanup(
    t: StepTenant,
    params: PromotionParams,
    operationId: string,
    report?: (p: Record<string, unknown>) => Promise<void>,
  ): Promise<void> {
    const { from } = this.placements(t, params);
    const current = await this.keys.getSecret(tenantSecretName(t.slug));
    if (samePlacement(current?.value, from)) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the tenant is routed to the ${params.fromTier} placement again; it is not deleted`,
      );
    }
    const fault = (point: string) =>
      this.opts.fault?.(point, { operationId, tenantId: t.id, report: report ?? (async () => {}) }) ??
      Promise.resolve();
    await this.dp.withData(async (db) => {
      await dropReplication(db, replicationNames(operationId));
      await clearPromotionMeta(db, replicationNames(operationId).slot);
    });
    await fault('cleanup:before-delete');
    await this.dropPlacement(t, from, false, () => fault('cleanup:after-batch'));
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
