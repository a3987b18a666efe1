import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Db } from '../../control-plane/src/db/db.js';
import { buildMigrations, MIGRATIONS_DIR, migrate } from '../../control-plane/src/db/migrate.js';
import { call, createFleet, type Fleet, runToExit, snapshot, untilOperationsEnd } from '../helpers/fleet.js';
import { adminUrl, startStack, superQuery, type TestStack } from '../helpers/runtime.js';
import { isRunning, kill9 } from '../helpers/server.js';

/**
 * Liveness (/healthz) and readiness (/readyz), and the control schema's version across builds: a
 * process refuses to start against a schema newer than it knows, and a running one keeps working
 * while a newer build migrates (migrations are expand-first; tests/unit/migrations.test.ts checks
 * the rule on every migration file).
 */
describe('GET /readyz (in process)', () => {
  let s: TestStack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(async () => {
    await s?.close();
  });
  const readyz = () => s.app.inject({ method: 'GET', url: '/readyz' });
  const latest = buildMigrations().at(-1) as string;

  it('answers 200 with its checks when the database answers, the schema is current and the worker runs', async () => {
    const res = await readyz();
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({
      status: 'ready',
      checks: { database: 'ok', schema: 'current', worker: 'running', process: 'serving' },
    });
  });

  it('answers 503 NOT_READY while a migration of this build is missing, and 200 again once it is back', async () => {
    const [row] = await superQuery<{ run_on: Date }>(
      s.controlDb,
      'SELECT run_on FROM tenantry_migrations WHERE name = $1',
      [latest],
    );
    await superQuery(s.controlDb, 'DELETE FROM tenantry_migrations WHERE name = $1', [latest]);
    try {
      const res = await readyz();
      expect(res.statusCode).toBe(503);
      expect(res.json().error).toMatchObject({
        code: 'NOT_READY',
        message: `not ready: the control schema lacks this build's migrations: ${latest}`,
      });
      // Liveness is not readiness: the process is alive and its pool answers.
      expect((await s.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    } finally {
      await superQuery(s.controlDb, 'INSERT INTO tenantry_migrations (name, run_on) VALUES ($1, $2)', [
        latest,
        row?.run_on,
      ]);
    }
    expect((await readyz()).statusCode).toBe(200);
  });

  it('stays ready, saying so, when a newer build has migrated the schema further (expand-first)', async () => {
    await superQuery(
      s.controlDb,
      `INSERT INTO tenantry_migrations (name, run_on) VALUES ('9999_later', now())`,
    );
    try {
      const res = await readyz();
      expect(res.statusCode).toBe(200);
      expect(res.json().checks.schema).toBe('newer');
    } finally {
      await superQuery(s.controlDb, `DELETE FROM tenantry_migrations WHERE name = '9999_later'`);
    }
  });

  it('answers 503 while the control database refuses connections (and /healthz too), 200 once it is back', async () => {
    await superQuery('postgres', `ALTER DATABASE ${s.controlDb} WITH ALLOW_CONNECTIONS false`);
    await superQuery(
      'postgres',
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [s.controlDb],
    );
    try {
      const res = await readyz();
      expect(res.statusCode).toBe(503);
      expect(res.json().error.message).toMatch(/the control database is unreachable/);
      expect((await s.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(503);
    } finally {
      await superQuery('postgres', `ALTER DATABASE ${s.controlDb} WITH ALLOW_CONNECTIONS true`);
    }
    for (let i = 0; (await readyz()).statusCode !== 200; i++) {
      if (i > 200) throw new Error('never ready again');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  it('answers 503 once the worker has stopped, and while the process drains', async () => {
    await s.runtime.drainWorker(5000);
    const res = await readyz();
    expect(res.statusCode).toBe(503);
    expect(res.json().error.message).toBe('not ready: the worker is not running');
    s.runtime.services.readiness.startDraining();
    expect((await readyz()).json().error.message).toBe(
      'not ready: the worker is not running; the process is stopping',
    );
  });
});

describe('an API-only process', () => {
  it('is ready without a worker of its own', async () => {
    const s = await startStack({ TENANTRY_ROLE: 'api' });
    try {
      const res = await s.app.inject({ method: 'GET', url: '/readyz' });
      expect(res.statusCode).toBe(200);
      expect(res.json().checks).toMatchObject({ worker: 'not-in-this-process' });
    } finally {
      await s.close();
    }
  });
});

describe('the control schema across builds (real processes)', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await createFleet('ready');
  });
  afterAll(async () => {
    await fleet?.drop();
  });

  it('a worker-only process serves its probes: /healthz, /readyz and /metrics, and no API', async () => {
    const w = await fleet.start({ TENANTRY_ROLE: 'worker' });
    try {
      expect((await fetch(`${w.base}/readyz`)).status).toBe(200);
      expect(((await (await fetch(`${w.base}/readyz`)).json()) as { checks: unknown }).checks).toMatchObject({
        worker: 'running',
      });
      expect((await fetch(`${w.base}/metrics`)).status).toBe(200);
      expect((await call(w.base, fleet.adminToken, '/v1/tenants')).status).toBe(404);
    } finally {
      await kill9(w.proc);
    }
  });

  it('a running process keeps working while a newer build migrates; a new start of the older build is refused and writes nothing', async () => {
    const older = await fleet.start();
    try {
      // The newer build: this build's migrations and one more, expand-only as the rule says: a new
      // nullable column on tables the older build reads and writes (with `SELECT *`-like reads such
      // as to_jsonb(row) among them), a new table, a new index. Named newer_build_* so that no real
      // migration of this build can already hold the name.
      const newer = fs.mkdtempSync(path.join(fleet.dir, 'migrations-'));
      for (const f of fs.readdirSync(MIGRATIONS_DIR))
        fs.copyFileSync(path.join(MIGRATIONS_DIR, f), path.join(newer, f));
      fs.writeFileSync(
        path.join(newer, '9000_newer_build.sql'),
        `-- Up Migration
ALTER TABLE tenants ADD COLUMN newer_build_tags jsonb;
ALTER TABLE operations ADD COLUMN newer_build_priority integer NOT NULL DEFAULT 0;
ALTER TABLE local_keys ADD COLUMN newer_build_rotated_at timestamptz;
ALTER TABLE audit_log ADD COLUMN newer_build_source text;
CREATE TABLE newer_build_notes (tenant_id uuid NOT NULL REFERENCES tenants (id), note text NOT NULL);
CREATE INDEX newer_build_tenants_by_tags ON tenants USING gin (newer_build_tags);
`,
      );
      const db = new Db(adminUrl(fleet.controlDb), 2);
      try {
        expect(await migrate(db.pool, pino({ level: 'silent' }), { dir: newer })).toEqual([
          '9000_newer_build',
        ]);
      } finally {
        await db.close();
      }

      // The older process, already running, keeps serving: onboardings of each tier, reads, descriptors.
      const ready = (await (await fetch(`${older.base}/readyz`)).json()) as { checks: { schema: string } };
      expect(ready.checks.schema).toBe('newer');
      const ops: string[] = [];
      for (const tier of ['pool', 'bridge', 'silo']) {
        const res = await call(older.base, fleet.adminToken, '/v1/tenants', {
          method: 'POST',
          body: JSON.stringify({ slug: `${fleet.prefix}-${tier}`, name: tier, tier }),
        });
        expect(res.status).toBe(202);
        ops.push(((await res.json()) as { operation: { id: string } }).operation.id);
      }
      expect((await untilOperationsEnd(fleet.controlDb, ops)).map((o) => o.status)).toEqual([
        'succeeded',
        'succeeded',
        'succeeded',
      ]);
      for (const tier of ['pool', 'bridge', 'silo']) {
        const d = await call(older.base, fleet.adminToken, `/v1/tenants/${fleet.prefix}-${tier}/connection`);
        expect(d.status).toBe(200);
      }
      expect((await call(older.base, fleet.adminToken, '/v1/tenants?limit=10')).status).toBe(200);
      expect((await call(older.base, fleet.adminToken, '/v1/audit?limit=10')).status).toBe(200);

      // A new process of the older build refuses, with a message, before it writes anything.
      const before = await snapshot(fleet);
      const refused = await runToExit(['control-plane/src/server.ts'], { ...fleet.env(), PORT: '0' });
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(
        /^tenantry: the control database's schema is newer than this build: it has migrations this build does not know \(9000_newer_build; this build's latest is \d{4}_\w+\)/,
      );
      expect(refused.stderr).toMatch(/Start the newer version instead/);
      expect(refused.stderr).not.toMatch(/\n\s+at /);
      expect(await snapshot(fleet)).toEqual(before);
    } finally {
      if (isRunning(older.proc)) await kill9(older.proc);
    }
  });
});
