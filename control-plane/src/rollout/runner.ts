import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type { Logger } from 'pino';
import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import {
  addLateTenants,
  analyzeLedger,
  backToPending,
  claimTenants,
  completeRollout,
  deferTenants,
  extendRunnerLeases,
  failureCount,
  findRollout,
  markRolloutStarted,
  nextDeferral,
  pauseIfRunning,
  pendingTenants,
  ROLLOUT_ACTOR,
  type RolloutRow,
  recordResults,
  relaxCommit,
  releaseTenants,
  rolloutStatus,
  runningTenants,
  savePlatform,
  saveVerification,
  saveWaves,
  setPlatformVersion,
  settlePoolTenants,
  settleTenants,
  skipPending,
  type TenantResult,
  tenantsToVerify,
  type Verification,
  waveCounts,
} from '../db/rollouts.js';
import { newOperationId } from '../domain/ids.js';
import { failureOutcome, type RolloutTier, type WaveCounts, waveState } from '../domain/rollout.js';
import { safeMessage } from '../lib/errors.js';
import { isRetryable } from '../worker/executor.js';
import type { RolloutMigrator } from './migrator.js';

/** A hook at named points of a run (crash tests: the kill lands exactly there). */
export type RolloutFaultHook = (point: string) => Promise<void>;

export interface RunnerOptions {
  /** The lease on each tenant's `migrate` operation; the heartbeat renews it every third of it. */
  leaseMs: number;
  /** Crash tests only: a file naming the fault point where the run waits (see `holdAt`). */
  faultHoldFile?: string;
  /** Attempts at a tenant whose migration fails for a transient reason, before it counts as failed. */
  attemptsPerTenant?: number;
}

/** A tenant taken for migration: its `migrate` operation runs under this runner's lease. */
interface Taken {
  tenantId: string;
  slug: string;
  tier: RolloutTier;
  version: number;
  retained: RolloutTier[];
  operationId: string;
}

/** Waits `ms`, or less if `signal` aborts. */
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });

/** Pool tenants moved (recorded) per statement. */
const POOL_BATCH = 1000;
/**
 * Bridge tenants one version behind are migrated this many per round trip on one session, each in its
 * own transaction (RolloutMigrator.migrateBridgesAtOnce): about 15 % less work per tenant for Postgres
 * and this process than one round trip each (docs/benchmarks.md, Rollouts).
 */
const BRIDGES_PER_TRIP = 4;
/** Results are recorded in batches: this many, or after this long. */
const FLUSH_SIZE = 256;
const FLUSH_MS = 400;

/**
 * Drives one rollout (docs/rollouts.md): the pool's shared tables first (the first wave's bridge and
 * silo tenants beside them), then the waves in order,
 * each with its own parallelism, a wave starting only once the one before is done and healthy. Each
 * tenant's migration holds a `migrate` operation under this runner's lease (so it never runs beside
 * another operation of the tenant: a busy tenant is deferred and retried), and its result is recorded
 * with the operation, the tenant's version, the ledger and the audit record in one statement per batch.
 * Every state is in the control database: a run that dies (kill -9) is resumed by the next one, which
 * first settles the tenants the dead run had in flight.
 */
export class RolloutRunner {
  readonly runnerId = `rollout_${randomBytes(6).toString('hex')}`;
  private fault: RolloutFaultHook | undefined;
  /**
   * Per rollout, the silos this process migrated, with the version read back from the silo's catalog
   * on the migrating session after its commits (by tenant id). The final check takes these instead of
   * opening each silo again; a silo promoted or taken by another operation since is read again.
   */
  private readonly observed = new Map<string, Map<string, number | null>>();

  constructor(
    private readonly db: Db,
    private readonly migrator: RolloutMigrator,
    /** Runs one operation to its end with the executor (a dead run's `migrate` operation). */
    private readonly runOperation: (operationId: string) => Promise<void>,
    private readonly log: Logger,
    private readonly opts: RunnerOptions,
  ) {}

  /** Tests: a hook run at each named point of a run. */
  setFaultHook(hook: RolloutFaultHook | undefined): void {
    this.fault = hook;
  }

