import type { Task } from 'graphile-worker';
import type { Logger } from 'pino';
import type { DataPlane } from '../dataplane/dataplane.js';
import type { Db } from '../db/db.js';
import { enqueueRolloutRun, ROLLOUT_RESUME_TASK, ROLLOUT_RUN_TASK } from '../db/jobs.js';
import {
  raiseTemplateVersion,
  retainedTiers,
  runningRolloutIds,
  setPlatformVersion,
} from '../db/rollouts.js';
import { TenantryError } from '../domain/errors.js';
import { isMigrateStep } from '../domain/steps.js';
import type { TemplateLint } from '../lib/template-lint.js';
import type { TenantTemplate } from '../providers/postgres/index.js';
import type { TenantMigrator } from '../worker/executor.js';
import { RolloutMigrator } from './migrator.js';
import { type RolloutFaultHook, RolloutRunner } from './runner.js';

export interface RolloutDeps {
  db: Db;
  dp: DataPlane;
  log: Logger;
  template: TenantTemplate;
  lint: Pick<TemplateLint, 'createsTables'>;
  leaseMs: number;
  faultHoldFile?: string;
  /** Runs one operation to its end in this process (an executor with `migrator` below). */
  runOperation: (operationId: string) => Promise<void>;
}

export interface RolloutHandle {
  /** Runs `migrate` operations' steps: hand it to every executor. */
  migrator: TenantMigrator;
  /** Merge into graphile-worker's taskList. */
  taskList: Record<string, Task>;
  /** graphile-worker's cron line: once a minute, the runs of running rollouts are enqueued again. */
  crontab: string;
  /** At start: records the pool's version and enqueues the running rollouts' runs (after a crash). */
  start(): Promise<void>;
  runner: RolloutRunner;
  setFaultHook(hook: RolloutFaultHook | undefined): void;
  close(): Promise<void>;
}

/** Wires fleet schema rollouts on the local target: the migrator, the runner, their tasks and the executor hook. */
export function registerRollouts(deps: RolloutDeps): RolloutHandle {
  const log = deps.log.child({ component: 'rollout' });
  const migrator = new RolloutMigrator(deps.dp, deps.template, deps.lint.createsTables);
  const runner = new RolloutRunner(deps.db, migrator, deps.runOperation, log, {
    leaseMs: deps.leaseMs,
    ...(deps.faultHoldFile ? { faultHoldFile: deps.faultHoldFile } : {}),
  });
  const enqueueRunning = async () => {
    for (const id of await runningRolloutIds(deps.db)) await enqueueRolloutRun(deps.db, id);
  };
  return {
    runner,
    migrator: {
      async runStep(tenant, step, params, ctx) {
        if (!isMigrateStep(step)) throw new TenantryError('PROVIDER_FAILED', `unknown migrate step ${step}`);
        const toVersion = Number(params.toVersion);
        if (tenant.tier === 'account' || !Number.isInteger(toVersion))
          throw new TenantryError(
            'PROVIDER_FAILED',
            'a migrate operation needs a local tier and a toVersion',
          );
        const out = await migrator.migrateTenant(
          { id: tenant.id, slug: tenant.slug, tier: tenant.tier },
          tenant.templateVersion,
          toVersion,
          await retainedTiers(deps.db, tenant.id),
        );
        await raiseTemplateVersion(deps.db, tenant.id, out.version);
        log.info(
          { tenantId: tenant.id, operationId: ctx.operationId, applied: out.applied },
          'migration resumed and finished',
        );
      },
    },
    taskList: {
      [ROLLOUT_RUN_TASK]: async (payload, helpers) => {
        const id = (payload as { rolloutId?: unknown }).rolloutId;
        if (typeof id !== 'string') throw new Error('rollout-run payload lacks rolloutId');
        await runner.run(id, helpers.abortSignal);
      },
      [ROLLOUT_RESUME_TASK]: async () => {
        await enqueueRunning();
      },
    },
    crontab: `* * * * * ${ROLLOUT_RESUME_TASK} ?jobKey=rollout-resume&max=1\n`,
    async start() {
      const pool = await migrator.poolVersion();
      if (pool > 0) await setPlatformVersion(deps.db, 'pool', pool);
      await enqueueRunning();
    },
    setFaultHook: (hook) => runner.setFaultHook(hook),
    close: () => migrator.close(),
  };
}
