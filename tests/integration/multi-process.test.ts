import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { call, createFleet, type Fleet, tenantRolePrefix, untilOperationsEnd } from '../helpers/fleet.js';
import { superQuery } from '../helpers/runtime.js';
import { isRunning, kill9, signal } from '../helpers/server.js';

/**
 * The control plane scaled out as an operator runs it: one API process and two worker processes on
 * one external control database, sharing the root key through TENANTRY_ROOT_KEY_FILE. 100 onboardings
 * across the tiers; one worker is killed with -9 while it is inside steps. Every tenant ends active
 * exactly once, and the data plane's catalogs match the registry.
 */
let fleet: Fleet;
beforeAll(async () => {
  fleet = await createFleet('mp');
});
afterAll(async () => {
  await fleet?.drop();
});

type Tier = 'pool' | 'bridge' | 'silo';
// Mostly pool and bridge, a few silos (each a database of its own).
const TIERS: Tier[] = Array.from({ length: 100 }, (_, i) =>
  i % 17 === 5 ? 'silo' : i % 2 === 0 ? 'pool' : 'bridge',
);

describe('one API process and two worker processes', () => {
  it('run 100 onboardings, one worker killed with -9 midway: every tenant active exactly once, catalogs as registered', async () => {
    // The first worker holds every operation that reaches the `schema` step (the last) (bridge and silo) until
    // it is killed: the kill lands inside steps, whatever the machine's speed.
    const hold = path.join(fleet.dir, 'hold-w1');
    fs.writeFileSync(hold, 'step:schema');
    const api = await fleet.start({ TENANTRY_ROLE: 'api' });
    const w1 = await fleet.start({ TENANTRY_ROLE: 'worker', TENANTRY_FAULT_HOLD_FILE: hold });
    const w2 = await fleet.start({ TENANTRY_ROLE: 'worker' });

    const accepted: { slug: string; tier: Tier; tenantId: string; operationId: string }[] = [];
    let next = 0;
    const submit = async () => {
      for (let i = next++; i < TIERS.length; i = next++) {
        const slug = `${fleet.prefix}-${i}`;
        const tier = TIERS[i] as Tier;
        const res = await call(api.base, fleet.adminToken, '/v1/tenants', {
          method: 'POST',
          body: JSON.stringify({ slug, name: `Tenant ${i}`, tier }),
        });
        expect(res.status).toBe(202);
        const body = (await res.json()) as { tenant: { id: string }; operation: { id: string } };
        accepted.push({ slug, tier, tenantId: body.tenant.id, operationId: body.operation.id });
      }
    };
    // Small parallelism, as several clients would send them.
    await Promise.all([submit(), submit(), submit(), submit()]);
    expect(accepted).toHaveLength(100);
    const ids = accepted.map((a) => a.operationId);

    // Midway: the first worker holds operations inside their `schema` step and others have succeeded.
    const held = async () =>
      superQuery<{ id: string }>(
        fleet.controlDb,
        `SELECT id FROM operations WHERE id = ANY($1) AND status = 'running' AND progress ->> 'faultPoint' = 'step:schema'`,
        [ids],
      );
    let heldIds: string[] = [];
    for (let i = 0; ; i++) {
      heldIds = (await held()).map((r) => r.id);
      const [done] = await superQuery<{ n: number }>(
        fleet.controlDb,
        `SELECT count(*)::int AS n FROM operations WHERE id = ANY($1) AND status = 'succeeded'`,
        [ids],
      );
      if (heldIds.length > 0 && (done?.n ?? 0) >= 20) break;
      if (i > 2400) throw new Error(`never midway: ${heldIds.length} held, ${done?.n} succeeded`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await kill9(w1.proc);
    fs.writeFileSync(hold, '');

    // The survivor takes the killed worker's operations up once their leases expire.
    const ended = await untilOperationsEnd(fleet.controlDb, ids, 150_000);
    expect(ended.filter((o) => o.status !== 'succeeded')).toEqual([]);
    // The held ones were claimed again after the kill, and resumed at the step in flight.
    for (const id of heldIds) expect(ended.find((o) => o.id === id)?.attempts).toBeGreaterThanOrEqual(2);

    // Every tenant active, with exactly one activation record and one live data key.
    const registry = await superQuery<{ id: string; slug: string; tier: Tier; status: string }>(
      fleet.controlDb,
      'SELECT id, slug, tier, status FROM tenants',
    );
    expect(registry).toHaveLength(100);
    expect(registry.filter((t) => t.status !== 'active')).toEqual([]);
    const activations = await superQuery<{ tenant_id: string; n: number }>(
      fleet.controlDb,
      `SELECT tenant_id, count(*)::int AS n FROM audit_log WHERE action = 'operation.onboard.succeeded' GROUP BY tenant_id`,
    );
    expect(activations).toHaveLength(100);
    expect(activations.filter((a) => a.n !== 1)).toEqual([]);
    const keys = await superQuery<{ tenant_id: string; n: number }>(
      fleet.controlDb,
      `SELECT tenant_id, count(*)::int AS n FROM local_keys WHERE state = 'enabled' AND tenant_id IS NOT NULL GROUP BY tenant_id`,
    );
    expect(keys).toHaveLength(100);
    expect(keys.filter((k) => k.n !== 1)).toEqual([]);
    const onePerTenant = await superQuery<{ n: number }>(
      fleet.controlDb,
      `SELECT count(*)::int AS n FROM operations WHERE kind = 'onboard'`,
    );
    expect(onePerTenant).toEqual([{ n: 100 }]);

    // The data plane's catalogs match the registry: no tenant object missing, none extra.
    const names = (tier: Tier) =>
      registry
        .filter((t) => t.tier === tier)
        .map((t) => tenantObjectName(t.slug))
        .sort();
    const prefix = tenantRolePrefix(fleet.prefix);
    // A bridge or silo tenant has its login role(s), named after its object name; a pool tenant none.
    const logins = await superQuery<{ rolname: string }>(
      'postgres',
      'SELECT rolname FROM pg_roles WHERE strpos(rolname, $1) > 0 AND rolcanlogin',
      [prefix],
    );
    const withLogin = new Set(
      logins.map((r) => new RegExp(`${prefix}\\d+`).exec(r.rolname)?.[0] ?? `unexpected role ${r.rolname}`),
    );
    expect([...withLogin].sort()).toEqual([...names('bridge'), ...names('silo')].sort());
    const schemas = await superQuery<{ nspname: string }>(
      fleet.dataDb,
      'SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY 1',
      [prefix],
    );
    expect(schemas.map((r) => r.nspname)).toEqual(names('bridge'));
    const databases = await superQuery<{ datname: string }>(
      'postgres',
      'SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1',
      [prefix],
    );
    expect(databases.map((r) => r.datname)).toEqual(names('silo'));
    const members = await superQuery<{ tenant_id: string }>(
      fleet.dataDb,
      'SELECT tenant_id::text FROM tenantry_meta.pool_members ORDER BY 1',
    );
    expect(members.map((m) => m.tenant_id)).toEqual(
      registry
        .filter((t) => t.tier === 'pool')
        .map((t) => t.id)
        .sort(),
    );

    for (const p of [api, w2]) await signal(p.proc, 'SIGTERM');
    expect(isRunning(w2.proc)).toBe(false);
  }, 240_000);
});
