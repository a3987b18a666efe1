import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { adminUrl, dropStackDatabases, rand, superQuery } from '../helpers/runtime.js';
import {
  freePort,
  isRunning,
  kill9,
  type ServerProcess,
  signal,
  startServer,
  until,
} from '../helpers/server.js';
import { copyTemplates, type TemplatesCopy, VERSION_2 } from '../helpers/templates.js';

/**
 * Kill -9 the control plane in the middle of a rollout's wave, right after a tenant's migration
 * committed on the data plane and before the control plane recorded it (the worst point: the catalog
 * is ahead of the ledger), with another tenant's migration beside it; then restart. The rollout must
 * resume and complete, no tenant migrated twice (version 2 adds a column: a second application fails)
 * or skipped, and the ledger, the tenants' records and the catalogs must agree.
 */
const ADMIN = `tnt_${rand(24)}`;
let controlDb: string;
let dataDb: string;
let dataDir: string;
let holdFile: string;
let tpl: TemplatesCopy;
let child: ServerProcess | undefined;
let port: number;
const id = rand(3);
const TENANTS = [
  ...['p1', 'p2'].map((x) => ({ slug: `rc-${x}-${id}`, tier: 'pool' })),
  ...['b1', 'b2', 'b3', 'b4', 'b5'].map((x) => ({ slug: `rc-${x}-${id}`, tier: 'bridge' })),
  ...['s1', 's2'].map((x) => ({ slug: `rc-${x}-${id}`, tier: 'silo' })),
];
const HELD = `rc-b3-${id}`;

