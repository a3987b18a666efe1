import path from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parseCrontab } from 'graphile-worker';
import { ADMIN_TOKEN_MIN_LENGTH, TOKEN_CHARS, TOKEN_MAX_LENGTH } from './domain/auth.js';
import { parseCidr } from './webhooks/addresses.js';

/**
 * The one place that reads the environment. Everything else receives a Config.
 * Invalid settings fail at boot with a message naming the variable to fix.
 */
const Env = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info' },
  ),
  TENANTRY_DATA_DIR: Type.String({ minLength: 1, default: '.tenantry' }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  TENANTRY_DATAPLANE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  TENANTRY_EMBEDDED_PG_PORT: Type.Integer({ minimum: 1024, maximum: 65535, default: 54329 }),
  TENANTRY_TARGET: Type.Union([Type.Literal('local'), Type.Literal('aws')], { default: 'local' }),
  /** Must be a token the Authorization header parser accepts (plugins/auth.ts). */
  TENANTRY_ADMIN_TOKEN: Type.Optional(
    Type.String({
      minLength: ADMIN_TOKEN_MIN_LENGTH,
      maxLength: TOKEN_MAX_LENGTH,
      pattern: `^${TOKEN_CHARS}+$`,
    }),
  ),
  TENANTRY_ROLE: Type.Union([Type.Literal('all'), Type.Literal('api'), Type.Literal('worker')], {
    default: 'all',
  }),
  TENANTRY_WORKER_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 64, default: 4 }),
  TENANTRY_OPERATION_MAX_ATTEMPTS: Type.Integer({ minimum: 1, maximum: 100, default: 8 }),
  TENANTRY_OPERATION_LEASE_MS: Type.Integer({ minimum: 500, maximum: 3_600_000, default: 30_000 }),
  TENANTRY_TEMPLATES_DIR: Type.Optional(Type.String({ minLength: 1 })),
  TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: Type.Integer({ minimum: 0, default: 86_400_000 }),
  TENANTRY_PROMOTION_MAX_LAG_BYTES: Type.Integer({ minimum: 1_048_576, default: 1_073_741_824 }),
  TENANTRY_PROMOTION_FREEZE_WAIT_MS: Type.Integer({ minimum: 100, maximum: 600_000, default: 15_000 }),
  TENANTRY_PROMOTION_LAG_POLL_MS: Type.Integer({ minimum: 50, maximum: 60_000, default: 1000 }),
  TENANTRY_PROMOTION_FREEZE_DEADLINE_MS: Type.Integer({ minimum: 1000, maximum: 600_000, default: 5000 }),
  PULUMI_BACKEND_URL: Type.Optional(Type.String({ pattern: '^(s3|file|gs|azblob)://|^https://' })),
  TENANTRY_PULUMI_SECRETS_PROVIDER: Type.Optional(
    Type.String({ pattern: '^(awskms|gcpkms|azurekeyvault|hashivault)://|^passphrase$' }),
  ),
  PULUMI_CONFIG_PASSPHRASE: Type.Optional(Type.String()),
  TENANTRY_PULUMI_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 16, default: 2 }),
  TENANTRY_PULUMI_TIMEOUT_MS: Type.Integer({ minimum: 10_000, default: 1_800_000 }),
  AWS_REGION: Type.Optional(Type.String({ pattern: '^[a-z]{2}(-[a-z]+)+-\\d$' })),
  TENANTRY_AWS_ENDPOINT: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** JSON object of the stacks' `tenantry:*` settings (without the prefix); see docs/aws.md. */
  TENANTRY_AWS_PLATFORM: Type.Optional(Type.String()),
  /** Local target: where tenant keys and credentials live (`aws`: KMS and Secrets Manager, in AWS_REGION). */
  TENANTRY_SECRETS: Type.Union([Type.Literal('local'), Type.Literal('aws')], { default: 'local' }),
  /** TENANTRY_SECRETS=aws: how long a shredded tenant key stays pending deletion in KMS. */
  TENANTRY_AWS_KEY_DELETION_WINDOW_DAYS: Type.Integer({ minimum: 7, maximum: 30, default: 30 }),
  /** Five-field cron for scheduled drift sweeps (run through the job queue's cron), or `off`. */
  TENANTRY_DRIFT_SCHEDULE: Type.String({
    pattern: '^(off|\\S+\\s+\\S+\\s+\\S+\\s+\\S+\\s+\\S+)$',
    default: '*/15 * * * *',
  }),
  TENANTRY_DRIFT_REMEDIATION_TIMEOUT_MS: Type.Integer({ minimum: 1000, default: 300_000 }),
  /** Five-field cron of the credential rotation schedule's ticks (templates/tiers.json `rotation`), or `off`. */
  TENANTRY_ROTATION_SCHEDULE: Type.String({
    pattern: '^(off|\\S+\\s+\\S+\\s+\\S+\\s+\\S+\\s+\\S+)$',
    default: '* * * * *',
  }),
  /** Scheduled rotations (and retires of old logins) started per tick at most. */
  TENANTRY_ROTATION_MAX_PER_TICK: Type.Integer({ minimum: 1, maximum: 10_000, default: 20 }),
  /** Fault injection for crash tests: sleep this long inside every provisioning step. Never set in production. */
  TENANTRY_FAULT_STEP_DELAY_MS: Type.Integer({ minimum: 0, maximum: 600_000, default: 0 }),
  TENANTRY_FAULT_HOLD_FILE: Type.Optional(Type.String({ minLength: 1 })),
  TENANTRY_DB_POOL_SIZE: Type.Integer({ minimum: 2, maximum: 200, default: 10 }),
  /** Connections of the main pool kept open, opened at startup (default: TENANTRY_DB_POOL_SIZE, a fixed-size pool). */
  TENANTRY_DB_POOL_MIN: Type.Optional(Type.Integer({ minimum: 0, maximum: 200 })),
  TENANTRY_DB_ACQUIRE_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 120_000, default: 5000 }),
  /**
   * Pipelined connections for the API's hottest reads (a tenant, an unfiltered page of the fleet;
   * db/read-pipeline.ts); 0 sends them through the main pool.
   */
  TENANTRY_DB_READ_PIPELINES: Type.Integer({ minimum: 0, maximum: 16, default: 2 }),
  /**
   * `on`: a caller holding a control-database connection that asks the same pool for another is refused
   * at once (db/db.ts, `checkHolds`). Off by default: the check costs every request CPU; the test suite turns it on.
   */
  TENANTRY_DB_HOLD_CHECK: Type.Union([Type.Literal('on'), Type.Literal('off')], { default: 'off' }),
  TENANTRY_SHUTDOWN_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 600_000, default: 15_000 }),
  /** How long a stopping worker waits for its running operations before handing them back (default: ⅔ of what the shutdown timeout leaves after the delay). */
  TENANTRY_DRAIN_TIMEOUT_MS: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000 })),
  /** How long a stopping process keeps serving, unready, before it closes its listener (load balancers notice). */
  TENANTRY_SHUTDOWN_DELAY_MS: Type.Integer({ minimum: 0, maximum: 600_000, default: 0 }),
  /** A file holding the local root key (base64 of 32 bytes), as a secret store mounts it. */
  TENANTRY_ROOT_KEY_FILE: Type.Optional(Type.String({ minLength: 1 })),
  /** The local root key itself (base64 of 32 bytes), as a secret store hands it to the environment. */
  TENANTRY_ROOT_KEY: Type.Optional(Type.String({ minLength: 1 })),
  /**
   * How far the connection limits of a cluster's tenants may go past its connection budget: a ratio
   * (1 = not at all) or `allow` (no ceiling). Past the budget, an onboarding is accepted with a warning.
   */
  /** How long an on-demand export's archive is kept (docs/lifecycle.md). */
  TENANTRY_EXPORT_RETENTION_DAYS: Type.Integer({ minimum: 1, maximum: 3650, default: 7 }),
  /** How long an offboarding's final export (`?export=true`) is kept. */
  TENANTRY_FINAL_EXPORT_RETENTION_DAYS: Type.Integer({ minimum: 1, maximum: 3650, default: 30 }),
  /** Comma-separated CIDRs a webhook may reach although private or link-local (e.g. `10.0.0.0/8,127.0.0.1/32`). */
  TENANTRY_WEBHOOK_ALLOWED_NETWORKS: Type.String({ maxLength: 4000, default: '' }),
  /** How long one webhook delivery may take, connection included. */
  TENANTRY_WEBHOOK_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 120_000, default: 10_000 }),
  /** The first retry's delay; each later one doubles it, up to TENANTRY_WEBHOOK_RETRY_MAX_MS. */
  TENANTRY_WEBHOOK_RETRY_BASE_MS: Type.Integer({ minimum: 10, maximum: 3_600_000, default: 5000 }),
  TENANTRY_WEBHOOK_RETRY_MAX_MS: Type.Integer({ minimum: 10, maximum: 86_400_000, default: 3_600_000 }),
  /** A webhook whose oldest undelivered event has failed for this long is disabled (default: 5 days). */
  TENANTRY_WEBHOOK_DISABLE_AFTER_MS: Type.Integer({
    minimum: 1000,
    maximum: 90 * 86_400_000,
    default: 5 * 86_400_000,
  }),
  /** aws target: the S3 bucket export archives go to, each encrypted with its tenant's KMS key (unset: exports refused). */
  TENANTRY_EXPORT_BUCKET: Type.Optional(
    Type.String({ pattern: '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$', description: 'an S3 bucket name' }),
  ),
  /** An EventBridge bus (name or ARN, in AWS_REGION) every lifecycle event is also sent to (aws/eventbridge.ts). */
  TENANTRY_EVENTBRIDGE_BUS: Type.Optional(Type.String({ minLength: 1, maxLength: 1600 })),
  TENANTRY_CONNECTION_OVERCOMMIT: Type.String({
    pattern: '^(allow|[0-9]{1,3}(\\.[0-9]{1,3})?)$',
    default: '1',
  }),
});

