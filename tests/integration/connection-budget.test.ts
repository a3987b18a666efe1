import path from 'node:path';
import { Writable } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import app, { serverOptions } from '../../control-plane/src/app.js';
import { DataPlane } from '../../control-plane/src/dataplane/dataplane.js';
import { connectionBudgetOf, type Tier } from '../../control-plane/src/domain/tiers.js';
import { Metrics } from '../../control-plane/src/lib/metrics.js';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import { ConnectionBudget } from '../../control-plane/src/services/capacity.js';
import { TenantService } from '../../control-plane/src/services/tenants.js';
import {
  adminUrl,
  auth,
  rand,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';

/**
 * The connection budget of the data-plane cluster the test files share (max_connections 400, the
 * embedded defaults for the reserved slots), measured for real: this file's control database is the
 * only one its budget counts. Each test builds on the previous one's tenants.
 */
let s: TestStack;
let dp: DataPlane;
const { catalog } = loadTemplates(path.resolve(import.meta.dirname, '../../templates'));
const POOL = catalog.tiers.pool.role.connectionLimit;
const BRIDGE = catalog.tiers.bridge.role.connectionLimit;
const SILO = catalog.tiers.silo.role.connectionLimit;
let budgetOfCluster: number;
const logLines: Record<string, unknown>[] = [];
const sink = new Writable({
  write(chunk, _enc, done) {
    for (const line of String(chunk).split('\n').filter(Boolean)) logLines.push(JSON.parse(line));
    done();
  },
});

interface Wired {
  app: FastifyInstance;
  budget: ConnectionBudget;
}
const wired: Wired[] = [];

/** The API with a connection budget on this file's data plane, under an overcommit setting. */
async function wire(overcommit: number): Promise<Wired> {
  const log = pino({ level: 'warn' }, sink);
  const { db, engine } = s.runtime.services;
  const budget = new ConnectionBudget(db, dp, catalog, { overcommit, log });
  await budget.start();
  const metrics = new Metrics(db);
  metrics.trackConnectionBudget(budget);
  const tenants = new TenantService(db, engine, {
    templateVersion: catalog.templateVersion,
    maxAttempts: s.config.operationMaxAttempts,
    capacity: budget,
  });
  const server = Fastify({ ...serverOptions, loggerInstance: pino({ level: 'silent' }) });
  await server.register(app, { services: { ...s.runtime.services, tenants, metrics } });
  await server.ready();
  const w = { app: server as unknown as FastifyInstance, budget };
  wired.push(w);
  return w;
}

let strict: Wired;

beforeAll(async () => {
  s = await startStack();
  dp = new DataPlane(adminUrl(s.dataDb));
  const [row] = await superQuery<{ max: number; su: number; reserved: number }>(
    'postgres',
    `SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int AS su,
            current_setting('reserved_connections')::int AS reserved`,
  );
  budgetOfCluster = connectionBudgetOf({
    maxConnections: row!.max,
    superuserReservedConnections: row!.su,
    reservedConnections: row!.reserved,
  });
  strict = await wire(1);
});
afterAll(async () => {
  for (const w of wired) await w.app.close();
  await dp?.close();
  await s?.close();
});

const create = (w: Wired, tier: Tier, slug = `cb-${tier}-${rand(3)}`) =>
  w.app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(s.tokens['sales-ops']),
    payload: { slug, name: `Tenant ${slug}`, tier },
  });

async function onboarded(w: Wired, tier: Tier): Promise<{ slug: string; operationId: string }> {
  const res = await create(w, tier);
  expect(res.statusCode, res.body).toBe(202);
  const body = res.json();
  const op = await waitForOperation(s, body.operation.id);
  expect(op.status).toBe('succeeded');
  return { slug: body.tenant.slug, operationId: body.operation.id };
}