  /** At a named point: the test hook, then the crash tests' hold file (waits while it names the point). */
  private async at(point: string): Promise<void> {
    await this.fault?.(point);
    const file = this.opts.faultHoldFile;
    if (!file) return;
    const named = () => {
      try {
        return fs.readFileSync(file, 'utf8').trim();
      } catch {
        return '';
      }
    };
    if (named() !== point) return;
    this.log.warn({ point }, 'holding at a fault point');
    while (named() === point) await sleep(20);
  }

  /**
   * Runs the rollout until it completes, pauses or is cancelled, or `signal` stops it. Only one run
   * drives a rollout at a time (a session lock on the control database, freed if the process dies):
   * a second one returns at once.
   */
  async run(rolloutId: string, signal?: AbortSignal): Promise<void> {
    for (;;) {
      const ran = await this.db.withSessionLock(`tenantry.rollout.${rolloutId}`, async () => {
        await this.drive(rolloutId, signal);
        return true;
      });
      if (!ran || signal?.aborted) return;
      // Read after the lock is released: a run enqueued meanwhile (a retry reopening the rollout) found
      // the lock held and left, so the rollout running again is this run's to drive.
      if ((await findRollout(this.db, rolloutId))?.status !== 'running') return;
    }
  }

  private async drive(id: string, signal: AbortSignal | undefined): Promise<void> {
    const log = this.log.child({ rolloutId: id });
    const heartbeat = setInterval(
      () => {
        extendRunnerLeases({ query: this.db.relaxedQuery }, this.runnerId, this.opts.leaseMs).catch(
          (e: unknown) => log.warn({ err: safeMessage(e) }, 'rollout lease heartbeat failed'),
        );
      },
      Math.max(200, Math.floor(this.opts.leaseMs / 3)),
    );
    let lateRounds = 0;
    // Before any batch (a resumed run too): the batches' plans need statistics that know this
    // rollout's ledger (see analyzeLedger). Only speed depends on it, so it runs beside the platform
    // step (the data plane's work) and is awaited before the first wave.
    let analyzed: Promise<void> | null = analyzeLedger(this.db).catch((e: unknown) =>
      log.warn({ err: safeMessage(e) }, 'the ledger could not be analyzed'),
    );
    // The platform step in flight: the first wave's bridge and silo tenants, which do not need the
    // pool's shared tables, migrate meanwhile; its pool tenants, and anything after that wave, wait.
    let platform: Promise<boolean> | null = null;
    const platformDone = async (): Promise<boolean> => {
      const p = platform;
      platform = null;
      return p ? p : true;
    };
    try {
      for (;;) {
        if (signal?.aborted) return;
        const r = await findRollout(this.db, id);
        if (r?.status !== 'running') return;
        if (!r.startedAt) {
          await this.db.tx(async (q) => {
            await markRolloutStarted(q, id);
            await appendAudit(q, {
              actor: ROLLOUT_ACTOR,
              action: 'rollout.started',
              details: { rolloutId: id },
            });
          });
          log.info({ toVersion: r.toVersion }, 'rollout started');
        }
        const { elsewhere, paused } = await this.settleRunning(r, log);
        if (paused) return;
        if (
          !('status' in r.platform) ||
          (r.platform.status !== 'succeeded' && r.platform.status !== 'skipped')
        ) {
          platform = this.platformStep(r, log);
          // Awaited below (or in `finally`); marked handled so a rejection waits for that.
          platform.catch(() => undefined);
        }
        const counts = await this.countsByWave(id);
        const active = r.waves.findIndex((_, i) => waveState(counts.get(i) ?? {}) === 'active');
        const unhealthy = r.waves.findIndex(
          (_, i) => (active === -1 || i < active) && waveState(counts.get(i) ?? {}) === 'unhealthy',
        );
        if (unhealthy !== -1) {
          if (!(await platformDone())) return;
          await this.pause(id, `wave ${r.waves[unhealthy]?.name} has failed tenants`, log);
          return;
        }
        if (active === -1) {
          // Nothing left to run: the platform step ends first (and is read again with the rollout).
          if (platform) {
            if (!(await platformDone())) return;
            continue;
          }
          const late = await addLateTenants(this.db, id, r.toVersion, r.waves.length - 1);
          if (late > 0 && lateRounds++ < 3) {
            log.info({ late }, 'tenants behind the version joined the last wave');
            continue;
          }
          if (await this.complete(r, counts, log)) return;
          continue; // reopened meanwhile (a retry), or paused or cancelled: read it again
        }
        if (analyzed) {
          await analyzed;
          analyzed = null;
        }
        await this.startWave(r, active, log);
        await this.at(`rollout:wave:${r.waves[active]?.name}`);
        const poolReady = platform ?? Promise.resolve(true);
        const waiting = await this.runWave(r, active, log, signal, poolReady);
        // The wave never ends before the platform step: a failed one paused the rollout.
        if (!(await platformDone())) return;
        if (waiting === 'stopped') return;
        if (waiting === 'busy-elsewhere' || elsewhere > 0) await sleep(500, signal);
        const after = await this.countsByWave(id);
        if (waveState(after.get(active) ?? {}) !== 'active') await this.finishWave(r, active, after, log);
        // Tenants still pending that no task could take (a row locked by another transaction): soon again.
        else if (waiting === 'done') await sleep(100, signal);
      }
    } finally {
      clearInterval(heartbeat);
      await analyzed;
      await (platform as Promise<boolean> | null)?.catch((e: unknown) =>
        log.warn({ err: safeMessage(e) }, 'the platform step failed'),
      );
    }
  }

