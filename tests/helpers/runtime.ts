import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import pino from 'pino';
import { inject } from 'vitest';
import { type Config, loadConfig } from '../../control-plane/src/config.js';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { createToken } from '../../control-plane/src/db/tokens.js';
import type { Role } from '../../control-plane/src/domain/auth.js';
import type { Queryable } from '../../control-plane/src/domain/queryable.js';
import type { RoleLimits } from '../../control-plane/src/domain/tiers.js';
import { loggerOptions } from '../../control-plane/src/logger.js';
import { roleProvider } from '../../control-plane/src/providers/postgres/role.js';
import { type Runtime, startRuntime } from '../../control-plane/src/runtime.js';
import { buildTestApp } from './app.js';

export const rand = (n = 6) => randomBytes(n).toString('hex');

export function adminUrl(database = 'postgres'): string {
  const u = new URL(inject('pgAdminUrl'));
  u.pathname = `/${database}`;
  return u.toString();
}

/** One client of `url` for `fn`, ended after it. */
export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** Runs SQL as the cluster superuser on a database (outside the code under test). */
/**
 * A tenant's NOLOGIN owner role as its stack's provider makes it on a shared cluster (no connections,
 * granted to the session user so it may act as it), for tests that stand in for a stack's `up`.
 */
export async function createOwnerRole(db: Queryable, name: string, limits: RoleLimits): Promise<void> {
  await roleProvider.create(db, {
    name,
    ...limits,
    connectionLimit: 0,
    login: false,
    grantToSessionUser: true,
  });
}