async function metric(w: Wired, name: string): Promise<number | undefined> {
  const res = await w.app.inject({ method: 'GET', url: '/metrics' });
  const line = res.body.split('\n').find((l) => l.startsWith(`${name}{cluster="${dp.cluster}"}`));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

/** Nothing of a refused onboarding exists: no tenant row, no operation, no job, no audit entry. */
async function nothingCreatedFor(slug: string): Promise<void> {
  const [row] = await superQuery<{ tenants: number; ops: number; audit: number; jobs: number }>(
    s.controlDb,
    `SELECT (SELECT count(*)::int FROM tenants WHERE slug = $1) AS tenants,
            (SELECT count(*)::int FROM operations o JOIN tenants t ON t.id = o.tenant_id WHERE t.slug = $1) AS ops,
            (SELECT count(*)::int FROM audit_log WHERE tenant_slug = $1) AS audit,
            (SELECT count(*)::int FROM graphile_worker._private_jobs j
               WHERE j.key LIKE 'op\\_%' AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.id = j.key)) AS jobs`,
    [slug],
  );
  expect(row).toEqual({ tenants: 0, ops: 0, audit: 0, jobs: 0 });
}

let committed = 0;

describe('connection budget of the data-plane cluster', () => {
  it('is exported as metrics, and the committed connections move when a tenant is onboarded', async () => {
    expect(await metric(strict, 'tenantry_connection_budget')).toBe(budgetOfCluster);
    // The pool login is there from the start, whatever the tenants.
    expect(await metric(strict, 'tenantry_connection_committed')).toBe(POOL);
    await onboarded(strict, 'pool');
    expect(await metric(strict, 'tenantry_connection_committed')).toBe(POOL);
    await onboarded(strict, 'bridge');
    committed = POOL + BRIDGE;
    expect(await metric(strict, 'tenantry_connection_committed')).toBe(committed);
  });

  it('refuses an onboarding past the budget with 409 CAPACITY_EXCEEDED, naming the numbers, and creates nothing', async () => {
    while (committed + SILO <= budgetOfCluster) {
      await onboarded(strict, 'silo');
      committed += SILO;
    }
    expect(await metric(strict, 'tenantry_connection_committed')).toBe(committed);
    const slug = `cb-over-${rand(3)}`;
    const res = await create(strict, 'silo', slug);
    expect(res.statusCode).toBe(409);
    const { code, message } = res.json().error;
    expect(code).toBe('CAPACITY_EXCEEDED');
    expect(message).toContain(`needs ${SILO} connections`);
    expect(message).toContain(`connection budget of ${budgetOfCluster}`);
    expect(message).toContain(`${committed} committed`);
    expect(message).toContain(`${committed + SILO} would exceed it`);
    expect(message).toMatch(
      /max_connections \d+ − superuser_reserved_connections \d+ − reserved_connections \d+/,
    );
    await nothingCreatedFor(slug);
    // What adds no connection still goes in: a pool tenant shares the pool login.
    await onboarded(strict, 'pool');
    expect(await metric(strict, 'tenantry_connection_committed')).toBe(committed);
  });

  it('refuses a promotion that would take the cluster past its budget, and enqueues nothing', async () => {
    const room = budgetOfCluster - committed;
    expect(room).toBeLessThan(SILO);
    const t = await onboarded(strict, 'pool');
    const res = await strict.app.inject({
      method: 'POST',
      url: `/v1/tenants/${t.slug}/promotions`,
      headers: auth(s.tokens.sre),
      payload: { targetTier: 'silo' },
    });
    expect(res.statusCode).toBe(409);
    expect(res.json().error.code).toBe('CAPACITY_EXCEEDED');
    expect(res.json().error.message).toContain(
      `promoting ${t.slug} from pool to silo adds ${SILO} connections`,
    );
    const [row] = await superQuery<{ ops: number; audit: number }>(
      s.controlDb,
      `SELECT (SELECT count(*)::int FROM operations o JOIN tenants t ON t.id = o.tenant_id
                WHERE t.slug = $1 AND o.kind = 'promote') AS ops,
              (SELECT count(*)::int FROM audit_log WHERE tenant_slug = $1 AND action = 'tenant.promote') AS audit`,
      [t.slug],
    );
    expect(row).toEqual({ ops: 0, audit: 0 });
  });

  it('lets two onboardings at once take the last room only once: they queue on the budget lock', async () => {
    // Make room for exactly one silo: offboard one.
    const [victim] = await superQuery<{ slug: string }>(
      s.controlDb,
      `SELECT slug FROM tenants WHERE tier = 'silo' AND status = 'active' LIMIT 1`,
    );
    const off = await strict.app.inject({
      method: 'DELETE',
      url: `/v1/tenants/${victim!.slug}`,
      headers: { ...auth(s.tokens.sre), confirm: victim!.slug },
    });
    expect(off.statusCode).toBe(202);
    expect((await waitForOperation(s, off.json().operation.id)).status).toBe('succeeded');
    committed -= SILO;
    expect(await metric(strict, 'tenantry_connection_committed')).toBe(committed);
    expect(committed + SILO).toBeLessThanOrEqual(budgetOfCluster);
    expect(committed + 2 * SILO).toBeGreaterThan(budgetOfCluster);

    // Hold the cluster's budget row so both requests are inside their transactions at once.
    const holder = new pg.Client({ connectionString: adminUrl(s.controlDb) });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM connection_budgets WHERE cluster = $1 FOR UPDATE', [dp.cluster]);
      const settled: number[] = [];
      const requests = [create(strict, 'silo'), create(strict, 'silo')].map((p) =>
        p.then((r) => {
          settled.push(r.statusCode);
          return r;
        }),
      );
      // Both wait on the lock (their tenant rows written, not committed), unless nothing locks: their
      // admission (migration 0020) takes the budget row first.
      let waiting = 0;
      while (waiting < 2 && settled.length < 2) {
        const [w] = await superQuery<{ n: number }>(
          'postgres',
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE '%tenantry_admit_connections%'`,
          [s.controlDb],
        );
        waiting = w!.n;
      }
      expect({ waiting, settled }).toEqual({ waiting: 2, settled: [] });
      await holder.query('COMMIT');
      const codes = (await Promise.all(requests)).map((r) => r.statusCode).sort();
      expect(codes).toEqual([202, 409]);
    } finally {
      await holder.end();
    }
    committed += SILO;
    expect(await metric(strict, 'tenantry_connection_committed')).toBe(committed);
  });

  it('accepts an onboarding past the budget when TENANTRY_CONNECTION_OVERCOMMIT allows it, with a warning', async () => {
    const loose = await wire(Number.POSITIVE_INFINITY);
    logLines.length = 0;
    const res = await create(loose, 'silo');
    expect(res.statusCode, res.body).toBe(202);
    const { tenant, operation } = res.json();
    const warning = operation.params.connectionOvercommit;
    expect(warning).toMatchObject({
      cluster: dp.cluster,
      budget: budgetOfCluster,
      committed: committed + SILO,
      ceiling: null,
    });
    expect(warning.message).toContain('TENANTRY_CONNECTION_OVERCOMMIT');
    // Visible on the operation and in the audit trail, and logged.
    const got = await loose.app.inject({
      method: 'GET',
      url: `/v1/operations/${operation.id}`,
      headers: auth(s.tokens.sre),
    });
    expect(got.json().params.connectionOvercommit).toEqual(warning);
    const [audit] = await superQuery<{ details: Record<string, unknown> }>(
      s.controlDb,
      `SELECT details FROM audit_log WHERE tenant_id = $1 AND action = 'tenant.create'`,
      [tenant.id],
    );
    expect(audit!.details.connectionOvercommit).toEqual(warning);
    expect(logLines).toContainEqual(
      expect.objectContaining({ msg: 'connection budget overcommitted', tenantSlug: tenant.slug }),
    );
    expect((await waitForOperation(s, operation.id)).status).toBe('succeeded');
    committed += SILO;
    expect(await metric(loose, 'tenantry_connection_committed')).toBe(committed);
    expect(await metric(loose, 'tenantry_connection_budget')).toBe(budgetOfCluster);
  });

  it('an overcommit ratio still refuses past its ceiling', async () => {
    const ratio = committed / budgetOfCluster; // the ceiling is what is committed now
    const capped = await wire(Math.max(1, Math.floor(ratio * 1000) / 1000));
    const slug = `cb-cap-${rand(3)}`;
    const res = await create(capped, 'bridge', slug);
    expect(res.statusCode).toBe(409);
    expect(res.json().error.code).toBe('CAPACITY_EXCEEDED');
    expect(res.json().error.message).toMatch(/overcommit ceiling of \d+ \(TENANTRY_CONNECTION_OVERCOMMIT=/);
    await nothingCreatedFor(slug);
  });
});