  private async countsByWave(id: string): Promise<Map<number, WaveCounts>> {
    const out = new Map<number, WaveCounts>();
    for (const c of await waveCounts(this.db, [id])) {
      const w = out.get(c.wave) ?? {};
      w[c.status] = c.n;
      out.set(c.wave, w);
    }
    return out;
  }

  private async pause(id: string, reason: string, log: Logger): Promise<void> {
    await this.db.tx(async (q) => {
      if (await pauseIfRunning(q, id, reason))
        await appendAudit(q, {
          actor: ROLLOUT_ACTOR,
          action: 'rollout.paused',
          details: { rolloutId: id, reason },
        });
    });
    log.warn({ reason }, 'rollout paused');
  }

  /**
   * The pool's shared tables to the rollout's version, once, beside the first wave (pool tenants are
   * moved to it only after). A failure pauses the rollout: no pool tenant can go on without it.
   */
  private async platformStep(r: RolloutRow, log: Logger): Promise<boolean> {
    const startedAt = new Date().toISOString();
    await savePlatform(this.db, r.id, { status: 'running', startedAt });
    await this.at('rollout:platform');
    for (let attempt = 1; ; attempt++) {
      try {
        const out = await this.migrator.migratePool(r.toVersion);
        const finishedAt = new Date().toISOString();
        const step = {
          status: out.applied.length > 0 ? ('succeeded' as const) : ('skipped' as const),
          fromVersion: out.fromVersion,
          version: out.version,
          startedAt,
          finishedAt,
          durationMs: Date.parse(finishedAt) - Date.parse(startedAt),
          ...(out.applied.length === 0 ? { note: `already at version ${out.version}` } : {}),
        };
        await this.db.tx(async (q) => {
          await savePlatform(q, r.id, step);
          await setPlatformVersion(q, 'pool', out.version);
          await appendAudit(q, {
            actor: ROLLOUT_ACTOR,
            action: 'rollout.platform.migrated',
            details: { rolloutId: r.id, fromVersion: out.fromVersion, applied: out.applied },
          });
        });
        log.info({ fromVersion: out.fromVersion, applied: out.applied }, "pool's shared tables migrated");
        return true;
      } catch (e) {
        if (isRetryable(e) && attempt < (this.opts.attemptsPerTenant ?? 4)) {
          await sleep(200 * 2 ** attempt);
          continue;
        }
        const error = safeMessage(e);
        await savePlatform(this.db, r.id, { status: 'failed', startedAt, error });
        await this.pause(r.id, `the pool's shared tables failed to migrate: ${error}`, log);
        return false;
      }
    }
  }

  private async startWave(r: RolloutRow, i: number, log: Logger): Promise<void> {
    const w = r.waves[i];
    if (!w || (w.startedAt && r.currentWave === i)) return;
    const waves = r.waves.map((x, j) =>
      j === i && !x.startedAt ? { ...x, startedAt: new Date().toISOString() } : x,
    );
    await this.db.tx(async (q) => {
      await saveWaves(q, r.id, waves, i);
      await appendAudit(q, {
        actor: ROLLOUT_ACTOR,
        action: 'rollout.wave.started',
        details: { rolloutId: r.id, wave: w.name, parallelism: w.parallelism },
      });
    });
    r.waves = waves;
    r.currentWave = i;
    log.info({ wave: w.name, parallelism: w.parallelism }, 'wave started');
  }