export interface Config {
  port: number;
  host: string;
  logLevel: string;
  dataDir: string;
  /** Set when the control-plane database is external; otherwise an embedded server is started. */
  databaseUrl: string | undefined;
  dataplaneUrl: string | undefined;
  embeddedPgPort: number;
  target: 'local' | 'aws';
  adminToken: string | undefined;
  role: 'all' | 'api' | 'worker';
  workerConcurrency: number;
  operationMaxAttempts: number;
  operationLeaseMs: number;
  templatesDir: string;
  faultStepDelayMs: number;
  /** Crash tests only: a file naming the fault point where an operation waits to be killed. */
  faultHoldFile: string | undefined;
  promotionRollbackWindowMs: number;
  promotionMaxLagBytes: number;
  /** How long a freeze waits for the writers' older transactions before it lifts itself and retries. */
  promotionFreezeWaitMs: number;
  /** How often a promotion's retained WAL is measured during its long steps. */
  promotionLagPollMs: number;
  /** The longest a crashed control plane can hold a tenant's writes inside a promotion's freeze (local target). */
  promotionFreezeDeadlineMs: number;
  /** Cron line of scheduled drift sweeps; null when off. */
  driftSchedule: string | null;
  driftRemediationTimeoutMs: number;
  /** Cron line of the credential rotation schedule's ticks; null when off. */
  rotationSchedule: string | null;
  /** Scheduled rotations and retires started per tick at most. */
  rotationMaxPerTick: number;
  /** Connections of the control database's main pool. */
  dbPoolSize: number;
  /** Of those, how many are opened at startup and kept open (a fixed-size pool when equal). */
  dbPoolMin: number;
  /** How long a request waits for a control-database connection before it gets a 503. */
  dbAcquireTimeoutMs: number;
  /** Pipelined connections for the hottest reads (db/read-pipeline.ts); 0: through the main pool. */
  dbReadPipelines: number;
  /** Whether the control database's pools refuse a second connection to a caller holding one (db/db.ts). */
  dbHoldCheck: boolean;
  /** How long an orderly shutdown may take before the process stops Postgres and exits anyway. */
  shutdownTimeoutMs: number;
  /** How long a stopping worker lets its running operations finish before handing them back to the queue. */
  drainTimeoutMs: number;
  /** How long a stopping process keeps serving (answering /readyz 503) before it stops accepting connections. */
  shutdownDelayMs: number;
  /** Where the local target's root key comes from (the aws target needs none): see `RootKeySetting`. */
  rootKey: RootKeySetting;
  /** Ratio of a cluster's connection budget its tenants' limits may reach (≥ 1; Infinity: no ceiling). */
  connectionOvercommit: number;
  aws?: AwsTargetConfig;
  /** The local target's key and secret store: the control database (`local`), or KMS and Secrets Manager. */
  secrets: SecretsConfig;
  /** Exports and webhooks (docs/lifecycle.md). */
  lifecycle: LifecycleConfig;
}