export async function superQuery<T extends pg.QueryResultRow = Record<string, unknown>>(
  database: string,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const c = new pg.Client({ connectionString: adminUrl(database) });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

/**
 * Drops databases of the shared test cluster, those named and every one the role `ownedBy` owns,
 * then the given roles. Leftover sessions (tenant clients a test forgot, a promotion's walsender)
 * are ended first, and logical replication slots on those databases dropped, since DROP DATABASE …
 * WITH (FORCE) refuses a database that still has one. A name that does not exist is no error.
 */
async function dropOnCluster(
  databases: { names: string[]; ownedBy?: string },
  roles: string[],
): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl('postgres') });
  await c.connect();
  try {
    const { rows } = await c.query<{ datname: string; datistemplate: boolean }>(
      `SELECT d.datname, d.datistemplate FROM pg_database d
        WHERE d.datname = ANY($1::text[])
           OR d.datdba = (SELECT oid FROM pg_roles WHERE rolname = $2)`,
      [databases.names, databases.ownedBy ?? null],
    );
    const names = rows.map((r) => r.datname);
    await c.query(
      `SELECT pg_terminate_backend(active_pid, 10000) FROM pg_replication_slots
        WHERE active_pid IS NOT NULL AND database = ANY($1::text[])`,
      [names],
    );
    await c.query(
      'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = ANY($1::text[])',
      [names],
    );
    for (const r of rows) {
      const d = pg.escapeIdentifier(r.datname);
      if (r.datistemplate) await c.query(`ALTER DATABASE ${d} IS_TEMPLATE false`);
      await c.query(`DROP DATABASE IF EXISTS ${d} WITH (FORCE)`);
    }
    for (const role of roles) {
      await c.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}`);
    }
  } finally {
    await c.end();
  }
}

/** Drops databases a test file created on the shared test cluster (then roles of its own, if given). */
export async function dropDatabases(names: string[], roles: string[] = []): Promise<void> {
  await dropOnCluster({ names }, roles);
}

/**
 * Drops what a stack created on the shared test cluster: its control and data databases, the silo
 * template, every database its owner role owns (the silos), then that owner role and the pool login.
 * Roles are cluster-wide; these two carry the stack's random data-database name, so no other stack
 * shares them. Tenant login roles (tenantObjectName) are left: a fixed slug may be in use by another
 * file's stack on the same cluster.
 */
export async function dropStackDatabases(controlDb: string, dataDb: string): Promise<void> {
  const { ownerRole, poolRole, siloTemplate } = dataPlaneNames(dataDb);
  await dropOnCluster({ names: [controlDb, dataDb, siloTemplate], ownedBy: ownerRole }, [
    ownerRole,
    poolRole,
  ]);
}

export interface TestStack {
  app: FastifyInstance;
  runtime: Runtime;
  config: Config;
  controlDb: string;
  dataDb: string;
  tokens: Record<Role, string>;
  /** Stops the app and the runtime, then drops the databases (and the stack's own roles) it created. */
  close(): Promise<void>;
}

/**
 * A fresh control plane per test file: its own control database cloned from the migrated
 * template, its own data-plane database, a worker running in-process, and one token per role.
 */
export async function startStack(
  env: Record<string, string> | ((dbs: { controlDb: string; dataDb: string }) => Record<string, string>) = {},
  logStream?: NodeJS.WritableStream,
): Promise<TestStack> {
  const id = rand();
  const controlDb = `cp_${id}`;
  const dataDb = `dp_${id}`;
  const overrides = typeof env === 'function' ? env({ controlDb, dataDb }) : env;
  await superQuery('postgres', `CREATE DATABASE ${controlDb} TEMPLATE ${inject('templateDb')}`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-rt-'));
  const config = loadConfig({
    DATABASE_URL: adminUrl(controlDb),
    TENANTRY_DATAPLANE_URL: adminUrl(dataDb),
    TENANTRY_DATA_DIR: dataDir,
    TENANTRY_OPERATION_LEASE_MS: '2000',
    // Test files share one cluster: a scheduled sweep would judge other files' tenants as orphans.
    TENANTRY_DRIFT_SCHEDULE: 'off',
    // Test files share one cluster and onboard more bridge and silo tenants than its connection budget
    // holds; tests/integration/connection-budget.test.ts checks the budget under its own settings.
    TENANTRY_CONNECTION_OVERCOMMIT: 'allow',
    // The suite runs every path: a caller asking the pool it holds for a second connection fails at once.
    TENANTRY_DB_HOLD_CHECK: 'on',
    LOG_LEVEL: 'silent',
    ...overrides,
  });
  await superQuery('postgres', `CREATE DATABASE ${dataDb}`);
  const log = logStream ? pino(loggerOptions(config.logLevel), logStream) : pino({ level: config.logLevel });
  const runtime = await startRuntime(config, log);
  const server = await buildTestApp(log, runtime.services);
  const tokens = {} as Record<Role, string>;
  for (const role of ['sales-ops', 'sre', 'dataplane', 'admin'] as const) {
    tokens[role] = (
      await createToken(runtime.services.db, { name: `test-${role}`, role, createdBy: null })
    ).token;
  }
  return {
    app: server,
    runtime,
    config,
    controlDb,
    dataDb,
    tokens,
    async close() {
      await server.close();
      await runtime.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
      await dropStackDatabases(controlDb, dataDb);
    },
  };
}

export const auth = (token: string) => ({ authorization: `Bearer ${token}` });

/** Polls an operation until it ends (bounded). */
export async function waitForOperation(
  stack: TestStack,
  id: string,
  timeoutMs = 30_000,
): Promise<{ status: string; steps: { name: string; status: string; error?: string }[]; error?: string }> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const res = await stack.app.inject({
      method: 'GET',
      url: `/v1/operations/${id}`,
      headers: auth(stack.tokens.sre),
    });
    const op = res.json();
    if (['succeeded', 'failed', 'cancelled'].includes(op.status)) return op;
    if (Date.now() > until) throw new Error(`operation ${id} still ${op.status} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Sends a request that starts an operation (as the sre token unless `token` is given), expects its
 * 202 and waits for the operation to end; returns it.
 */
export async function runOperation(
  stack: TestStack,
  req: { method: 'POST' | 'DELETE' | 'PUT' | 'PATCH'; url: string; payload?: object; token?: string },
  timeoutMs = 60_000,
): Promise<Awaited<ReturnType<typeof waitForOperation>>> {
  const res = await stack.app.inject({
    method: req.method,
    url: req.url,
    headers: auth(req.token ?? stack.tokens.sre),
    ...(req.payload ? { payload: req.payload } : {}),
  });
  if (res.statusCode !== 202) throw new Error(`${req.method} ${req.url}: ${res.statusCode} ${res.body}`);
  return waitForOperation(stack, res.json().operation.id, timeoutMs);
}

/** Onboards a tenant through the API and waits for it to be active. */
export async function onboard(
  stack: TestStack,
  tier: 'pool' | 'bridge' | 'silo',
  slug = `t-${tier}-${rand(4)}`,
): Promise<{ slug: string; id: string; operationId: string }> {
  const res = await stack.app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(stack.tokens['sales-ops']),
    payload: { slug, name: `Tenant ${slug}`, tier },
  });
  if (res.statusCode !== 202) throw new Error(`onboard ${slug}: ${res.statusCode} ${res.body}`);
  const body = res.json();
  const op = await waitForOperation(stack, body.operation.id);
  if (op.status !== 'succeeded') throw new Error(`onboard ${slug} failed: ${JSON.stringify(op)}`);
  return { slug, id: body.tenant.id, operationId: body.operation.id };
}

export async function connectionOf(stack: TestStack, slug: string) {
  const res = await stack.app.inject({
    method: 'GET',
    url: `/v1/tenants/${slug}/connection`,
    headers: auth(stack.tokens.dataplane),
  });
  if (res.statusCode !== 200) throw new Error(`connection ${slug}: ${res.statusCode} ${res.body}`);
  return res.json() as {
    tenantId: string;
    tier: string;
    host: string;
    port: number;
    database: string;
    schema?: string;
    user: string;
    password: string;
    tenantSetting?: string;
  };
}

/** A pg client logged in with a tenant's own descriptor: what the data plane would do. */
export async function tenantClient(d: {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
}) {
  const c = new pg.Client({
    host: d.host,
    port: d.port,
    database: d.database,
    user: d.user,
    password: d.password,
  });
  await c.connect();
  return c;
}