  private async finishWave(
    r: RolloutRow,
    i: number,
    counts: Map<number, WaveCounts>,
    log: Logger,
  ): Promise<void> {
    const fresh = await findRollout(this.db, r.id);
    const w = fresh?.waves[i];
    if (!fresh || !w || w.finishedAt) return;
    const waves = fresh.waves.map((x, j) => (j === i ? { ...x, finishedAt: new Date().toISOString() } : x));
    const c = counts.get(i) ?? {};
    await this.db.tx(async (q) => {
      await saveWaves(q, r.id, waves, fresh.currentWave);
      await appendAudit(q, {
        actor: ROLLOUT_ACTOR,
        action: 'rollout.wave.finished',
        details: { rolloutId: r.id, wave: w.name, counts: c },
      });
    });
    log.info({ wave: w.name, ...c }, 'wave finished');
  }

  /**
   * Settles the tenants a dead run left `running`: a finished operation's result is recorded; one
   * still queued or under an expired lease is run to its end by the executor here (its claim makes
   * sure nobody else runs it at the same time); one a live runner holds is left to it. Returns how many
   * are left to others, and whether their failures paused the rollout.
   */
  private async settleRunning(r: RolloutRow, log: Logger): Promise<{ elsewhere: number; paused: boolean }> {
    let rows = await runningTenants(this.db, r.id);
    if (rows.length === 0) return { elsewhere: 0, paused: false };
    const unfinished = rows.filter((t) => t.opStatus === 'queued' || t.opStatus === 'running');
    for (const t of unfinished) {
      await this.runOperation(t.operationId as string).catch((e: unknown) =>
        log.warn(
          { tenantId: t.tenantId, operationId: t.operationId, err: safeMessage(e) },
          'resuming a migration failed',
        ),
      );
    }
    if (unfinished.length > 0) rows = await runningTenants(this.db, r.id);
    let elsewhere = 0;
    let paused: string | null = null;
    let failures = await failureCount(this.db, r.id);
    const results: TenantResult[] = [];
    const pending: string[] = [];
    const now = new Date().toISOString();
    for (const t of rows) {
      const base = {
        tenantId: t.tenantId,
        slug: t.slug,
        operationId: t.operationId,
        fromVersion: t.fromVersion,
        startedAt: t.startedAt,
        finishedAt: now,
      };
      if (t.opStatus === null || t.opStatus === 'cancelled') pending.push(t.tenantId);
      else if (t.opStatus === 'succeeded')
        results.push({
          ...base,
          status: 'succeeded',
          version: Math.max(t.version, r.toVersion),
          error: null,
        });
      else if (t.opStatus === 'failed') {
        const o = failureOutcome(r, failures++);
        results.push({
          ...base,
          status: o.status,
          version: t.version,
          error: t.opError ?? 'the migration failed',
        });
        if (o.pause) paused = `failures passed maxFailures (${failures} > ${r.maxFailures})`;
      } else elsewhere++;
    }
    await this.db.tx(async (q) => {
      await backToPending(q, r.id, pending);
      await settleTenants(q, r.id, results);
    });
    if (results.length + pending.length > 0)
      log.info(
        { settled: results.length, pending: pending.length, elsewhere },
        'settled tenants a previous run left running',
      );
    if (paused) await this.pause(r.id, paused, log);
    return { elsewhere, paused: paused !== null };
  }