export interface LifecycleConfig {
  exportRetentionMs: number;
  finalExportRetentionMs: number;
  webhooks: {
    /** CIDRs a webhook may reach although private or link-local (an operator's explicit choice). */
    allowedNetworks: string[];
    timeoutMs: number;
    retryBaseMs: number;
    retryMaxMs: number;
    disableAfterMs: number;
  };
  /** TENANTRY_EXPORT_BUCKET (aws target): the bucket of export archives. */
  exportBucket?: string;
  /** TENANTRY_EVENTBRIDGE_BUS: the bus the events also go to, and where it is. */
  eventBridge?: { bus: string; region: string; endpoint: string | undefined };
}

export type SecretsConfig =
  | { store: 'local' }
  | { store: 'aws'; region: string; endpoint: string | undefined; keyDeletionWindowDays: number };

export interface AwsTargetConfig {
  backendUrl: string;
  secretsProvider: string | undefined;
  region: string;
  endpoint: string | undefined;
  platform: Record<string, string>;
  concurrency: number;
  timeoutMs: number;
  /** Only what the Pulumi CLI and providers need, handed to its child process. */
  envVars: Record<string, string>;
}

/**
 * Where the local root key comes from, in this order: `TENANTRY_ROOT_KEY_FILE`, else `TENANTRY_ROOT_KEY`
 * (setting both is an error), else `<data dir>/keys/root.key`, generated on the first start. Only the
 * data directory's key is ever generated: a named file that is missing fails the start. The value is
 * behind a function so that a logged or serialized config never carries it.
 */
