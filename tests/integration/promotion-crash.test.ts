import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { PROMOTE_STEPS } from '../../control-plane/src/promotion/local.js';
import { adminUrl, rand, superQuery } from '../helpers/runtime.js';
import { freePort, isRunning, kill9, startServer } from '../helpers/server.js';

/**
 * Kill -9 the control plane while each promotion step runs, restart it, and check that the
 * promotion finishes with every row exactly once (or fails cleanly with the tenant on its source).
 */
const ADMIN = `tnt_${rand(24)}`;
let controlDb: string;
let dataDb: string;
let dataDir: string;
let port: number;
let child: ChildProcess | undefined;

const env = () => ({
  DATABASE_URL: adminUrl(controlDb),
  TENANTRY_DATAPLANE_URL: adminUrl(dataDb),
  TENANTRY_DATA_DIR: dataDir,
  TENANTRY_ADMIN_TOKEN: ADMIN,
  TENANTRY_OPERATION_LEASE_MS: '1500',
});
const api = (p: string, init: RequestInit = {}) =>
  fetch(`http://127.0.0.1:${port}${p}`, {
    ...init,
    headers: {
      authorization: `Bearer ${ADMIN}`,
      'content-type': 'application/json',
      ...(init.headers ?? {}),
    },
  });

async function waitOp(
  id: string,
  pred: (o: { status: string; steps: { name: string; status: string }[] }) => boolean,
) {
  const until = Date.now() + 40_000;
  for (;;) {
    const rows = await superQuery<{ status: string; steps: { name: string; status: string }[] }>(
      controlDb,
      'SELECT status, steps FROM operations WHERE id = $1',
      [id],
    );
    if (rows[0] && pred(rows[0])) return rows[0];
    if (Date.now() > until) throw new Error(`operation ${id}: ${JSON.stringify(rows[0])}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  const id = rand();
  controlDb = `cp_pcrash_${id}`;
  dataDb = `dp_pcrash_${id}`;
  await superQuery('postgres', `CREATE DATABASE ${controlDb} TEMPLATE ${inject('templateDb')}`);
  await superQuery('postgres', `CREATE DATABASE ${dataDb}`);
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-pcrash-'));
  port = await freePort();
});
afterAll(async () => {
  if (isRunning(child)) await kill9(child);
  fs.rmSync(dataDir, { recursive: true, force: true });
});

describe('kill -9 during a promotion', () => {
  it.each(PROMOTE_STEPS)(
    'killed during %s, the restarted control plane finishes the move without loss or duplicates',
    async (step) => {
      child = await startServer(port, { ...env(), TENANTRY_FAULT_STEP_DELAY_MS: '250' });
      const slug = `pc-${rand(3)}`;
      const created = await (
        await api('/v1/tenants', { method: 'POST', body: JSON.stringify({ slug, name: 'x', tier: 'pool' }) })
      ).json();
      const tenantId: string = created.tenant.id;
      await waitOp(created.operation.id, (o) => o.status === 'succeeded');
      await superQuery(
        dataDb,
        `INSERT INTO pool.users (tenant_id, email) SELECT $1, 'u' || g FROM generate_series(1, 300) g`,
        [tenantId],
      );
      const res = await api(`/v1/tenants/${slug}/promotions`, {
        method: 'POST',
        body: JSON.stringify({ targetTier: 'silo' }),
      });
      expect(res.status).toBe(202);
      const opId: string = (await res.json()).operation.id;
      // A write acknowledged after the copy must still arrive, even across the crash.
      await waitOp(opId, (o) => o.steps.find((x) => x.name === step)?.status === 'running');
      if (PROMOTE_STEPS.indexOf(step) < PROMOTE_STEPS.indexOf('freeze')) {
        await superQuery(dataDb, `INSERT INTO pool.users (tenant_id, email) VALUES ($1, 'during-${step}')`, [
          tenantId,
        ]);
      }
      await kill9(child);

      child = await startServer(port, env());
      const final = await waitOp(opId, (o) => ['succeeded', 'failed'].includes(o.status));
      const d = await (await api(`/v1/tenants/${slug}/connection`)).json();
      const expected = PROMOTE_STEPS.indexOf(step) < PROMOTE_STEPS.indexOf('freeze') ? 301 : 300;
      if (final.status === 'succeeded') {
        expect(d.tier).toBe('silo');
        const c = new pg.Client({
          host: d.host,
          port: d.port,
          database: d.database,
          user: d.user,
          password: d.password,
        });
        await c.connect();
        const { rows } = await c.query(
          'SELECT count(*)::int AS n, count(DISTINCT email)::int AS e FROM users',
        );
        await c.end();
        expect(rows[0]).toEqual({ n: expected, e: expected });
      } else {
        // Failed cleanly: back on the pool, unfrozen, every row there.
        expect(d.tier).toBe('pool');
        const rows = await superQuery<{ n: number }>(
          dataDb,
          'SELECT count(*)::int AS n FROM pool.users WHERE tenant_id = $1',
          [tenantId],
        );
        expect(rows[0]!.n).toBe(expected);
      }
      const slots = await superQuery(
        dataDb,
        `SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE 'tenantry_promo_%'`,
      );
      expect(slots).toHaveLength(0);
      await kill9(child);
    },
  );
});
