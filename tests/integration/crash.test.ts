import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { adminUrl, rand, superQuery } from '../helpers/runtime.js';
import { freePort, isRunning, kill9, startServer } from '../helpers/server.js';

/**
 * Kill -9 the control plane in the middle of an onboarding, at every step, then restart it:
 * the operation must resume to `succeeded` (or end `failed` and rolled back), and the tenant
 * must never read `active` while half-provisioned.
 */
const ADMIN = `tnt_${rand(24)}`;
let controlDb: string;
let dataDb: string;
let dataDir: string;
let child: ChildProcess | undefined;
let port: number;

const env = () => ({
  DATABASE_URL: adminUrl(controlDb),
  TENANTRY_DATAPLANE_URL: adminUrl(dataDb),
  TENANTRY_DATA_DIR: dataDir,
  TENANTRY_ADMIN_TOKEN: ADMIN,
  TENANTRY_OPERATION_LEASE_MS: '1500',
});

beforeAll(async () => {
  const id = rand();
  controlDb = `cp_crash_${id}`;
  dataDb = `dp_crash_${id}`;
  await superQuery('postgres', `CREATE DATABASE ${controlDb} TEMPLATE ${inject('templateDb')}`);
  await superQuery('postgres', `CREATE DATABASE ${dataDb}`);
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-crash-'));
  port = await freePort();
});

afterAll(async () => {
  if (isRunning(child)) await kill9(child);
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const SILO_STEPS = ['key', 'credentials', 'role', 'database', 'schema', 'grants'];

describe('kill -9 during onboarding', () => {
  it.each(SILO_STEPS.map((s, i) => [s, i] as const))(
    'killed while step %s runs, the restarted control plane finishes the onboarding',
    async (stepName) => {
      child = await startServer(port, { ...env(), TENANTRY_FAULT_STEP_DELAY_MS: '300' });
      const slug = `crash-${rand(3)}`;
      const res = await fetch(`http://127.0.0.1:${port}/v1/tenants`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ slug, name: 'Crash', tier: 'silo' }),
      });
      expect(res.status).toBe(202);
      const { operation, tenant } = (await res.json()) as {
        operation: { id: string };
        tenant: { id: string };
      };

      // Wait until the chosen step is running, then pull the plug.
      const until = Date.now() + 20_000;
      for (;;) {
        const rows = await superQuery<{ steps: { name: string; status: string }[] }>(
          controlDb,
          'SELECT steps FROM operations WHERE id = $1',
          [operation.id],
        );
        if (rows[0]?.steps.find((x) => x.name === stepName)?.status === 'running') break;
        if (Date.now() > until) throw new Error(`step ${stepName} never ran`);
        await new Promise((r) => setTimeout(r, 10));
      }
      await kill9(child);

      const mid = await superQuery<{ status: string; op: string }>(
        controlDb,
        'SELECT t.status, o.status AS op FROM tenants t JOIN operations o ON o.tenant_id = t.id WHERE o.id = $1',
        [operation.id],
      );
      expect(mid[0]).toEqual({ status: 'provisioning', op: 'running' });

      child = await startServer(port, env());
      const done = Date.now() + 30_000;
      let final: { status: string; op: string; error: string | null } | undefined;
      for (;;) {
        const rows = await superQuery<{ status: string; op: string; error: string | null }>(
          controlDb,
          'SELECT t.status, o.status AS op, o.error FROM tenants t JOIN operations o ON o.tenant_id = t.id WHERE o.id = $1',
          [operation.id],
        );
        final = rows[0];
        // Never active while the operation is unfinished.
        if (final?.op !== 'succeeded') expect(final?.status).not.toBe('active');
        if (final && ['succeeded', 'failed'].includes(final.op)) break;
        if (Date.now() > done) throw new Error(`operation stuck: ${JSON.stringify(final)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(final).toMatchObject({ status: 'active', op: 'succeeded' });
      const name = `tenant_${slug.replaceAll('-', '_')}`;
      expect(
        await superQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [name]),
      ).toHaveLength(1);
      expect(
        await superQuery('postgres', 'SELECT 1 FROM pg_roles WHERE rolname = $1 AND rolcanlogin', [name]),
      ).toHaveLength(1);
      expect(await superQuery(name, 'SELECT 1 FROM app.users LIMIT 0')).toHaveLength(0);
      // The connection descriptor works end to end after the crash.
      const conn = await fetch(`http://127.0.0.1:${port}/v1/tenants/${slug}/connection`, {
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      const d = (await conn.json()) as {
        user: string;
        password: string;
        database: string;
        host: string;
        port: number;
      };
      const pg = await import('pg');
      const c = new pg.default.Client({ ...d });
      await c.connect();
      await c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'a@b')`, [tenant.id]);
      await c.end();
      await kill9(child);
    },
  );
});