  /**
   * One wave's tenants at its parallelism until none is due, or the run stops. Returns `stopped`
   * (paused, cancelled, or the process stopping), `busy-elsewhere` (only tenants other runners hold
   * or deferred ones remain), or `done`.
   */
  private async runWave(
    r: RolloutRow,
    wave: number,
    log: Logger,
    signal: AbortSignal | undefined,
    /** The platform step's outcome (the pool's shared tables at the version): the pool tenants wait for it. */
    poolReady: Promise<boolean>,
  ): Promise<'stopped' | 'busy-elsewhere' | 'done'> {
    const w = r.waves[wave];
    if (!w) return 'done';
    const parallelism = w.parallelism;
    const queue: Taken[] = [];
    const results: TenantResult[] = [];
    let stopping = false;
    let lastFlush = Date.now();
    let failures = await failureCount(this.db, r.id);
    let claiming: Promise<boolean> | null = null;
    let flushing: Promise<void> = Promise.resolve();
    const stop = () => {
      stopping = true;
    };
    signal?.addEventListener('abort', stop, { once: true });

    const claimMore = async (): Promise<boolean> => {
      if (stopping) return false;
      // Enough for every worker to find one waiting (a pool tenant takes no time on the data plane).
      const limit = Math.min(256, Math.max(32, parallelism * BRIDGES_PER_TRIP * 4));
      const taken = await this.db.tx(async (q) => {
        // A claim lost in a Postgres crash only puts its tenants back to pending (see Db.relaxed).
        await relaxCommit(q);
        const candidates = await pendingTenants(q, r.id, wave, limit);
        if (candidates.length === 0) return null;
        const now = new Date().toISOString();
        const settled: TenantResult[] = [];
        const want: Taken[] = [];
        for (const c of candidates) {
          const base = {
            tenantId: c.tenantId,
            slug: c.slug,
            operationId: null,
            fromVersion: c.version,
            startedAt: now,
            finishedAt: now,
          };
          if (c.tenantStatus === 'offboarded' || c.tenantStatus === 'failed')
            settled.push({
              ...base,
              status: 'skipped',
              version: c.version,
              error: null,
              note: `the tenant is ${c.tenantStatus}`,
            });
          else if (c.version >= r.toVersion)
            settled.push({
              ...base,
              status: 'succeeded',
              version: c.version,
              error: null,
              note: `already at version ${c.version}`,
            });
          else want.push({ ...c, operationId: newOperationId() });
        }
        await settleTenants(q, r.id, settled);
        const got = await claimTenants(q, {
          rolloutId: r.id,
          toVersion: r.toVersion,
          runnerId: this.runnerId,
          leaseMs: this.opts.leaseMs,
          tenants: want,
        });
        await deferTenants(
          q,
          r.id,
          want.filter((t) => !got.has(t.tenantId)).map((t) => t.tenantId),
        );
        return want
          .filter((t) => got.has(t.tenantId))
          .map((t) => ({ ...t, operationId: got.get(t.tenantId) as string }));
      });
      if (taken === null) return false;
      queue.push(...taken);
      return true;
    };

    const flush = async () => {
      flushing = flushing.then(async () => {
        const batch = results.splice(0);
        lastFlush = Date.now();
        if (batch.length === 0) return;
        let reason: string | null = null;
        for (const b of batch) {
          if (b.status !== 'failed') continue;
          const o = failureOutcome(r, failures++);
          b.status = o.status;
          if (o.pause) reason = `failures passed maxFailures (${failures} > ${r.maxFailures})`;
        }
        const paused = reason;
        const status = await this.db.tx(async (q) => {
          await recordResults(q, r.id, this.runnerId, batch);
          if (paused && (await pauseIfRunning(q, r.id, paused)))
            await appendAudit(q, {
              actor: ROLLOUT_ACTOR,
              action: 'rollout.paused',
              details: { rolloutId: r.id, reason: paused },
            });
          // Read in the same transaction (no round trip of its own): a pause or cancel requested meanwhile.
          return rolloutStatus(q, r.id);
        });
        if (paused) {
          log.warn({ reason: paused }, 'rollout paused');
          stop();
        }
        if (status !== 'running') stop();
      });
      await flushing;
    };

    const succeeded = (t: Taken, version: number, startedAt: string): TenantResult => ({
      tenantId: t.tenantId,
      slug: t.slug,
      operationId: t.operationId,
      status: 'succeeded',
      fromVersion: t.version,
      version,
      error: null,
      startedAt,
      finishedAt: new Date().toISOString(),
    });

    const migrateOne = async (t: Taken) => {
      const startedAt = new Date().toISOString();
      const attempts = this.opts.attemptsPerTenant ?? 4;
      for (let attempt = 1; ; attempt++) {
        try {
          const out = await this.migrator.migrateTenant(
            { id: t.tenantId, slug: t.slug, tier: t.tier },
            t.version,
            r.toVersion,
            t.retained,
          );
          await this.at(`rollout:tenant-migrated:${t.slug}`);
          if (out.observed !== undefined) {
            let seen = this.observed.get(r.id);
            if (!seen) {
              // One rollout runs or is paused at a time (the database enforces it): older ones are done.
              this.observed.clear();
              seen = new Map();
              this.observed.set(r.id, seen);
            }
            seen.set(t.tenantId, out.observed);
          }
          results.push(succeeded(t, out.version, startedAt));
          log.debug(
            { tenantId: t.tenantId, operationId: t.operationId, applied: out.applied },
            'tenant migrated',
          );
          return;
        } catch (e) {
          if (isRetryable(e) && attempt < attempts && !signal?.aborted) {
            await sleep(100 * 2 ** attempt, signal);
            continue;
          }
          const error = safeMessage(e);
          log.warn(
            { tenantId: t.tenantId, operationId: t.operationId, err: error },
            'tenant migration failed',
          );
          results.push({
            tenantId: t.tenantId,
            slug: t.slug,
            operationId: t.operationId,
            status: 'failed',
            fromVersion: t.version,
            version: t.version,
            error,
            startedAt,
            finishedAt: new Date().toISOString(),
          });
          return;
        }
      }
    };

    /** Bridge tenants one version behind, with no kept placement: they can share a round trip. */
    const batchable = (t: Taken) =>
      t.tier === 'bridge' && t.version === r.toVersion - 1 && t.retained.length === 0;
    /** `first`, and when it is batchable, up to BRIDGES_PER_TRIP - 1 more batchable ones from the queue. */
    const takeWith = (first: Taken): Taken[] => {
      const batch = [first];
      if (!batchable(first)) return batch;
      for (let i = 0; i < queue.length && batch.length < BRIDGES_PER_TRIP; ) {
        const next = queue[i] as Taken;
        if (batchable(next)) batch.push(...queue.splice(i, 1));
        else i++;
      }
      return batch;
    };
    /**
     * A batch's tenants in one round trip, each in its own transaction. On a failure some may have
     * committed: each tenant is then migrated on its own (migrateOne), which finds those already at
     * the version and skips them, and gives each failure, or retry, to its own tenant.
     */
    const migrateBatch = async (ts: Taken[]) => {
      if (ts.length === 1) return migrateOne(ts[0] as Taken);
      const startedAt = new Date().toISOString();
      try {
        await this.migrator.migrateBridgesAtOnce(
          ts.map((t) => ({ id: t.tenantId, slug: t.slug, tier: t.tier })),
          r.toVersion,
        );
      } catch (e) {
        log.debug(
          { tenants: ts.map((t) => t.tenantId), err: safeMessage(e) },
          'a batch of migrations failed: each tenant again on its own',
        );
        for (const t of ts) await migrateOne(t);
        return;
      }
      for (const t of ts) {
        await this.at(`rollout:tenant-migrated:${t.slug}`);
        results.push(succeeded(t, r.toVersion, startedAt));
      }
    };

    /** One claim at a time; a worker that finds the queue low starts the next before it runs dry. */
    const refill = (): Promise<boolean> => {
      claiming ??= claimMore().finally(() => {
        claiming = null;
      });
      return claiming;
    };
    let deferredOnly = false;
    const worker = async () => {
      for (;;) {
        if (stopping) return;
        let t = queue.shift();
        if (queue.length < parallelism * BRIDGES_PER_TRIP && claiming === null)
          refill().catch(() => undefined);
        if (!t) {
          const any = await refill();
          t = queue.shift();
          if (!t) {
            if (any) continue;
            const due = await nextDeferral(this.db, r.id, wave, 'private');
            if (due === null) return;
            deferredOnly = true;
            await sleep(Math.min(Math.max(due, 20), 1000), signal);
            continue;
          }
        }
        deferredOnly = false;
        await migrateBatch(takeWith(t));
        if (results.length >= FLUSH_SIZE || Date.now() - lastFlush >= FLUSH_MS) await flush();
      }
    };
    /**
     * The wave's pool tenants, beside the workers: set-based, a batch per statement (nothing to apply
     * on the data plane once the shared tables moved), a busy one retried when due.
     */
    const pool = async () => {
      // A failed platform step paused the rollout: its pool tenants stay pending.
      if (!(await poolReady)) return;
      await this.migrator.assertPoolAt(r.toVersion);
      for (;;) {
        if (stopping) return;
        const { moved, deferred } = await settlePoolTenants(this.db, r.id, wave, r.toVersion, POOL_BATCH);
        if (moved + deferred > 0) continue;
        const due = await nextDeferral(this.db, r.id, wave, 'pool');
        if (due === null) return;
        await sleep(Math.min(Math.max(due, 20), 1000), signal);
      }
    };
    try {
      // Every task runs to its end (one that fails stops the others first): none outlives the wave.
      const tasks = [pool(), ...Array.from({ length: parallelism }, worker)].map((p) =>
        p.catch((e: unknown) => {
          stop();
          throw e;
        }),
      );
      const outcomes = await Promise.allSettled(tasks);
      await flush();
      const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
      if (failed) throw failed.reason;
    } finally {
      signal?.removeEventListener('abort', stop);
      // Taken but never started (the run stopped): their operations cancelled, the tenants pending again.
      const left = queue.splice(0).map((t) => t.operationId);
      if (left.length > 0) {
        await releaseTenants(this.db, r.id, this.runnerId, left);
        // A cancel meanwhile: they stay at their version, recorded as skipped like the others.
        if ((await findRollout(this.db, r.id))?.status === 'cancelled') await skipPending(this.db, r.id);
      }
    }
    if (stopping) return 'stopped';
    return deferredOnly ? 'busy-elsewhere' : 'done';
  }