const env = () => ({
  TENANTRY_FAULT_HOLD_FILE: holdFile,
  DATABASE_URL: adminUrl(controlDb),
  TENANTRY_DATAPLANE_URL: adminUrl(dataDb),
  TENANTRY_DATA_DIR: dataDir,
  TENANTRY_ADMIN_TOKEN: ADMIN,
  TENANTRY_OPERATION_LEASE_MS: '1500',
  TENANTRY_TEMPLATES_DIR: tpl.dir,
});
const base = () => `http://127.0.0.1:${port}`;
async function api<T = Record<string, unknown>>(
  url: string,
  body?: unknown,
): Promise<{ status: number; json: T }> {
  const res = await fetch(`${base()}${url}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as T };
}
const catalogVersion = async (slug: string, tier: string) => {
  const name = tenantObjectName(slug);
  const [db, schema] =
    tier === 'pool' ? [dataDb, 'pool'] : tier === 'bridge' ? [dataDb, name] : [name, 'app'];
  const rows = await superQuery<{ version: number; applied_at: Date }>(
    db,
    'SELECT version, applied_at FROM tenantry_meta.schema_versions WHERE schema_name = $1',
    [schema],
  );
  return rows[0];
};

beforeAll(async () => {
  controlDb = `cp_rcrash_${id}`;
  dataDb = `dp_rcrash_${id}`;
  await superQuery('postgres', `CREATE DATABASE ${controlDb} TEMPLATE ${inject('templateDb')}`);
  await superQuery('postgres', `CREATE DATABASE ${dataDb}`);
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-rcrash-'));
  holdFile = path.join(dataDir, 'fault-hold');
  tpl = copyTemplates();
  port = await freePort();
  child = await startServer(port, env());
  for (const t of TENANTS) {
    const res = await api<{ operation: { id: string } }>('/v1/tenants', {
      slug: t.slug,
      name: t.slug,
      tier: t.tier,
    });
    expect(res.status).toBe(202);
    await until(`onboarding of ${t.slug}`, async () => {
      const op = (await api<{ status: string }>(`/v1/operations/${res.json.operation.id}`)).json;
      if (op.status === 'failed') throw new Error(`onboarding of ${t.slug} failed`);
      return op.status === 'succeeded' ? true : undefined;
    });
  }
  // Version 2 is deployed: the file lands in the templates directory, the control plane restarts.
  await signal(child, 'SIGTERM');
  tpl.addVersion(2, 'nicknames', VERSION_2);
  child = await startServer(port, env());
}, 180_000);

afterAll(async () => {
  if (isRunning(child)) await kill9(child);
  fs.rmSync(dataDir, { recursive: true, force: true });
  tpl?.remove();
  if (controlDb) await dropStackDatabases(controlDb, dataDb);
});

describe('kill -9 mid-wave', () => {
  it('the restarted control plane resumes the rollout: no tenant migrated twice or skipped, and the versions match the ledger', async () => {
    const point = `rollout:tenant-migrated:${HELD}`;
    fs.writeFileSync(holdFile, point);
    const res = await api<{ id: string }>('/v1/rollouts', {
      toVersion: 2,
      waves: [
        { name: 'canary', slugs: [`rc-b1-${id}`], parallelism: 1 },
        { name: 'rest', parallelism: 2 },
      ],
    });
    expect(res.status).toBe(202);
    const rid = res.json.id;
    // The held tenant's migration has committed on the data plane; the control plane has not recorded
    // it (the result is recorded only once the hold lets go).
    const ledger = () =>
      superQuery<{ status: string }>(
        controlDb,
        'SELECT rt.status FROM rollout_tenants rt WHERE rt.rollout_id = $1 AND rt.slug = $2',
        [rid, HELD],
      );
    await until('the held tenant migrated', async () =>
      (await catalogVersion(HELD, 'bridge'))?.version === 2 ? true : undefined,
    );
    expect(await ledger()).toEqual([{ status: 'running' }]);
    const killedAt = new Date();
    await kill9(child as ServerProcess);
    fs.writeFileSync(holdFile, '');

    child = await startServer(port, env());
    const done = await until('the rollout to complete', async () => {
      const r = (await api<{ status: string }>(`/v1/rollouts/${rid}?limit=100`)).json;
      return r.status === 'running' ? undefined : r;
    });
    const r = done as unknown as {
      status: string;
      progress: Record<string, number>;
      verification: { mismatchCount: number; checked: number };
      tenants: { slug: string; status: string; version: number }[];
    };
    expect(r.status).toBe('completed');
    expect(r.progress).toMatchObject({
      total: TENANTS.length,
      succeeded: TENANTS.length,
      failed: 0,
      parked: 0,
    });
    expect(r.verification).toMatchObject({ mismatchCount: 0, checked: TENANTS.length });
    for (const t of TENANTS) {
      const catalog = await catalogVersion(t.slug, t.tier);
      const [rec] = await superQuery<{ template_version: number }>(
        controlDb,
        'SELECT template_version FROM tenants WHERE slug = $1',
        [t.slug],
      );
      expect({ slug: t.slug, catalog: catalog?.version, recorded: rec?.template_version }).toEqual({
        slug: t.slug,
        catalog: 2,
        recorded: 2,
      });
    }
    // The held tenant's migration was not applied again after the restart.
    expect((await catalogVersion(HELD, 'bridge'))!.applied_at.getTime()).toBeLessThan(killedAt.getTime());
    // One result per tenant in the audit trail, none twice.
    const audit = await superQuery<{ slug: string; n: number }>(
      controlDb,
      `SELECT tenant_slug AS slug, count(*)::int AS n FROM audit_log
        WHERE action = 'rollout.tenant.succeeded' AND details->>'rolloutId' = $1 GROUP BY 1`,
      [rid],
    );
    expect(audit.map((a) => a.slug).sort()).toEqual(TENANTS.map((t) => t.slug).sort());
    expect(audit.filter((a) => a.n !== 1)).toEqual([]);
    // Every migrate operation of the rollout ended: none left running or queued.
    const open = await superQuery(
      controlDb,
      `SELECT id FROM operations WHERE kind = 'migrate' AND status IN ('queued', 'running')`,
    );
    expect(open).toEqual([]);
  }, 180_000);
});
