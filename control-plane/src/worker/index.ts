import { Logger as GraphileLogger, type Runner, run, runMigrations, type TaskList } from 'graphile-worker';
import type { Logger } from 'pino';
import type { Db } from '../db/db.js';
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
  stop(): Promise<void>;
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
  return {
    async stop() {
      clearInterval(reaper);
      clearInterval(sweeper);
      await runner.stop();
    },
  };
}
