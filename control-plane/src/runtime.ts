import pg from 'pg';
import type { Logger } from 'pino';
import type { Services } from './app.js';
import { type Config, StartRefused } from './config.js';
import { DataPlane } from './dataplane/dataplane.js';
import { Db } from './db/db.js';
import { buildMigrations, migrate } from './db/migrate.js';
import type { Engine, KeyStore, SecretStore } from './domain/ports.js';
import type { Queryable } from './domain/queryable.js';
import { type DriftHandle, registerLocalDrift } from './drift/index.js';
import { type EmbeddedServer, startEmbedded } from './embedded.js';
import { LocalEngine } from './engine/local.js';
import { Metrics } from './lib/metrics.js';
import { assertTemplateLint, type TemplateLint, TemplateLintError } from './lib/template-lint.js';
import { loadTemplates } from './lib/templates.js';
import { RotatingLocalKeyStore } from './local/key-rotation.js';
import { holdRootKeyLock, readRootKey, verifyRootKey } from './local/root-key.js';
import { TokenCache } from './plugins/auth.js';
import { ident } from './providers/postgres/sql.js';
import { Readiness } from './readiness.js';
import { type RolloutHandle, registerRollouts } from './rollout/index.js';
import { RotationSchedule } from './rotation/schedule.js';
import { ConnectionBudget } from './services/capacity.js';
import { CredentialService } from './services/credentials.js';
import { EventService } from './services/events.js';
import { ExportService, type S3Archives } from './services/exports.js';
import { RolloutService } from './services/rollouts.js';
import { SuspensionService } from './services/suspension.js';
import { TenantService } from './services/tenants.js';
import { TokenService } from './services/tokens.js';
import { WebhookService } from './services/webhooks.js';
import { type EventSink, WebhookDeliverer } from './webhooks/delivery.js';
import { generateSecret } from './webhooks/signing.js';
import { OperationExecutor } from './worker/executor.js';
import { migrateQueue, startWorker, type WorkerHandle } from './worker/index.js';

export interface Runtime {
  services: Services;
  executor: OperationExecutor;
  /** The queue runner, in a process that runs the worker. */
  worker: WorkerHandle | undefined;
  /** Fleet schema rollouts (local target): their runner, for tests' fault hooks. */
  rollouts?: RolloutHandle;
  /** The webhook deliverer (its jobs run on the worker), for tests that drive a stream directly. */
  deliverer: WebhookDeliverer;
  /** Set only on the first start without TENANTRY_ADMIN_TOKEN: shown once, never stored in clear. */
  generatedAdminToken: string | undefined;
  /**
   * Stops the worker (if any): running operations get `drainMs` to finish, then are handed back to
   * the queue. close() does it too (waiting for them), unless this ran first.
   */
  drainWorker(drainMs: number): Promise<{ handedBack: string[] }>;
  close(): Promise<void>;
  /** Synchronous: stops what must not outlive the process (the embedded Postgres) without waiting. */
  kill(): void;
}

const CONTROL_DB = 'tenantry';
const DATA_DB = 'tenantry_data';

async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    const { rows } = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (rows.length === 0) {
      await c.query(`CREATE DATABASE ${ident(name)}`).catch((e: { code?: string }) => {
        if (e.code !== '42P04') throw e;
      });
    }
  } finally {
    await c.end();
  }
}

/**
 * Whether the data plane runs on the control plane's own cluster (then provisioning may commit
 * relaxed: DataPlane.allowRelaxedCommits), and if the control database is on it, its name: tenant
 * roles share the cluster with it, so it must be locked down (no CONNECT for PUBLIC). Host names
 * cannot tell (localhost, 127.0.0.1, a DNS alias): compare the clusters' system identifiers, and the
 * database's oid to be sure it is the same database.
 */
