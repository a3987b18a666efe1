import path from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

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
  TENANTRY_ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 24 })),
  TENANTRY_ROLE: Type.Union([Type.Literal('all'), Type.Literal('api'), Type.Literal('worker')], {
    default: 'all',
  }),
  TENANTRY_WORKER_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 64, default: 4 }),
  TENANTRY_OPERATION_MAX_ATTEMPTS: Type.Integer({ minimum: 1, maximum: 100, default: 8 }),
  TENANTRY_OPERATION_LEASE_MS: Type.Integer({ minimum: 500, maximum: 3_600_000, default: 30_000 }),
  TENANTRY_TEMPLATES_DIR: Type.Optional(Type.String({ minLength: 1 })),
  TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: Type.Integer({ minimum: 0, default: 86_400_000 }),
  TENANTRY_PROMOTION_MAX_LAG_BYTES: Type.Integer({ minimum: 1_048_576, default: 1_073_741_824 }),
  /** Fault injection for crash tests: sleep this long inside every provisioning step. Never set in production. */
  TENANTRY_FAULT_STEP_DELAY_MS: Type.Integer({ minimum: 0, maximum: 600_000, default: 0 }),
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
  promotionRollbackWindowMs: number;
  promotionMaxLagBytes: number;
}

export class ConfigError extends Error {
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
]);

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
  return {
    port: e.PORT,
    host: e.HOST,
    logLevel: e.LOG_LEVEL,
    dataDir: path.resolve(cwd, e.TENANTRY_DATA_DIR),
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
    promotionRollbackWindowMs: e.TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS,
    promotionMaxLagBytes: e.TENANTRY_PROMOTION_MAX_LAG_BYTES,
  };
}

function defaultTemplatesDir(): string {
  return path.resolve(import.meta.dirname, '../../templates');
}
