import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import pino from 'pino';
import { Registry } from 'prom-client';
import { type Config, loadConfig } from '../../control-plane/src/config.js';
import { createToken } from '../../control-plane/src/db/tokens.js';
import type { Role } from '../../control-plane/src/domain/auth.js';
import { registerLocalDrift } from '../../control-plane/src/drift/index.js';
import type { DriftService } from '../../control-plane/src/drift/service.js';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import { LocalKeyStore, loadRootKey } from '../../control-plane/src/local/keystore.js';
import { type Runtime, startRuntime } from '../../control-plane/src/runtime.js';
import { buildTestApp } from '../helpers/app.js';
import { auth, connectionOf, tenantClient } from '../helpers/runtime.js';

export { auth, connectionOf, onboard, tenantClient, waitForOperation } from '../helpers/runtime.js';

/**
 * Drift tests get a Postgres cluster of their own (the embedded default, as `npm start` runs it):
 * roles and databases are cluster-wide, so other test files' tenants would be this control plane's
 * orphans on the shared test cluster.
 */
export interface DriftStack {
  app: FastifyInstance;
  runtime: Runtime;
  config: Config;
  drift: DriftService;
  tokens: Record<Role, string>;
  dataDb: string;
  controlDb: string;
  /** The embedded cluster's superuser URL for a database. */
  adminUrl(db: string): string;
  sql<T extends pg.QueryResultRow = Record<string, unknown>>(
    db: string,
    text: string,
    params?: unknown[],
  ): Promise<T[]>;
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

export async function startDriftStack(env: Record<string, string> = {}): Promise<DriftStack> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-drift-'));
  fs.chmodSync(dataDir, 0o755);
  const port = await freePort();
  const config = loadConfig({
    TENANTRY_DATA_DIR: dataDir,
    TENANTRY_EMBEDDED_PG_PORT: String(port),
    TENANTRY_OPERATION_LEASE_MS: '2000',
    TENANTRY_DRIFT_SCHEDULE: 'off',
    LOG_LEVEL: 'silent',
    ...env,
  });
  const log = pino({ level: 'silent' });
  const runtime = await startRuntime(config, log);
  const pw = fs.readFileSync(path.join(dataDir, 'pg-superuser.secret'), 'utf8').trim();
  const url = (db: string) => `postgres://postgres:${encodeURIComponent(pw)}@127.0.0.1:${port}/${db}`;
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
    drift: runtime.services.drift,
    tokens,
    dataDb: 'tenantry_data',
    controlDb: 'tenantry',
    adminUrl: url,
    async sql(db, text, params = []) {
      const c = new pg.Client({ connectionString: url(db) });
      await c.connect();
      try {
        return (await c.query(text, params)).rows;
      } finally {
        await c.end();
      }
    },
    async close() {
      await server.close();
      await runtime.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A second drift wiring over the stack's control and data plane, with options of its own (a short
 * remediation wait, say). Its sweeps take the same lock as the stack's; the stack's worker runs the
 * reconcile operations they queue.
 */
export function extraDrift(
  s: DriftStack,
  opts: { remediationTimeoutMs?: number; credentialChecksPerSweep?: number } = {},
): { drift: DriftService; close(): Promise<void> } {
  const db = s.runtime.services.db;
  const handle = registerLocalDrift({
    db,
    log: pino({ level: 'silent' }),
    registry: new Registry(),
    schedule: null,
    dataplaneUrl: s.adminUrl(s.dataDb),
    keys: new LocalKeyStore(db, loadRootKey(s.config.dataDir)),
    templates: loadTemplates('templates'),
    ...opts,
  });
  return { drift: handle.service, close: () => handle.close() };
}

/** Submits an onboarding without waiting for it (the in-flight drift test). */
export async function startOnboarding(
  s: DriftStack,
  tier: 'pool' | 'bridge' | 'silo',
  slug: string,
): Promise<{ slug: string; id: string; operationId: string }> {
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(s.tokens['sales-ops']),
    payload: { slug, name: slug, tier },
  });
  if (res.statusCode !== 202) throw new Error(`onboard ${slug}: ${res.statusCode} ${res.body}`);
  const body = res.json() as { tenant: { id: string }; operation: { id: string } };
  return { slug, id: body.tenant.id, operationId: body.operation.id };
}

/** Logs in with the tenant's own descriptor and counts its users: proves the credentials and grants work. */
export async function tenantCanQuery(s: DriftStack, slug: string): Promise<boolean> {
  const c = await tenantClient(await connectionOf(s, slug));
  try {
    await c.query('SELECT count(*) FROM users');
    return true;
  } finally {
    await c.end().catch(() => undefined);
  }
}