export async function controlDatabaseOnDataPlane(
  control: Queryable,
  dataplaneUrl: string,
): Promise<{ sameCluster: boolean; controlDb: string | null }> {
  const here = await control.query<{ sysid: string; db: string; oid: string }>(
    `SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid, current_database() AS db,
            (SELECT oid::text FROM pg_database WHERE datname = current_database()) AS oid`,
  );
  const c = here.rows[0];
  if (!c) return { sameCluster: false, controlDb: null };
  const dp = new pg.Client({ connectionString: withDatabase(dataplaneUrl, 'postgres') });
  await dp.connect();
  try {
    const there = await dp.query<{ sysid: string; oid: string | null }>(
      `SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
              (SELECT oid::text FROM pg_database WHERE datname = $1) AS oid`,
      [c.db],
    );
    const d = there.rows[0];
    // A sysid hidden from a non-superuser reads as null: not known to be the same cluster.
    const sameCluster = Boolean(d?.sysid && d.sysid === c.sysid);
    return { sameCluster, controlDb: sameCluster && d?.oid === c.oid ? c.db : null };
  } finally {
    await dp.end();
  }
}

/**
 * Our own connections to the embedded Postgres go through its Unix socket (in the cluster's
 * directory, which only its OS user and root can enter): a round trip costs about half of one over
 * loopback TCP. Authentication differs: on the socket, pg_hba lets this process's OS user in as
 * `postgres` by peer authentication, with no password (embedded.ts `peerOnSocket`); over TCP
 * everyone, the superuser included, is asked for SCRAM.
 */
