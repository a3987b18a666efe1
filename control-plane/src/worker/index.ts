import { Logger as GraphileLogger, type Runner, run, runMigrations, type TaskList } from 'graphile-worker';
import type { Logger } from 'pino';
import type { Db } from '../db/db.js';
import { handBackOperations } from '../db/handback.js';
import { PROMOTION_CLEANUP_TASK, RUN_OPERATION_TASK } from '../db/jobs.js';
import type { OperationExecutor } from './executor.js';

function graphileLogger(log: Logger): GraphileLogger {
  return new GraphileLogger((scope) => (level, message, meta) => {
    const fields = { ...scope, ...(meta ?? {}) };
    const lvl = level === 'error' ? 'error' : level === 'warning' ? 'warn' : 'debug';
    log[lvl](fields, message);
  });
}

/** graphile-worker's own schema; run before the API accepts requests that enqueue jobs. */
export async function migrateQueue(db: Db, log: Logger): Promise<void> {
  await runMigrations({ pgPool: db.pool, logger: graphileLogger(log) });
}

export interface WorkerHandle {
  /** Whether the queue runner is up (false once it stopped, or died). */
  running(): boolean;
  /**
   * Stops taking jobs and lets the running operations finish. With `drainMs`, those still running
   * after it are handed back to the queue (another worker resumes them at once) and the stop returns
   * without waiting for them; the process is about to exit, which ends them.
   */
  stop(opts?: { drainMs?: number }): Promise<{ handedBack: string[] }>;
}

/** The job-queue side: graphile-worker runs operations; a reaper requeues those whose runner died. */
export async function startWorker(
  db: Db,
  executor: OperationExecutor,
  log: Logger,
  opts: {
    concurrency: number;
    leaseMs: number;
    /** More tasks (the drift sweep) and their cron lines. */
    tasks?: TaskList;
    crontab?: string;
    /** Every runner of this process (the queue's executor, the drift sweep's): whose operations a stop hands back. */
    runnerIds?: readonly string[];
    /** The job queue's attempts for a handed-back operation's job (as the reaper enqueues it). */
    jobMaxAttempts?: number;
  },
): Promise<WorkerHandle> {
  const reap = async () => {
    try {
      const ids = await executor.reapExpiredLeases();
      if (ids.length > 0)
        log.warn({ operationIds: ids }, 'requeued operations whose runner stopped heartbeating');
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'lease reaper failed');
    }
  };
  const sweep = async () => {
    try {
      const dropped = await executor.sweepPromotionOrphans();
      if (dropped.length > 0)
        log.warn({ dropped }, 'dropped replication slots and publications of dead promotions');
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'promotion orphan sweep failed');
    }
  };
  await reap();
  await sweep();
  const reaper = setInterval(reap, Math.max(250, Math.floor(opts.leaseMs / 2)));
  reaper.unref();
  const sweeper = setInterval(sweep, 60_000);
  sweeper.unref();
  const runner: Runner = await run({
    // The queue's own bookkeeping is re-done if a Postgres crash loses it (see Db.relaxed).
    pgPool: db.relaxed,
    concurrency: opts.concurrency,
    noHandleSignals: true,
    pollInterval: 1000,
    logger: graphileLogger(log),
    ...(opts.crontab ? { crontab: opts.crontab } : {}),
    taskList: {
      ...opts.tasks,
      [RUN_OPERATION_TASK]: async (payload) => {
        const id = (payload as { operationId?: unknown }).operationId;
        if (typeof id !== 'string') throw new Error('run-operation payload lacks operationId');
        await executor.run(id);
      },
      [PROMOTION_CLEANUP_TASK]: async (payload) => {
        const id = (payload as { operationId?: unknown }).operationId;
        if (typeof id !== 'string') throw new Error('promotion-cleanup payload lacks operationId');
        await executor.cleanupPromotion(id);
      },
    },
  });
  let up = true;
  runner.promise.then(
    () => {
      up = false;
    },
    (e: unknown) => {
      up = false;
      log.error({ err: (e as Error).message }, 'the job queue runner stopped');
    },
  );
  const runnerIds = opts.runnerIds ?? [executor.runnerId];
  return {
    running: () => up,
    async stop(stopOpts = {}) {
      up = false;
      clearInterval(reaper);
      clearInterval(sweeper);
      const stopped = runner.stop().catch((e: unknown) => {
        log.warn({ err: (e as Error).message }, 'the job queue runner did not stop cleanly');
      });
      if (stopOpts.drainMs === undefined) {
        await stopped;
        return { handedBack: [] };
      }
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), stopOpts.drainMs);
      });
      const outcome = await Promise.race([stopped.then(() => 'stopped' as const), late]);
      clearTimeout(timer);
      if (outcome === 'stopped') return { handedBack: [] };
      const handedBack = await db.tx((q) => handBackOperations(q, runnerIds, opts.jobMaxAttempts ?? 10));
      if (handedBack.length > 0)
        log.warn(
          { operationIds: handedBack, drainMs: stopOpts.drainMs },
          'handed running operations back to the queue: they did not finish within the drain timeout',
        );
      return { handedBack };
    },
  };
}