export type RootKeySetting =
  | { from: 'TENANTRY_ROOT_KEY_FILE'; path: string }
  | { from: 'TENANTRY_ROOT_KEY'; value: () => string }
  | { from: 'TENANTRY_DATA_DIR'; path: string; dataDir: string };

/**
 * A start refused for a reason the operator fixes (a setting, the root key, the control schema's
 * version): the entry point prints its message alone, never a stack.
 */
/** An EventBridge bus's name, or its ARN (TENANTRY_EVENTBRIDGE_BUS). */
const EVENT_BUS_NAME = /^[A-Za-z0-9._\-/]{1,256}$/;
const EVENT_BUS_ARN = /^arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:event-bus\/[A-Za-z0-9._\-/]{1,256}$/;

export class StartRefused extends Error {
  override name = 'StartRefused';
}

export class ConfigError extends StartRefused {
  override name = 'ConfigError';
}

const INT_KEYS = new Set([
  'PORT',
  'TENANTRY_EMBEDDED_PG_PORT',
  'TENANTRY_WORKER_CONCURRENCY',
  'TENANTRY_OPERATION_MAX_ATTEMPTS',
  'TENANTRY_OPERATION_LEASE_MS',
  'TENANTRY_FAULT_STEP_DELAY_MS',
  'TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS',
  'TENANTRY_PROMOTION_MAX_LAG_BYTES',
  'TENANTRY_PROMOTION_FREEZE_WAIT_MS',
  'TENANTRY_PROMOTION_LAG_POLL_MS',
  'TENANTRY_PROMOTION_FREEZE_DEADLINE_MS',
  'TENANTRY_PULUMI_CONCURRENCY',
  'TENANTRY_PULUMI_TIMEOUT_MS',
  'TENANTRY_DRIFT_REMEDIATION_TIMEOUT_MS',
  'TENANTRY_ROTATION_MAX_PER_TICK',
  'TENANTRY_DB_POOL_SIZE',
  'TENANTRY_DB_POOL_MIN',
  'TENANTRY_DB_ACQUIRE_TIMEOUT_MS',
  'TENANTRY_DB_READ_PIPELINES',
  'TENANTRY_SHUTDOWN_TIMEOUT_MS',
  'TENANTRY_DRAIN_TIMEOUT_MS',
  'TENANTRY_SHUTDOWN_DELAY_MS',
  'TENANTRY_AWS_KEY_DELETION_WINDOW_DAYS',
  'TENANTRY_EXPORT_RETENTION_DAYS',
  'TENANTRY_FINAL_EXPORT_RETENTION_DAYS',
  'TENANTRY_WEBHOOK_TIMEOUT_MS',
  'TENANTRY_WEBHOOK_RETRY_BASE_MS',
  'TENANTRY_WEBHOOK_RETRY_MAX_MS',
  'TENANTRY_WEBHOOK_DISABLE_AFTER_MS',
]);