function viaSocket(url: string, socketDir: string | null): string {
  if (!socketDir) return url;
  const u = new URL(url);
  u.searchParams.set('host', socketDir);
  return u.toString();
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export interface ControlDatabase {
  /** The control database's URL (through the embedded server's Unix socket when it is ours). */
  url: string;
  /** The same server's URL for another database (the data plane's default). */
  urlFor(database: string): string;
  /** Stops the embedded server, if one was started (nothing otherwise). */
  stop(): Promise<void>;
  kill(): void;
}

/** The control database: `DATABASE_URL`, or the embedded server (started here) and its `tenantry` database. */
export async function openControlDatabase(config: Config, log: Logger): Promise<ControlDatabase> {
  if (config.databaseUrl) {
    const url = config.databaseUrl;
    return { url, urlFor: (database) => withDatabase(url, database), stop: async () => {}, kill: () => {} };
  }
  const e: EmbeddedServer = await startEmbedded({
    dataDir: config.dataDir,
    port: config.embeddedPgPort,
    log,
    unixSocket: true,
  });
  try {
    const urlFor = (database: string) => viaSocket(e.url(database), e.socketDir);
    await ensureDatabase(urlFor('postgres'), CONTROL_DB);
    return { url: urlFor(CONTROL_DB), urlFor, stop: () => e.stop(), kill: () => e.kill() };
  } catch (err) {
    await e.stop().catch(() => undefined);
    throw err;
  }
}

/**
 * The composition root: starts (or connects to) Postgres, migrates, wires the adapters to the
 * domain, seeds the admin token and starts the worker. Everything it starts, close() stops.
 */
export async function startRuntime(config: Config, log: Logger): Promise<Runtime> {
  const closers: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const c of closers.reverse()) {
      await c().catch((e: unknown) => log.warn({ err: (e as Error).message }, 'error during shutdown'));
    }
  };
  let control: ControlDatabase | undefined;
  try {
    control = await openControlDatabase(config, log);
    const c = control;
    closers.push(() => c.stop());
    const databaseUrl = control.url;
    // Tenants' descriptors keep the URL's TCP host and port; only the socket path is added.
    const dataplaneUrl = config.dataplaneUrl ?? control.urlFor(DATA_DB);

    const db = new Db(databaseUrl, {
      max: config.dbPoolSize,
      min: config.dbPoolMin,
      acquireTimeoutMs: config.dbAcquireTimeoutMs,
      checkHolds: config.dbHoldCheck,
      readPipelines: config.dbReadPipelines,
    });
    closers.push(() => db.close());
    await migrate(db.pool, log);
    // The pool's connections opened now, not under the first load (Db.warm); one that cannot be is
    // opened later by the request that needs it.
    await db
      .warm()
      .catch((e: unknown) =>
        log.warn(
          { err: (e as Error).message },
          'could not open the control database pool up to TENANTRY_DB_POOL_MIN',
        ),
      );
    // The local target's root key, checked against the store before anything is written with it
    // (the aws target keeps its keys and secrets in KMS and Secrets Manager, and needs none).
    let keys: (KeyStore & SecretStore) | undefined;
    if (config.target === 'local' && config.secrets.store === 'aws') {
      // TENANTRY_SECRETS=aws: tenant keys in KMS, credentials in Secrets Manager (aws/store.ts); no root key.
      const { AwsKeyStore } = await import('./aws/store.js');
      const store = new AwsKeyStore(config.secrets);
      closers.push(async () => store.close());
      keys = store;
    } else if (config.target === 'local') {
      const rootKey = readRootKey(config.rootKey);
      const lease = await holdRootKeyLock(databaseUrl, log.child({ component: 'root-key' }));
      closers.push(() => lease.close());
      // The local store, with data-key rotation (POST /v1/tenants/{slug}/key-rotations).
      keys = new RotatingLocalKeyStore(db, rootKey.key, await verifyRootKey(db, rootKey));
    }
    await migrateQueue(db, log);

    const templates = loadTemplates(config.templatesDir);
    const lint = await lintTemplates(db, templates.tenantSchema);
    const metrics = new Metrics(db);
    // The executors are built below; the drift sweep drives its reconcile operations through one.
    let executor: OperationExecutor | undefined;
    let driftRunner: OperationExecutor | undefined;
    let rolloutExecutor: OperationExecutor | undefined;
    let rollouts: RolloutHandle | undefined;
    const driftDeps = {
      db,
      log,
      registry: metrics.registry,
      schedule: config.driftSchedule,
      maxAttempts: config.operationMaxAttempts,
      remediationTimeoutMs: config.driftRemediationTimeoutMs,
      // A runner of its own: the worker's executor may claim the same operation from the job queue,
      // and one runner id on both sides would let both run it.
      runOperation: async (id: string) => {
        await driftRunner?.run(id);
      },
    };
    let engine: Engine;
    let drift: DriftHandle;
    let capacity: ConnectionBudget | undefined;
    let exportArchives: S3Archives | undefined;
    if (config.target === 'aws' && config.aws) {
      const { startAwsTarget } = await import('./aws-target.js');
      const aws = startAwsTarget(config.aws, {
        dataDir: config.dataDir,
        templatesDir: config.templatesDir,
        templateVersion: templates.catalog.templateVersion,
        drift: driftDeps,
        promotion: {
          rollbackWindowMs: config.promotionRollbackWindowMs,
          maxLagBytes: config.promotionMaxLagBytes,
          freezeWaitMs: config.promotionFreezeWaitMs,
          lagPollMs: config.promotionLagPollMs,
        },
        ...(config.lifecycle.exportBucket ? { exportBucket: config.lifecycle.exportBucket } : {}),
      });
      engine = aws.engine;
      exportArchives = aws.exports;
      drift = aws.drift;
      closers.push(() => aws.engine.close());
    } else {
      if (!keys) throw new Error('the local target needs its key store');
      const dp = new DataPlane(dataplaneUrl);
      const { sameCluster, controlDb } = await controlDatabaseOnDataPlane(db, dataplaneUrl);
      dp.allowRelaxedCommits(sameCluster);
      const local = new LocalEngine(dp, keys, templates.catalog, templates.tenantSchema, {
        faultStepDelayMs: config.faultStepDelayMs,
        ...(config.faultHoldFile ? { faultHoldFile: config.faultHoldFile } : {}),
        protectDatabases: controlDb ? [controlDb] : [],
        promotion: {
          rollbackWindowMs: config.promotionRollbackWindowMs,
          maxLagBytes: config.promotionMaxLagBytes,
          freezeWaitMs: config.promotionFreezeWaitMs,
          lagPollMs: config.promotionLagPollMs,
          freezeDeadlineMs: config.promotionFreezeDeadlineMs,
        },
      });
      closers.push(() => local.close());
      await local.bootstrap();
      // Tenants' connection limits against what the data-plane cluster allows (and the admin's reserved slots).
      capacity = new ConnectionBudget(db, dp, templates.catalog, {
        overcommit: config.connectionOvercommit,
        log: log.child({ component: 'connection-budget' }),
      });
      await capacity.start();
      metrics.trackConnectionBudget(capacity);
      engine = local;
      drift = registerLocalDrift({ ...driftDeps, dataplaneUrl, keys, templates });
      rollouts = registerRollouts({
        db,
        dp,
        log,
        template: templates.tenantSchema,
        lint,
        leaseMs: config.operationLeaseMs,
        ...(config.faultHoldFile ? { faultHoldFile: config.faultHoldFile } : {}),
        // Its own runner id, as the drift runner has: see driftDeps.runOperation.
        runOperation: async (id: string) => {
          await rolloutExecutor?.run(id);
        },
      });
      const r = rollouts;
      closers.push(() => r.close());
    }
    const d = drift;
    closers.push(() => d.close());

    const tokenCache = new TokenCache(db, { log: log.child({ component: 'token-cache' }) });
    closers.push(() => tokenCache.close());
    const tokens = new TokenService(db, tokenCache);
    // A tenant's second day (docs/lifecycle.md): exports, suspension, events and webhooks.
    const exports = new ExportService(db, engine, {
      dataDir: config.dataDir,
      exportRetentionMs: config.lifecycle.exportRetentionMs,
      finalExportRetentionMs: config.lifecycle.finalExportRetentionMs,
      maxAttempts: config.operationMaxAttempts,
      log: log.child({ component: 'exports' }),
      s3: { bucket: config.lifecycle.exportBucket, store: exportArchives },
    });
    const suspension = new SuspensionService(db, engine, { maxAttempts: config.operationMaxAttempts });
    // TENANTRY_EVENTBRIDGE_BUS: the published events also go to an EventBridge bus (aws/eventbridge.ts).
    const sinks: EventSink[] = [];
    if (config.lifecycle.eventBridge) {
      const eb = config.lifecycle.eventBridge;
      const [{ EventBridgeClient }, { EventBridgePublisher }] = await Promise.all([
        import('@aws-sdk/client-eventbridge'),
        import('./aws/eventbridge.js'),
      ]);
      const client = new EventBridgeClient({
        region: eb.region,
        ...(eb.endpoint ? { endpoint: eb.endpoint } : {}),
      });
      closers.push(async () => client.destroy());
      const bridge = new EventBridgePublisher(db, client, {
        bus: eb.bus,
        log: log.child({ component: 'eventbridge' }),
      });
      await bridge.start();
      sinks.push(bridge);
    }
    // Webhook signing secrets: the local target's store; on the aws target Secrets Manager (aws/store.ts).
    let webhookSecrets: (KeyStore & SecretStore) | undefined = keys;
    if (!webhookSecrets && config.target === 'aws' && config.aws) {
      const { AwsKeyStore } = await import('./aws/store.js');
      const store = new AwsKeyStore({
        region: config.aws.region,
        ...(config.aws.endpoint ? { endpoint: config.aws.endpoint } : {}),
        // Only the platform key is made here, and never shredded.
        keyDeletionWindowDays: 30,
      });
      closers.push(async () => store.close());
      webhookSecrets = store;
    }
    const deliverer = new WebhookDeliverer(db, webhookSecrets, log.child({ component: 'webhooks' }), {
      ...config.lifecycle.webhooks,
      leaseMs: config.operationLeaseMs,
      sinks,
    });
    const webhooks = new WebhookService(
      db,
      webhookSecrets,
      { urlRefusal: (url) => deliverer.policy.urlRefusal(url), generateSecret },
      config.target,
    );
    const tenants = new TenantService(db, engine, {
      templateVersion: templates.tenantSchema.version,
      maxAttempts: config.operationMaxAttempts,
      ...(capacity ? { capacity } : {}),
      catalog: templates.catalog,
      exports,
    });
    const credentials = new CredentialService(db, engine, templates.catalog, {
      maxAttempts: config.operationMaxAttempts,
    });
    // Scheduled credential rotation per tier (templates/tiers.json), on the job queue.
    const rotation = new RotationSchedule(db, credentials, templates.catalog, {
      maxPerTick: config.rotationMaxPerTick,
      schedule: config.rotationSchedule,
      log: log.child({ component: 'rotation-schedule' }),
    });
    const migrator = rollouts ? { migrator: rollouts.migrator } : {};
    executor = new OperationExecutor(db, engine, log.child({ component: 'worker' }), metrics, {
      maxAttempts: config.operationMaxAttempts,
      leaseMs: config.operationLeaseMs,
      reconciler: drift.remediator,
      ...migrator,
    });
    driftRunner = new OperationExecutor(db, engine, log.child({ component: 'drift-runner' }), metrics, {
      maxAttempts: config.operationMaxAttempts,
      leaseMs: config.operationLeaseMs,
      reconciler: drift.remediator,
      ...migrator,
    });
    rolloutExecutor = new OperationExecutor(db, engine, log.child({ component: 'rollout-runner' }), metrics, {
      maxAttempts: config.operationMaxAttempts,
      leaseMs: config.operationLeaseMs,
      reconciler: drift.remediator,
      ...migrator,
    });
    let worker: WorkerHandle | undefined;
    if (config.role !== 'api') {
      worker = await startWorker(db, executor, log.child({ component: 'queue' }), {
        concurrency: config.workerConcurrency,
        leaseMs: config.operationLeaseMs,
        tasks: {
          ...drift.taskList,
          ...rollouts?.taskList,
          ...rotation.taskList,
          ...deliverer.taskList,
          ...exports.taskList,
        },
        crontab: `${drift.crontab}${rollouts?.crontab ?? ''}${rotation.crontab}${deliverer.crontab}${exports.crontab}`,
        runnerIds: [
          executor.runnerId,
          driftRunner.runnerId,
          rolloutExecutor.runnerId,
          ...(rollouts ? [rollouts.runner.runnerId] : []),
        ],
        // As the lease reaper enqueues them (worker/executor.ts).
        jobMaxAttempts: config.operationMaxAttempts + 2,
      });
    }
    const w = worker;
    // Worker processes publish the events as they commit (webhooks/delivery.ts listen).
    if (w) {
      const events = deliverer.listen();
      closers.push(() => events.close());
    }
    // What a crash left of the outbox: events not published, webhook streams whose job died.
    if (w)
      await deliverer
        .sweep()
        .catch((e: unknown) =>
          log.warn(
            { err: (e as Error).message },
            'the lifecycle sweep at start failed; the next one retries',
          ),
        );
    let workerStop: Promise<{ handedBack: string[] }> | undefined;
    const drainWorker = (drainMs?: number) => {
      workerStop ??= w
        ? w.stop(drainMs === undefined ? {} : { drainMs })
        : Promise.resolve({ handedBack: [] });
      return workerStop;
    };
    closers.push(() => drainWorker().then(() => undefined));
    const readiness = new Readiness(db, buildMigrations(), w ? () => w.running() : undefined);
    // The pool's version recorded, and the runs of rollouts a crash interrupted enqueued again.
    await rollouts?.start();
    const rolloutService = new RolloutService(db, {
      newestVersion: templates.tenantSchema.version,
      contracts: lint.contracts,
      available: rollouts !== undefined,
    });
    // Last: a generated token is shown only by our caller, so nothing that can fail may come
    // between committing it and returning it (a failed start must not leave an unseen admin).
    const generatedAdminToken = await tokens.seedAdmin(config.adminToken);
    return {
      services: {
        db,
        engine,
        tenants,
        credentials,
        tokens,
        drift: drift.service,
        metrics,
        tokenCache,
        readiness,
        rollouts: rolloutService,
        suspension,
        exports,
        events: new EventService(db),
        webhooks,
      },
      executor,
      worker: w,
      ...(rollouts ? { rollouts } : {}),
      deliverer,
      generatedAdminToken,
      drainWorker,
      close,
      kill: () => control?.kill(),
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/**
 * The tenant-schema template lint (lib/template-lint.ts), on a session of the control database in a
 * transaction it rolls back: a template it refuses stops the start, with every reason.
 */
async function lintTemplates(
  db: Db,
  template: Parameters<typeof assertTemplateLint>[1],
): Promise<TemplateLint> {
  const client = await db.pool.connect();
  try {
    return await assertTemplateLint(client, template);
  } catch (e) {
    if (e instanceof TemplateLintError) throw new StartRefused(e.message);
    throw e;
  } finally {
    client.release();
  }
}