  /** The ledger against the catalogs, then the rollout completed (with both recorded and audited). */
  private async complete(r: RolloutRow, counts: Map<number, WaveCounts>, log: Logger): Promise<boolean> {
    const verification = await this.verify(r);
    const totals: WaveCounts = {};
    for (const c of counts.values())
      for (const [k, n] of Object.entries(c))
        totals[k as keyof WaveCounts] = (totals[k as keyof WaveCounts] ?? 0) + (n ?? 0);
    const completed = await this.db.tx(async (q) => {
      await saveVerification(q, r.id, verification);
      if (!(await completeRollout(q, r.id))) return false;
      await appendAudit(q, {
        actor: ROLLOUT_ACTOR,
        action: 'rollout.completed',
        details: { rolloutId: r.id, counts: totals, mismatched: verification.mismatchCount },
      });
      return true;
    });
    if (completed) {
      this.observed.delete(r.id);
      log.info({ ...totals, mismatched: verification.mismatchCount }, 'rollout completed');
    }
    return completed;
  }

  /**
   * Every tenant of the ledger: its recorded version against the data plane's catalogs, the silos
   * read at the rollout's widest parallelism (at least 8), beside the shared database's read. A silo
   * this process migrated in this rollout, still a silo and with no operation in flight, is checked
   * against the version its own catalog showed on the migrating session after the commit (`observed`),
   * not opened a second time; every other tenant is read now.
   */
  async verify(r: Pick<RolloutRow, 'id' | 'waves'>): Promise<Verification> {
    const all = await tenantsToVerify(this.db, r.id);
    const idle = all.filter((t) => !t.busy);
    const seen = this.observed.get(r.id);
    const known = (t: (typeof idle)[number]) => t.tier === 'silo' && seen?.has(t.tenantId) === true;
    const actual = await this.migrator.versionsOf(
      idle.filter((t) => !known(t)).map((t) => ({ id: t.tenantId, slug: t.slug, tier: t.tier })),
      { parallelism: Math.max(8, ...r.waves.map((w) => w.parallelism)) },
    );
    for (const t of idle) if (known(t)) actual.set(t.tenantId, seen?.get(t.tenantId) ?? null);
    const mismatched = idle
      .map((t) => ({
        slug: t.slug,
        tier: t.tier,
        recorded: t.recorded,
        actual: actual.get(t.tenantId) ?? null,
      }))
      .filter((t) => (t.tier === 'pool' ? (t.actual ?? 0) < t.recorded : t.actual !== t.recorded));
    return {
      checkedAt: new Date().toISOString(),
      checked: idle.length,
      busy: all.length - idle.length,
      mismatched: mismatched.slice(0, 100),
      mismatchCount: mismatched.length,
    };
  }
}