/**
 * The only variables the Pulumi child process (the CLI, its plugins, dynamic providers) gets: never
 * DATABASE_URL or the admin token. AWS credentials in every form the SDKs take them in a container
 * (ECS task role, EKS web identity, shared files), and the CA bundles RDS connections need.
 */
const PULUMI_ENV = [
  'PATH',
  'HOME',
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_PROFILE',
  'AWS_CONFIG_FILE',
  'AWS_SHARED_CREDENTIALS_FILE',
  'AWS_CA_BUNDLE',
  'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI',
  'AWS_CONTAINER_CREDENTIALS_FULL_URI',
  'AWS_CONTAINER_AUTHORIZATION_TOKEN',
  'AWS_WEB_IDENTITY_TOKEN_FILE',
  'AWS_ROLE_ARN',
  'AWS_ROLE_SESSION_NAME',
  'NODE_EXTRA_CA_CERTS',
  'PULUMI_HOME',
  'PULUMI_SKIP_UPDATE_CHECK',
];

export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Config {
  const raw: Record<string, unknown> = {};
  for (const key of Object.keys(Env.properties)) {
    const v = env[key];
    if (v === undefined || v === '') continue;
    raw[key] = INT_KEYS.has(key) && /^-?\d+$/.test(v) ? Number(v) : v;
  }
  const withDefaults = Value.Default(Env, raw) as Record<string, unknown>;
  const errors = [...Value.Errors(Env, withDefaults)];
  if (errors.length > 0) {
    const lines = errors.map((e) => `  ${e.path.slice(1) || '(root)'}: ${e.message}`);
    throw new ConfigError(
      `invalid configuration; set these environment variables correctly:\n${lines.join('\n')}`,
    );
  }
  const e = withDefaults as Static<typeof Env>;
  let aws: AwsTargetConfig | undefined;
  if (e.TENANTRY_TARGET === 'aws') {
    const missing = ['PULUMI_BACKEND_URL', 'AWS_REGION', 'TENANTRY_AWS_PLATFORM'].filter((k) => !raw[k]);
    if (missing.length > 0) {
      throw new ConfigError(`TENANTRY_TARGET=aws needs these environment variables: ${missing.join(', ')}`);
    }
    let platform: unknown;
    try {
      platform = JSON.parse(String(e.TENANTRY_AWS_PLATFORM));
    } catch {
      throw new ConfigError('TENANTRY_AWS_PLATFORM must be a JSON object of tenantry:* settings');
    }
    if (!platform || typeof platform !== 'object' || Array.isArray(platform)) {
      throw new ConfigError('TENANTRY_AWS_PLATFORM must be a JSON object of tenantry:* settings');
    }
    const envVars: Record<string, string> = {};
    for (const k of PULUMI_ENV) if (env[k]) envVars[k] = String(env[k]);
    if (e.PULUMI_CONFIG_PASSPHRASE !== undefined)
      envVars.PULUMI_CONFIG_PASSPHRASE = e.PULUMI_CONFIG_PASSPHRASE;
    aws = {
      backendUrl: String(e.PULUMI_BACKEND_URL),
      secretsProvider: e.TENANTRY_PULUMI_SECRETS_PROVIDER,
      region: String(e.AWS_REGION),
      endpoint: e.TENANTRY_AWS_ENDPOINT,
      platform: Object.fromEntries(
        Object.entries(platform as Record<string, unknown>).map(([k, v]) => [k, String(v)]),
      ),
      concurrency: e.TENANTRY_PULUMI_CONCURRENCY,
      timeoutMs: e.TENANTRY_PULUMI_TIMEOUT_MS,
      envVars,
    };
  }
  let secrets: SecretsConfig = { store: 'local' };
  if (e.TENANTRY_SECRETS === 'aws') {
    if (e.TENANTRY_TARGET === 'aws') {
      throw new ConfigError(
        'TENANTRY_SECRETS=aws is for the local target: on TENANTRY_TARGET=aws every tenant key and secret is in AWS already',
      );
    }
    if (!e.AWS_REGION)
      throw new ConfigError('TENANTRY_SECRETS=aws needs AWS_REGION (where the keys and secrets are)');
    secrets = {
      store: 'aws',
      region: e.AWS_REGION,
      endpoint: e.TENANTRY_AWS_ENDPOINT,
      keyDeletionWindowDays: e.TENANTRY_AWS_KEY_DELETION_WINDOW_DAYS,
    };
  }
  const driftSchedule = e.TENANTRY_DRIFT_SCHEDULE === 'off' ? null : e.TENANTRY_DRIFT_SCHEDULE.trim();
  if (driftSchedule !== null) {
    try {
      parseCrontab(`${driftSchedule} drift-sweep`);
    } catch (err) {
      throw new ConfigError(
        `TENANTRY_DRIFT_SCHEDULE must be a five-field cron expression or 'off': ${(err as Error).message}`,
      );
    }
  }
  const rotationSchedule =
    e.TENANTRY_ROTATION_SCHEDULE === 'off' ? null : e.TENANTRY_ROTATION_SCHEDULE.trim();
  if (rotationSchedule !== null) {
    try {
      parseCrontab(`${rotationSchedule} credential-rotation-tick`);
    } catch (err) {
      throw new ConfigError(
        `TENANTRY_ROTATION_SCHEDULE must be a five-field cron expression or 'off': ${(err as Error).message}`,
      );
    }
  }
  const connectionOvercommit =
    e.TENANTRY_CONNECTION_OVERCOMMIT === 'allow'
      ? Number.POSITIVE_INFINITY
      : Number(e.TENANTRY_CONNECTION_OVERCOMMIT);
  if (!(connectionOvercommit >= 1)) {
    throw new ConfigError(
      `TENANTRY_CONNECTION_OVERCOMMIT must be a ratio of at least 1 (1 = no overcommit) or 'allow', got ${e.TENANTRY_CONNECTION_OVERCOMMIT}`,
    );
  }
  const dbPoolMin = e.TENANTRY_DB_POOL_MIN ?? e.TENANTRY_DB_POOL_SIZE;
  if (dbPoolMin > e.TENANTRY_DB_POOL_SIZE) {
    throw new ConfigError(
      `TENANTRY_DB_POOL_MIN (${dbPoolMin}) must not exceed TENANTRY_DB_POOL_SIZE (${e.TENANTRY_DB_POOL_SIZE})`,
    );
  }
  const drainTimeoutMs =
    e.TENANTRY_DRAIN_TIMEOUT_MS ??
    Math.max(0, Math.floor(((e.TENANTRY_SHUTDOWN_TIMEOUT_MS - e.TENANTRY_SHUTDOWN_DELAY_MS) * 2) / 3));
  if (drainTimeoutMs + e.TENANTRY_SHUTDOWN_DELAY_MS >= e.TENANTRY_SHUTDOWN_TIMEOUT_MS) {
    throw new ConfigError(
      `TENANTRY_DRAIN_TIMEOUT_MS (${drainTimeoutMs}) plus TENANTRY_SHUTDOWN_DELAY_MS (${e.TENANTRY_SHUTDOWN_DELAY_MS}) must be below TENANTRY_SHUTDOWN_TIMEOUT_MS (${e.TENANTRY_SHUTDOWN_TIMEOUT_MS}): operations are handed back before the deadline`,
    );
  }
  let eventBridge: LifecycleConfig['eventBridge'];
  if (e.TENANTRY_EVENTBRIDGE_BUS !== undefined) {
    const bus = e.TENANTRY_EVENTBRIDGE_BUS.trim();
    if (!EVENT_BUS_NAME.test(bus) && !EVENT_BUS_ARN.test(bus))
      throw new ConfigError(
        `TENANTRY_EVENTBRIDGE_BUS must be an event bus's name (letters, digits, . _ - /, up to 256) or its ARN (arn:aws:events:<region>:<account>:event-bus/<name>), got ${JSON.stringify(bus)}`,
      );
    if (!e.AWS_REGION) throw new ConfigError('TENANTRY_EVENTBRIDGE_BUS needs AWS_REGION (where the bus is)');
    eventBridge = { bus, region: e.AWS_REGION, endpoint: e.TENANTRY_AWS_ENDPOINT };
  }
  const allowedNetworks = e.TENANTRY_WEBHOOK_ALLOWED_NETWORKS.split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  for (const cidr of allowedNetworks) {
    if (!parseCidr(cidr))
      throw new ConfigError(
        `TENANTRY_WEBHOOK_ALLOWED_NETWORKS must be comma-separated CIDRs (10.0.0.0/8, fd00::/8), got ${JSON.stringify(cidr)}`,
      );
  }
  const DAY = 86_400_000;
  const dataDir = path.resolve(cwd, e.TENANTRY_DATA_DIR);
  return {
    lifecycle: {
      exportRetentionMs: e.TENANTRY_EXPORT_RETENTION_DAYS * DAY,
      finalExportRetentionMs: e.TENANTRY_FINAL_EXPORT_RETENTION_DAYS * DAY,
      webhooks: {
        allowedNetworks,
        timeoutMs: e.TENANTRY_WEBHOOK_TIMEOUT_MS,
        retryBaseMs: e.TENANTRY_WEBHOOK_RETRY_BASE_MS,
        retryMaxMs: Math.max(e.TENANTRY_WEBHOOK_RETRY_MAX_MS, e.TENANTRY_WEBHOOK_RETRY_BASE_MS),
        disableAfterMs: e.TENANTRY_WEBHOOK_DISABLE_AFTER_MS,
      },
      ...(eventBridge ? { eventBridge } : {}),
      ...(e.TENANTRY_EXPORT_BUCKET ? { exportBucket: e.TENANTRY_EXPORT_BUCKET } : {}),
    },
    ...(aws ? { aws } : {}),
    port: e.PORT,
    host: e.HOST,
    logLevel: e.LOG_LEVEL,
    dataDir,
    databaseUrl: e.DATABASE_URL,
    dataplaneUrl: e.TENANTRY_DATAPLANE_URL,
    embeddedPgPort: e.TENANTRY_EMBEDDED_PG_PORT,
    target: e.TENANTRY_TARGET,
    adminToken: e.TENANTRY_ADMIN_TOKEN,
    role: e.TENANTRY_ROLE,
    workerConcurrency: e.TENANTRY_WORKER_CONCURRENCY,
    operationMaxAttempts: e.TENANTRY_OPERATION_MAX_ATTEMPTS,
    operationLeaseMs: e.TENANTRY_OPERATION_LEASE_MS,
    templatesDir: path.resolve(cwd, e.TENANTRY_TEMPLATES_DIR ?? defaultTemplatesDir()),
    faultStepDelayMs: e.TENANTRY_FAULT_STEP_DELAY_MS,
    faultHoldFile: e.TENANTRY_FAULT_HOLD_FILE,
    promotionRollbackWindowMs: e.TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS,
    promotionMaxLagBytes: e.TENANTRY_PROMOTION_MAX_LAG_BYTES,
    promotionFreezeWaitMs: e.TENANTRY_PROMOTION_FREEZE_WAIT_MS,
    promotionLagPollMs: e.TENANTRY_PROMOTION_LAG_POLL_MS,
    promotionFreezeDeadlineMs: e.TENANTRY_PROMOTION_FREEZE_DEADLINE_MS,
    driftSchedule,
    driftRemediationTimeoutMs: e.TENANTRY_DRIFT_REMEDIATION_TIMEOUT_MS,
    rotationSchedule,
    rotationMaxPerTick: e.TENANTRY_ROTATION_MAX_PER_TICK,
    dbPoolSize: e.TENANTRY_DB_POOL_SIZE,
    dbPoolMin,
    dbAcquireTimeoutMs: e.TENANTRY_DB_ACQUIRE_TIMEOUT_MS,
    dbReadPipelines: e.TENANTRY_DB_READ_PIPELINES,
    dbHoldCheck: e.TENANTRY_DB_HOLD_CHECK === 'on',
    shutdownTimeoutMs: e.TENANTRY_SHUTDOWN_TIMEOUT_MS,
    drainTimeoutMs,
    shutdownDelayMs: e.TENANTRY_SHUTDOWN_DELAY_MS,
    rootKey: rootKeySetting(e.TENANTRY_ROOT_KEY_FILE, e.TENANTRY_ROOT_KEY, dataDir, cwd),
    connectionOvercommit,
    secrets,
  };
}

