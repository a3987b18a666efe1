import type { Task } from 'graphile-worker';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { DataPlane } from '../dataplane/dataplane.js';
import type { Db } from '../db/db.js';
import { DRIFT_SWEEP_TASK } from '../db/jobs.js';
import type { KeyStore, SecretStore } from '../domain/ports.js';
import type { Templates } from '../lib/templates.js';
import { LocalDriftDetector } from './local.js';
import { LocalDriftRemediator } from './local-remediation.js';
import { DriftMetrics } from './metrics.js';
import { DriftService } from './service.js';
import { DriftSweeper } from './sweep.js';
import type { DriftDetector, DriftRemediator } from './types.js';

export { DriftService } from './service.js';

export interface DriftDeps {
  db: Db;
  log: Logger;
  /** The control plane's metrics registry (`metrics.registry`). */
  registry: Registry;
  /** A five-field cron expression for scheduled sweeps; null turns the schedule off. */
  schedule: string | null;
  /** Runs one operation in this process (the executor's `run`); see SweeperOptions.runOperation. */
  runOperation?: (operationId: string) => Promise<void>;
  /** Attempts of a reconcile operation's job. */
  maxAttempts?: number;
  /** How long a sweep waits for its reconcile operations. */
  remediationTimeoutMs?: number;
}

export interface DriftHandle {
  service: DriftService;
  /** Runs the steps of reconcile operations: hand it to the executor. */
  remediator: DriftRemediator;
  /** Merge into graphile-worker's taskList. */
  taskList: Record<string, Task>;
  /** graphile-worker's `crontab` option ('' when the schedule is off): one sweep per tick across processes. */
  crontab: string;
  close(): Promise<void>;
}

/**
 * Wires drift detection from a target's detector and remediator: the sweeper, the service the routes
 * call, the job-queue task and its cron line.
 */
export function wireDrift(
  deps: DriftDeps,
  detector: DriftDetector,
  remediator: DriftRemediator,
  close: () => Promise<void> = async () => {},
): DriftHandle {
  const log = deps.log.child({ component: 'drift' });
  const sweeper = new DriftSweeper(
    deps.db,
    detector,
    remediator,
    new DriftMetrics(deps.registry, deps.db),
    log,
    {
      ...(deps.runOperation ? { runOperation: deps.runOperation } : {}),
      ...(deps.maxAttempts ? { maxAttempts: deps.maxAttempts } : {}),
      ...(deps.remediationTimeoutMs ? { remediationTimeoutMs: deps.remediationTimeoutMs } : {}),
    },
  );
  const service = new DriftService(deps.db, sweeper, detector.target);
  return {
    service,
    remediator,
    taskList: {
      [DRIFT_SWEEP_TASK]: async (payload) => {
        await service.runTask(payload);
      },
    },
    // jobKey: a tick never queues a second sweep while one waits; the advisory lock covers the rest.
    crontab:
      deps.schedule === null
        ? ''
        : `${deps.schedule} ${DRIFT_SWEEP_TASK} ?jobKey=drift-sweep&jobKeyMode=preserve_run_at&max=3\n`,
    close,
  };
}

/**
 * The local target: its own small admin pools on the data plane, the batched catalog detector and
 * the provider-backed remediator.
 */
export function registerLocalDrift(
  deps: DriftDeps & {
    /** Admin URL of the data-plane cluster's shared database (what LocalEngine's DataPlane gets). */
    dataplaneUrl: string;
    keys: KeyStore & SecretStore;
    templates: Templates;
    /** Sweep-owned admin sessions on the data plane (per pool: shared database, maintenance database). */
    maxConnections?: number;
    /** Logins whose password a sweep verifies from scratch, at most (LocalDriftOptions). */
    credentialChecksPerSweep?: number;
  },
): DriftHandle {
  const dp = new DataPlane(deps.dataplaneUrl, { maxConnections: deps.maxConnections ?? 4 });
  const { catalog, tenantSchema } = deps.templates;
  const inventory = deps.keys.inventory?.bind(deps.keys);
  const detector = new LocalDriftDetector(dp, deps.db, catalog, tenantSchema, {
    secrets: deps.keys,
    ...(inventory ? { inventory } : {}),
    ...(deps.credentialChecksPerSweep ? { credentialChecksPerSweep: deps.credentialChecksPerSweep } : {}),
  });
  const remediator = new LocalDriftRemediator(dp, deps.keys, catalog, tenantSchema);
  return wireDrift(deps, detector, remediator, () => dp.close());
}