/** A root key is 32 bytes, written in base64 (`openssl rand -base64 32`). */
export function parseRootKey(text: string): Buffer | null {
  const t = text.trim();
  if (!/^[A-Za-z0-9+/]{43}=$/.test(t)) return null;
  const key = Buffer.from(t, 'base64');
  return key.length === 32 ? key : null;
}

function rootKeySetting(
  file: string | undefined,
  value: string | undefined,
  dataDir: string,
  cwd: string,
): RootKeySetting {
  if (file !== undefined && value !== undefined) {
    throw new ConfigError(
      'set TENANTRY_ROOT_KEY_FILE or TENANTRY_ROOT_KEY, not both: they name the same key',
    );
  }
  if (file !== undefined) return { from: 'TENANTRY_ROOT_KEY_FILE', path: path.resolve(cwd, file) };
  if (value !== undefined) {
    // Never echoed: the message says what the value must be, not what it is.
    if (!parseRootKey(value)) {
      throw new ConfigError(
        'TENANTRY_ROOT_KEY must be a 256-bit key in base64 (44 characters, as `openssl rand -base64 32` prints)',
      );
    }
    return { from: 'TENANTRY_ROOT_KEY', value: () => value };
  }
  return { from: 'TENANTRY_DATA_DIR', path: path.join(dataDir, 'keys', 'root.key'), dataDir };
}

function defaultTemplatesDir(): string {
  return path.resolve(import.meta.dirname, '../../templates');
}
