import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane, dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { loginRoleName, tenantObjectName, tenantSecretName } from '../../control-plane/src/domain/naming.js';
import { readRoles, readSiloCatalog } from '../../control-plane/src/drift/catalog.js';
import { verifierHash } from '../../control-plane/src/drift/credentials.js';
import { LocalDriftDetector } from '../../control-plane/src/drift/local.js';
import type { SweepResult } from '../../control-plane/src/drift/sweep.js';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import { POLICY_NAME } from '../../control-plane/src/providers/postgres/pool.js';
import { scramMatches } from '../../control-plane/src/providers/postgres/scram.js';
import {
  auth,
  connectionOf,
  type DriftStack,
  extraDrift,
  onboard,
  startDriftStack,
  tenantCanQuery,
  tenantClient,
  waitForOperation,
} from './drift-helpers.js';

/**
 * Drift detection and repair on the local target, against a real embedded Postgres of its own: each
 * out-of-band change is made with superuser SQL behind Tenantry's back, found by a sweep with the
 * right resource, kind and field, and (under `remediate`) repaired and confirmed by a re-observe.
 */
let s: DriftStack;
const T = {
  pool: 'acme-pool',
  pool2: 'beta-pool',
  bridge: 'acme-bridge',
  bridge2: 'beta-bridge',
  bridge3: 'gamma-bridge',
  silo: 'acme-silo',
};
const ids: Record<string, string> = {};
/** The embedded default's data plane (what startDriftStack runs): its database, roles and schemas. */
const DP = dataPlaneNames('tenantry_data');
const DATA = DP.database;
const obj = tenantObjectName;
/** The login a tenant onboarded here logs in as (its first; its group `obj(slug)` holds the grants). */
const login = (slug: string) => loginRoleName(obj(slug), 'a');

beforeAll(async () => {
  s = await startDriftStack();
  for (const [k, slug] of Object.entries(T)) {
    const tier = k.startsWith('pool') ? 'pool' : k.startsWith('bridge') ? 'bridge' : 'silo';
    ids[slug] = (await onboard(s, tier, slug)).id;
  }
});
afterAll(async () => {
  await s?.close();
});

const sweep = async (): Promise<SweepResult> => {
  const r = await s.drift.runNow();
  if (!r) throw new Error('sweep did not run');
  return r;
};

async function setPolicy(body: Record<string, unknown>) {
  const res = await s.app.inject({
    method: 'PUT',
    url: '/v1/drift-policies',
    headers: auth(s.tokens.sre),
    payload: { ignoreFields: [], ...body },
  });
  expect(res.statusCode).toBe(200);
  return res.json() as { items: { scope: string; mode: string | null; ignoreFields: string[] }[] };
}

type F = SweepResult['findings'][number];
const pick = (r: SweepResult, f: Partial<Pick<F, 'name' | 'field' | 'resource' | 'kind' | 'tenantId'>>) =>
  r.findings.filter((x) => Object.entries(f).every(([k, v]) => x[k as keyof F] === v));

const roleLimit = async (role: string) =>
  (
    await s.sql<{ n: number }>('postgres', 'SELECT rolconnlimit AS n FROM pg_roles WHERE rolname = $1', [
      role,
    ])
  )[0]?.n;

describe('a clean fleet', () => {
  it('produces zero findings and judges every active tenant', async () => {
    const r = await sweep();
    expect(r.findings).toEqual([]);
    expect(r.run.status).toBe('succeeded');
    expect(r.run.tenantsChecked).toBe(Object.keys(T).length);
    expect(r.run.skipped).toEqual([]);
    expect(r.run.summary).toMatchObject({ findings: 0, open: 0, ignored: 0 });
    // Every check was made, every login's password among them.
    expect(r.run.summary.notChecked).toBeUndefined();
  });
});

describe('report mode (the default)', () => {
  it('reports a changed role limit with its kind, field, desired and actual values, and changes nothing', async () => {
    const role = login(T.bridge2);
    const before = await roleLimit(role);
    await s.sql(DATA, `ALTER ROLE ${role} CONNECTION LIMIT 97`);
    const r = await sweep();
    expect(r.findings).toEqual([
      expect.objectContaining({
        tenantId: ids[T.bridge2],
        tenantSlug: T.bridge2,
        resource: 'role',
        name: role,
        kind: 'changed',
        field: 'connectionLimit',
        desired: before,
        actual: 97,
        category: 'state',
        resolution: 'open',
      }),
    ]);
    expect(r.run.remediation).toEqual([]);
    expect(await roleLimit(role)).toBe(97);

    const drift = await s.app.inject({
      method: 'GET',
      url: `/v1/tenants/${T.bridge2}/drift`,
      headers: auth(s.tokens['sales-ops']),
    });
    expect(drift.statusCode).toBe(200);
    expect(drift.json()).toMatchObject({
      tenantSlug: T.bridge2,
      runId: r.run.id,
      skipped: null,
      findings: [{ resource: 'role', field: 'connectionLimit', actual: 97, resolution: 'open' }],
    });
    const clean = await s.app.inject({
      method: 'GET',
      url: `/v1/tenants/${T.bridge}/drift`,
      headers: auth(s.tokens.sre),
    });
    expect(clean.json().findings).toEqual([]);
    await s.sql(DATA, `ALTER ROLE ${role} CONNECTION LIMIT ${before}`);
  });

  it("shows a pool tenant the pool's platform findings, marked as such, and a bridge tenant not", async () => {
    await s.sql(DATA, 'ALTER TABLE pool.users NO FORCE ROW LEVEL SECURITY');
    try {
      const r = await sweep();
      const view = async (slug: string) => {
        const res = await s.app.inject({
          method: 'GET',
          url: `/v1/tenants/${slug}/drift`,
          headers: auth(s.tokens['sales-ops']),
        });
        expect(res.statusCode).toBe(200);
        return res.json() as { runId: string; findings: Record<string, unknown>[] };
      };
      const pool = await view(T.pool);
      expect(pool.runId).toBe(r.run.id);
      expect(pool.findings).toEqual([
        expect.objectContaining({
          tenantId: null,
          resource: 'table',
          name: `${DATA}.pool.users`,
          field: 'rlsForced',
          category: 'isolation',
          scope: 'platform',
        }),
      ]);
      expect((await view(T.bridge)).findings).toEqual([]);
      expect((await view(T.silo)).findings).toEqual([]);
      // The run lists it as a platform finding too.
      const run = await s.app.inject({
        method: 'GET',
        url: `/v1/drift-runs/${r.run.id}`,
        headers: auth(s.tokens.sre),
      });
      expect(run.json().findings).toEqual([
        expect.objectContaining({ field: 'rlsForced', scope: 'platform' }),
      ]);
    } finally {
      await s.sql(DATA, 'ALTER TABLE pool.users FORCE ROW LEVEL SECURITY');
    }
    expect((await sweep()).findings).toEqual([]);
  });

  it('does not report a field the tenant policy ignores, and counts it as ignored', async () => {
    const role = login(T.bridge2);
    const before = await roleLimit(role);
    await s.sql(DATA, `ALTER ROLE ${role} CONNECTION LIMIT 96`);
    await setPolicy({ tenant: T.bridge2, mode: null, ignoreFields: ['role.connectionLimit'] });
    try {
      const r = await sweep();
      expect(pick(r, { tenantId: ids[T.bridge2] })).toEqual([]);
      expect(r.run.summary.ignored).toBe(1);
      // The ignore is the tenant's own: the same change on another tenant is reported.
      await s.sql(DATA, `ALTER ROLE ${login(T.bridge3)} CONNECTION LIMIT 95`);
      const r2 = await sweep();
      expect(pick(r2, { field: 'connectionLimit' }).map((f) => f.tenantSlug)).toEqual([T.bridge3]);
    } finally {
      await setPolicy({ tenant: T.bridge2, mode: null, ignoreFields: [] });
      await s.sql(DATA, `ALTER ROLE ${role} CONNECTION LIMIT ${before}`);
      await s.sql(DATA, `ALTER ROLE ${login(T.bridge3)} CONNECTION LIMIT ${before}`);
    }
    expect((await sweep()).findings).toEqual([]);
  });

  it('rejects a malformed policy with 400 and an unknown tenant with 404', async () => {
    const bad = await s.app.inject({
      method: 'PUT',
      url: '/v1/drift-policies',
      headers: auth(s.tokens.sre),
      payload: { mode: 'fix-everything', ignoreFields: [] },
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.code).toBe('VALIDATION_FAILED');
    const both = await s.app.inject({
      method: 'PUT',
      url: '/v1/drift-policies',
      headers: auth(s.tokens.sre),
      payload: { tier: 'pool', tenant: T.pool, mode: 'report', ignoreFields: [] },
    });
    expect(both.statusCode).toBe(400);
    const missing = await s.app.inject({
      method: 'PUT',
      url: '/v1/drift-policies',
      headers: auth(s.tokens.sre),
      payload: { tenant: 'no-such-tenant', mode: 'report', ignoreFields: [] },
    });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error.code).toBe('TENANT_NOT_FOUND');
  });
});

interface Case {
  what: string;
  inject: () => Promise<unknown>;
  expected: Partial<F>;
  /** Checks the real state after remediation, beyond the finding being gone. */
  after?: () => Promise<void>;
}

const superCount = async (db: string, sql: string, params: unknown[] = []) =>
  Number((await s.sql<{ n: string }>(db, sql, params))[0]?.n);

/** Runs a statement as the tenant itself, with the credentials of its connection descriptor. */
async function asTenant(slug: string, sql: string): Promise<void> {
  const c = await tenantClient(await connectionOf(s, slug));
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** The stored credentials are refused: the password the descriptor hands out no longer works. */
const locksOut = async (slug: string) =>
  expect(tenantCanQuery(s, slug)).rejects.toMatchObject({ code: '28P01' });

let writes = 0;
/**
 * Freezes a tenant (its row in tenantry_meta.frozen_tenants, as a promotion would), tries a write
 * with the tenant's own credentials, and lifts the freeze again: whether the guard refused it.
 */
async function frozenWriteRefused(slug: string, tier: 'pool' | 'bridge' | 'silo'): Promise<boolean> {
  const db = tier === 'silo' ? obj(slug) : DATA;
  const schema = tier === 'pool' ? DP.poolSchema : tier === 'bridge' ? obj(slug) : DP.siloSchema;
  await s.sql(
    db,
    `INSERT INTO tenantry_meta.frozen_tenants (tenant_id, schema_name, reason) VALUES ($1, $2, 'promotion')`,
    [ids[slug], schema],
  );
  try {
    const c = await tenantClient(await connectionOf(s, slug));
    try {
      if (tier === 'pool') await c.query(`SELECT set_config('app.tenant_id', $1, false)`, [ids[slug]]);
      await c.query(`INSERT INTO settings (tenant_id, key, value) VALUES ($1, $2, '1'::jsonb)`, [
        ids[slug],
        `frozen-write-${++writes}`,
      ]);
      return false;
    } catch (e) {
      if ((e as { code?: string }).code === '25006') return true;
      throw e;
    } finally {
      await c.end();
    }
  } finally {
    await s.sql(db, 'DELETE FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2', [
      ids[slug],
      schema,
    ]);
  }
}

const CASES: Case[] = [
  {
    what: 'a dropped bridge schema',
    inject: () => s.sql(DATA, `DROP SCHEMA ${obj(T.bridge2)} CASCADE`),
    expected: {
      tenantSlug: T.bridge2,
      resource: 'schema',
      name: `${DATA}.${obj(T.bridge2)}`,
      kind: 'missing',
      field: 'exists',
    },
    after: async () => expect(await tenantCanQuery(s, T.bridge2)).toBe(true),
  },
  {
    what: 'a bridge table granted to PUBLIC',
    inject: () => s.sql(DATA, `GRANT SELECT, UPDATE ON ${obj(T.bridge)}.users TO PUBLIC`),
    expected: {
      tenantSlug: T.bridge,
      resource: 'table',
      name: `${DATA}.${obj(T.bridge)}.users`,
      kind: 'unexpected',
      field: 'privileges:PUBLIC',
      actual: ['SELECT', 'UPDATE'],
      category: 'isolation',
    },
    after: async () =>
      expect(
        await superCount(
          DATA,
          `SELECT count(*) AS n FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = '${obj(T.bridge)}.users'::regclass AND a.grantee = 0`,
        ),
      ).toBe(0),
  },
  {
    what: "a grant that lets one tenant's role reach another tenant's table",
    inject: () => s.sql(DATA, `GRANT SELECT ON ${obj(T.bridge)}.documents TO ${obj(T.bridge3)}`),
    expected: {
      tenantSlug: T.bridge,
      resource: 'table',
      name: `${DATA}.${obj(T.bridge)}.documents`,
      kind: 'unexpected',
      field: `privileges:${obj(T.bridge3)}`,
      category: 'isolation',
    },
    after: async () =>
      expect(
        (
          await s.sql<{ ok: boolean }>(DATA, `SELECT has_table_privilege($1, $2, 'SELECT') AS ok`, [
            obj(T.bridge3),
            `${obj(T.bridge)}.documents`,
          ])
        )[0]?.ok,
      ).toBe(false),
  },
  {
    what: 'a grant to an oddly named role created by hand (quoted, not spliced, when revoked)',
    inject: async () => {
      await s.sql('postgres', `CREATE ROLE "Ops ""Temp"" Role"`);
      await s.sql(DATA, `GRANT SELECT ON ${obj(T.bridge)}.settings TO "Ops ""Temp"" Role"`);
    },
    expected: {
      tenantSlug: T.bridge,
      resource: 'table',
      name: `${DATA}.${obj(T.bridge)}.settings`,
      kind: 'unexpected',
      field: 'privileges:Ops "Temp" Role',
      actual: ['SELECT'],
    },
    after: async () =>
      expect(
        (
          await s.sql<{ ok: boolean }>(DATA, `SELECT has_table_privilege($1, $2, 'SELECT') AS ok`, [
            'Ops "Temp" Role',
            `${obj(T.bridge)}.settings`,
          ])
        )[0]?.ok,
      ).toBe(false),
  },
  {
    what: 'a bridge table handed to a role outside Tenantry (its name looked up by oid)',
    inject: async () => {
      await s.sql('postgres', 'CREATE ROLE drift_outsider NOLOGIN');
      await s.sql(DATA, `ALTER TABLE ${obj(T.bridge3)}.users OWNER TO drift_outsider`);
    },
    expected: {
      tenantSlug: T.bridge3,
      resource: 'table',
      name: `${DATA}.${obj(T.bridge3)}.users`,
      kind: 'changed',
      field: 'owner',
      actual: 'drift_outsider',
    },
    after: async () => {
      expect(
        (
          await s.sql<{ o: string }>(
            DATA,
            `SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE oid = '${obj(T.bridge3)}.users'::regclass`,
          )
        )[0]?.o,
      ).toBe(DP.ownerRole);
      await s.sql('postgres', 'DROP ROLE drift_outsider');
    },
  },
  {
    what: "a pool table's write-freeze guard dropped",
    inject: () => s.sql(DATA, 'DROP TRIGGER tenantry_freeze_upd ON pool.settings'),
    expected: {
      tenantId: null,
      resource: 'table',
      name: `${DATA}.pool.settings`,
      kind: 'changed',
      field: 'freezeGuard',
      actual: ['tenantry_freeze_del', 'tenantry_freeze_ins'],
      category: 'isolation',
    },
    after: async () =>
      expect(
        await superCount(
          DATA,
          `SELECT count(*) AS n FROM pg_trigger WHERE tgrelid = 'pool.settings'::regclass AND tgname LIKE 'tenantry\\_freeze%'`,
        ),
      ).toBe(3),
  },
  {
    what: "a bridge table's write-freeze guard dropped",
    inject: () => s.sql(DATA, `DROP TRIGGER tenantry_freeze_guard ON ${obj(T.bridge2)}.documents`),
    expected: {
      tenantSlug: T.bridge2,
      resource: 'table',
      name: `${DATA}.${obj(T.bridge2)}.documents`,
      kind: 'changed',
      field: 'freezeGuard',
      actual: [],
    },
  },
  {
    what: "a bridge tenant's guards disabled (pg_restore --disable-triggers): a frozen write went through",
    inject: async () => {
      await s.sql(DATA, `ALTER TABLE ${obj(T.bridge)}.settings DISABLE TRIGGER USER`);
      // The guard exists but does not fire: the freeze is silently bypassed.
      expect(await frozenWriteRefused(T.bridge, 'bridge')).toBe(false);
    },
    expected: {
      tenantSlug: T.bridge,
      resource: 'table',
      name: `${DATA}.${obj(T.bridge)}.settings`,
      kind: 'changed',
      field: 'freezeGuardEnabled:tenantry_freeze_guard',
      desired: 'enabled',
      actual: 'disabled',
      category: 'isolation',
    },
    after: async () => expect(await frozenWriteRefused(T.bridge, 'bridge')).toBe(true),
  },
  {
    what: "the pool tables' statement-level guards disabled",
    inject: async () => {
      await s.sql(DATA, 'ALTER TABLE pool.settings DISABLE TRIGGER USER');
      expect(await frozenWriteRefused(T.pool, 'pool')).toBe(false);
    },
    expected: {
      tenantId: null,
      resource: 'table',
      name: `${DATA}.pool.settings`,
      kind: 'changed',
      field: 'freezeGuardEnabled:tenantry_freeze_ins',
      desired: 'enabled',
      actual: 'disabled',
      category: 'isolation',
    },
    after: async () => {
      expect(
        await superCount(
          DATA,
          `SELECT count(*) AS n FROM pg_trigger WHERE tgrelid = 'pool.settings'::regclass
              AND tgname LIKE 'tenantry\\_freeze%' AND tgenabled = 'O'`,
        ),
      ).toBe(3);
      expect(await frozenWriteRefused(T.pool, 'pool')).toBe(true);
    },
  },
  {
    what: "a silo's guard made replica-only (it fires for no ordinary session)",
    inject: async () => {
      await s.sql(obj(T.silo), 'ALTER TABLE app.settings ENABLE REPLICA TRIGGER tenantry_freeze_guard');
      expect(await frozenWriteRefused(T.silo, 'silo')).toBe(false);
    },
    expected: {
      tenantSlug: T.silo,
      resource: 'table',
      name: `${obj(T.silo)}.app.settings`,
      kind: 'changed',
      field: 'freezeGuardEnabled:tenantry_freeze_guard',
      desired: 'enabled',
      actual: 'enabled replica',
      category: 'isolation',
    },
    after: async () => expect(await frozenWriteRefused(T.silo, 'silo')).toBe(true),
  },
  {
    what: 'a freeze left standing on a bridge tenant (all its writes refused)',
    inject: () =>
      s.sql(
        DATA,
        `INSERT INTO tenantry_meta.frozen_tenants (tenant_id, schema_name, reason) VALUES ($1, $2, 'promotion')`,
        [ids[T.bridge3], obj(T.bridge3)],
      ),
    expected: {
      tenantSlug: T.bridge3,
      resource: 'freeze',
      name: `${DATA}.${obj(T.bridge3)}`,
      kind: 'unexpected',
      field: 'frozen',
      actual: 'promotion',
    },
    after: async () => {
      const c = await tenantClient(await connectionOf(s, T.bridge3));
      try {
        await c.query(
          `INSERT INTO settings (tenant_id, key, value) VALUES ($1, 'after-unfreeze', '1'::jsonb)`,
          [ids[T.bridge3]],
        );
      } finally {
        await c.end();
      }
    },
  },
  {
    what: 'a freeze left standing on a pool tenant',
    inject: () =>
      s.sql(
        DATA,
        `INSERT INTO tenantry_meta.frozen_tenants (tenant_id, schema_name, reason) VALUES ($1, 'pool', 'promotion')`,
        [ids[T.pool]],
      ),
    expected: {
      tenantSlug: T.pool,
      resource: 'freeze',
      name: `${DATA}.pool`,
      kind: 'unexpected',
      field: 'frozen',
      actual: 'promotion',
    },
  },
  {
    what: 'RLS disabled on a pool table',
    inject: () => s.sql(DATA, 'ALTER TABLE pool.documents DISABLE ROW LEVEL SECURITY'),
    expected: {
      tenantId: null,
      resource: 'table',
      name: `${DATA}.pool.documents`,
      kind: 'changed',
      field: 'rlsEnabled',
      desired: true,
      actual: false,
      category: 'isolation',
    },
    after: async () =>
      expect(
        await superCount(
          DATA,
          `SELECT count(*) AS n FROM pg_class WHERE oid = 'pool.documents'::regclass AND relrowsecurity`,
        ),
      ).toBe(1),
  },
  {
    what: 'RLS no longer forced on a pool table',
    inject: () => s.sql(DATA, 'ALTER TABLE pool.users NO FORCE ROW LEVEL SECURITY'),
    expected: {
      tenantId: null,
      resource: 'table',
      name: `${DATA}.pool.users`,
      kind: 'changed',
      field: 'rlsForced',
      desired: true,
      actual: false,
      category: 'isolation',
    },
    after: async () =>
      expect(
        await superCount(
          DATA,
          `SELECT count(*) AS n FROM pg_class WHERE oid = 'pool.users'::regclass AND relforcerowsecurity`,
        ),
      ).toBe(1),
  },
  {
    what: 'a pool policy loosened with an OR branch',
    inject: () =>
      s.sql(
        DATA,
        `ALTER POLICY ${POLICY_NAME} ON pool.settings
           USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid) OR true)`,
      ),
    expected: {
      tenantId: null,
      resource: 'policy',
      name: `${DATA}.pool.settings.${POLICY_NAME}`,
      kind: 'changed',
      field: 'using',
      category: 'isolation',
    },
    after: async () => {
      const [p] = await s.sql<{ e: string }>(
        DATA,
        `SELECT pg_get_expr(polqual, polrelid) AS e FROM pg_policy WHERE polrelid = 'pool.settings'::regclass`,
      );
      expect(p?.e).not.toMatch(/\bOR\b/i);
      expect(p?.e).toContain('current_setting');
    },
  },
  {
    what: 'an extra permissive pool policy (ORed into the tenant policy)',
    inject: () => s.sql(DATA, 'CREATE POLICY open_door ON pool.users FOR SELECT USING (true)'),
    expected: {
      tenantId: null,
      resource: 'policy',
      name: `${DATA}.pool.users.open_door`,
      kind: 'unexpected',
      field: 'exists',
      category: 'isolation',
    },
    after: async () =>
      expect(
        await superCount(DATA, `SELECT count(*) AS n FROM pg_policy WHERE polrelid = 'pool.users'::regclass`),
      ).toBe(1),
  },
  {
    what: 'a dropped silo role',
    inject: async () => {
      const role = obj(T.silo);
      await s.sql(obj(T.silo), `DROP OWNED BY ${role}`);
      await s.sql(DATA, `DROP OWNED BY ${role}`);
      await s.sql('postgres', `REVOKE ALL ON DATABASE ${obj(T.silo)} FROM ${role}`);
      await s.sql('postgres', `DROP ROLE ${role}`);
    },
    expected: { tenantSlug: T.silo, resource: 'role', name: obj(T.silo), kind: 'missing', field: 'exists' },
    after: async () => expect(await tenantCanQuery(s, T.silo)).toBe(true),
  },
  // Inside a silo database (read by the silo pass: owners as oids, filtering client-side).
  {
    what: 'a silo table granted to PUBLIC',
    inject: () => s.sql(obj(T.silo), 'GRANT SELECT ON app.documents TO PUBLIC'),
    expected: {
      tenantSlug: T.silo,
      resource: 'table',
      name: `${obj(T.silo)}.app.documents`,
      kind: 'unexpected',
      field: 'privileges:PUBLIC',
      actual: ['SELECT'],
      category: 'isolation',
    },
    after: async () =>
      expect(
        await superCount(
          obj(T.silo),
          `SELECT count(*) AS n FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = 'app.documents'::regclass AND a.grantee = 0`,
        ),
      ).toBe(0),
  },
  {
    what: 'a silo table handed to a role outside Tenantry (its name looked up by oid)',
    inject: async () => {
      await s.sql('postgres', 'CREATE ROLE drift_hand_made NOLOGIN');
      await s.sql(obj(T.silo), 'ALTER TABLE app.settings OWNER TO drift_hand_made');
    },
    expected: {
      tenantSlug: T.silo,
      resource: 'table',
      name: `${obj(T.silo)}.app.settings`,
      kind: 'changed',
      field: 'owner',
      actual: 'drift_hand_made',
    },
    after: async () => {
      expect(
        (
          await s.sql<{ o: string }>(
            obj(T.silo),
            `SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE oid = 'app.settings'::regclass`,
          )
        )[0]?.o,
      ).toBe(DP.ownerRole);
      await s.sql('postgres', 'DROP ROLE drift_hand_made');
    },
  },
  {
    what: "a silo table's write-freeze guard dropped",
    inject: () => s.sql(obj(T.silo), 'DROP TRIGGER tenantry_freeze_guard ON app.users'),
    expected: {
      tenantSlug: T.silo,
      resource: 'table',
      name: `${obj(T.silo)}.app.users`,
      kind: 'changed',
      field: 'freezeGuard',
      actual: [],
      category: 'isolation',
    },
    after: async () =>
      expect(
        await superCount(
          obj(T.silo),
          `SELECT count(*) AS n FROM pg_trigger WHERE tgrelid = 'app.users'::regclass AND tgname = 'tenantry_freeze_guard'`,
        ),
      ).toBe(1),
  },
  {
    what: 'a dropped silo schema',
    inject: () => s.sql(obj(T.silo), 'DROP SCHEMA app CASCADE'),
    expected: {
      tenantSlug: T.silo,
      resource: 'schema',
      name: `${obj(T.silo)}.app`,
      kind: 'missing',
      field: 'exists',
    },
    after: async () => expect(await tenantCanQuery(s, T.silo)).toBe(true),
  },
  {
    what: 'a changed role limit',
    inject: () => s.sql('postgres', `ALTER ROLE ${login(T.bridge3)} CONNECTION LIMIT 3`),
    expected: {
      tenantSlug: T.bridge3,
      resource: 'role',
      name: login(T.bridge3),
      kind: 'changed',
      field: 'connectionLimit',
      actual: 3,
    },
    after: async () => expect(await roleLimit(login(T.bridge3))).toBe(20),
  },
  {
    what: "a pool tenant's deleted secret",
    inject: () =>
      s.sql(s.controlDb, 'DELETE FROM local_secrets WHERE name = $1', [tenantSecretName(T.pool2)]),
    expected: {
      tenantSlug: T.pool2,
      resource: 'secret',
      name: tenantSecretName(T.pool2),
      kind: 'missing',
      field: 'exists',
    },
    after: async () => {
      const d = await connectionOf(s, T.pool2);
      expect(d).toMatchObject({ tenantId: ids[T.pool2], tier: 'pool', tenantSetting: DP.tenantSetting });
    },
  },
  {
    what: "a bridge tenant's deleted secret (new credentials reach the role)",
    inject: () =>
      s.sql(s.controlDb, 'DELETE FROM local_secrets WHERE name = $1', [tenantSecretName(T.bridge3)]),
    expected: {
      tenantSlug: T.bridge3,
      resource: 'secret',
      name: tenantSecretName(T.bridge3),
      kind: 'missing',
      field: 'exists',
    },
    after: async () => expect(await tenantCanQuery(s, T.bridge3)).toBe(true),
  },
  // What every login may do to itself (ALTER ROLE <self> …), found by a sweep and set back.
  {
    what: "a bridge tenant's login changes its own password (its stored secret no longer works)",
    inject: async () => {
      await asTenant(T.bridge, `ALTER ROLE ${login(T.bridge)} PASSWORD 'chosen-by-the-tenant'`);
      await locksOut(T.bridge);
    },
    expected: {
      tenantSlug: T.bridge,
      resource: 'role',
      name: login(T.bridge),
      kind: 'changed',
      field: 'password',
      desired: 'stored secret',
      actual: 'another password',
      category: 'state',
    },
    after: async () => expect(await tenantCanQuery(s, T.bridge)).toBe(true),
  },
  {
    what: "the pool's shared login password changed by one pool tenant (every other one locked out)",
    inject: async () => {
      await asTenant(T.pool, `ALTER ROLE ${DP.poolRole} PASSWORD 'mine-now'`);
      await locksOut(T.pool2);
    },
    expected: {
      tenantId: null,
      resource: 'role',
      name: DP.poolRole,
      kind: 'changed',
      field: 'password',
      actual: 'another password',
      category: 'isolation',
    },
    after: async () => {
      expect(await tenantCanQuery(s, T.pool)).toBe(true);
      expect(await tenantCanQuery(s, T.pool2)).toBe(true);
    },
  },
  {
    what: 'a silo login that removes its own password',
    inject: async () => {
      await asTenant(T.silo, `ALTER ROLE ${login(T.silo)} PASSWORD NULL`);
      await locksOut(T.silo);
    },
    expected: {
      tenantSlug: T.silo,
      resource: 'role',
      name: login(T.silo),
      kind: 'changed',
      field: 'password',
      actual: 'no password',
    },
    after: async () => expect(await tenantCanQuery(s, T.silo)).toBe(true),
  },
  {
    what: 'a bridge login that stores its own password as an md5 hash',
    inject: () =>
      asTenant(
        T.bridge3,
        `SET password_encryption = 'md5'; ALTER ROLE ${login(T.bridge3)} PASSWORD 'weaker'`,
      ),
    expected: {
      tenantSlug: T.bridge3,
      resource: 'role',
      name: login(T.bridge3),
      kind: 'changed',
      field: 'password',
      actual: 'an md5 hash',
    },
    after: async () => {
      const [v] = await s.sql<{ v: string }>(
        'postgres',
        'SELECT rolpassword AS v FROM pg_authid WHERE rolname = $1',
        [login(T.bridge3)],
      );
      expect(v?.v).toMatch(/^SCRAM-SHA-256\$4096:/);
      expect(await tenantCanQuery(s, T.bridge3)).toBe(true);
    },
  },
  {
    what: "a tenant's own login lifting its statement_timeout (ALTER ROLE <self> SET)",
    inject: () => asTenant(T.bridge2, `ALTER ROLE ${login(T.bridge2)} SET statement_timeout = 0`),
    expected: {
      tenantSlug: T.bridge2,
      resource: 'role',
      name: login(T.bridge2),
      kind: 'changed',
      field: 'statement_timeout',
      actual: '0',
    },
    after: async () => {
      const [r] = await s.sql<{ c: string[] }>(
        'postgres',
        `SELECT setconfig AS c FROM pg_db_role_setting WHERE setrole = $1::regrole AND setdatabase = 0`,
        [login(T.bridge2)],
      );
      expect(r?.c).not.toContain('statement_timeout=0');
    },
  },
  {
    what: "a tenant's own login lifting its statement_timeout in its database only (ALTER ROLE … IN DATABASE)",
    inject: () =>
      asTenant(T.bridge2, `ALTER ROLE ${login(T.bridge2)} IN DATABASE ${DATA} SET statement_timeout = 0`),
    expected: {
      tenantSlug: T.bridge2,
      resource: 'role',
      name: login(T.bridge2),
      kind: 'unexpected',
      field: `databaseSetting:${DATA}:statement_timeout`,
      actual: '0',
    },
    after: async () =>
      expect(
        await superCount(
          'postgres',
          `SELECT count(*) AS n FROM pg_db_role_setting WHERE setrole = $1::regrole AND setdatabase <> 0`,
          [login(T.bridge2)],
        ),
      ).toBe(0),
  },
  {
    what: 'CONNECT granted to PUBLIC on a silo database',
    inject: () => s.sql('postgres', `GRANT CONNECT ON DATABASE ${obj(T.silo)} TO PUBLIC`),
    expected: {
      tenantSlug: T.silo,
      resource: 'database',
      name: obj(T.silo),
      kind: 'unexpected',
      field: 'privileges:PUBLIC',
      category: 'isolation',
    },
    after: async () =>
      expect(
        await superCount(
          'postgres',
          `SELECT count(*) AS n FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1 AND a.grantee = 0`,
          [obj(T.silo)],
        ),
      ).toBe(0),
  },
  {
    what: 'BYPASSRLS on the pool login role',
    inject: () => s.sql('postgres', `ALTER ROLE ${DP.poolRole} BYPASSRLS`),
    expected: {
      tenantId: null,
      resource: 'role',
      name: DP.poolRole,
      kind: 'changed',
      field: 'bypassRls',
      category: 'isolation',
    },
    after: async () =>
      expect(
        await superCount(
          'postgres',
          `SELECT count(*) AS n FROM pg_roles WHERE rolname = $1 AND rolbypassrls`,
          [DP.poolRole],
        ),
      ).toBe(0),
  },
  {
    what: 'a pool table owned by the pool login role',
    inject: () => s.sql(DATA, `ALTER TABLE pool.documents OWNER TO ${DP.poolRole}`),
    expected: {
      tenantId: null,
      resource: 'table',
      name: `${DATA}.pool.documents`,
      kind: 'changed',
      field: 'owner',
      actual: DP.poolRole,
      category: 'isolation',
    },
    after: async () =>
      expect(
        (
          await s.sql<{ o: string }>(
            DATA,
            `SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE oid = 'pool.documents'::regclass`,
          )
        )[0]?.o,
      ).toBe(DP.ownerRole),
  },
];

describe('remediate mode', () => {
  beforeAll(async () => {
    await setPolicy({ mode: 'remediate' });
  });
  afterAll(async () => {
    await setPolicy({ mode: 'report' });
  });

  it.each(CASES)('detects and repairs $what', async (c) => {
    await c.inject();
    const r = await sweep();
    const hits = pick(r, {
      ...(c.expected.resource ? { resource: c.expected.resource } : {}),
      ...(c.expected.name ? { name: c.expected.name } : {}),
      ...(c.expected.field ? { field: c.expected.field } : {}),
    });
    expect(hits, JSON.stringify(r.findings)).toEqual([
      expect.objectContaining({ ...c.expected, resolution: 'repaired' }),
    ]);
    // Every finding of the sweep (the injected one and its consequences) was repaired.
    expect(r.findings.filter((f) => f.resolution !== 'repaired')).toEqual([]);
    expect(r.run.summary).toMatchObject({ open: 0, unrepaired: 0 });
    const tenantId = hits[0]?.tenantId ?? null;
    const rec = r.run.remediation.find((x) => x.tenantId === tenantId);
    expect(rec).toMatchObject({ status: 'succeeded', remaining: 0 });
    if (tenantId) {
      // A tenant's repair is a reconcile operation, visible through the operations API and audited.
      const op = await s.app.inject({
        method: 'GET',
        url: `/v1/operations/${rec?.operationId}`,
        headers: auth(s.tokens.sre),
      });
      expect(op.json()).toMatchObject({
        kind: 'reconcile',
        status: 'succeeded',
        tenantSlug: hits[0]?.tenantSlug,
      });
      const audit = await s.sql<{ action: string }>(
        s.controlDb,
        'SELECT action FROM audit_log WHERE operation_id = $1 ORDER BY id',
        [rec?.operationId],
      );
      expect(audit.map((a) => a.action)).toEqual([
        'operation.reconcile.requested',
        'operation.reconcile.succeeded',
      ]);
    }
    await c.after?.();
    const again = await sweep();
    expect(again.findings).toEqual([]);
  });
});

describe('remediation bookkeeping', () => {
  it("names a finding's reconcile operation as soon as it is created, while it still runs", async () => {
    const role = login(T.bridge2);
    const before = await roleLimit(role);
    // A sweep that stops waiting for its repairs at once.
    const extra = extraDrift(s, { remediationTimeoutMs: 1 });
    // Holds the role's catalog row: the reconcile's ALTER ROLE waits until this transaction ends,
    // so the operation is still in flight when the sweep records it.
    const blocker = new pg.Client({ connectionString: s.adminUrl('postgres') });
    await blocker.connect();
    let operationId: string | null | undefined;
    await setPolicy({ mode: 'remediate' });
    try {
      await s.sql('postgres', `ALTER ROLE ${role} CONNECTION LIMIT 5`);
      await blocker.query('BEGIN');
      await blocker.query(`ALTER ROLE ${role} CONNECTION LIMIT 6`);
      const r = await extra.drift.runNow();
      if (!r) throw new Error('sweep did not run');
      const rec = r.run.remediation.find((x) => x.tenantSlug === T.bridge2);
      expect(rec).toMatchObject({ status: 'in-progress', operationId: expect.stringMatching(/^op_/) });
      operationId = rec?.operationId;
      const run = await s.app.inject({
        method: 'GET',
        url: `/v1/drift-runs/${r.run.id}`,
        headers: auth(s.tokens.sre),
      });
      expect(run.json().findings).toEqual([
        expect.objectContaining({
          tenantSlug: T.bridge2,
          field: 'connectionLimit',
          resolution: 'open',
          operationId,
        }),
      ]);
      const mine = await s.app.inject({
        method: 'GET',
        url: `/v1/tenants/${T.bridge2}/drift`,
        headers: auth(s.tokens['sales-ops']),
      });
      expect(mine.json().findings).toEqual([
        expect.objectContaining({ field: 'connectionLimit', operationId }),
      ]);
    } finally {
      await blocker.query('ROLLBACK').catch(() => undefined);
      await blocker.end();
      await extra.close();
    }
    // Released, the operation repairs the limit.
    expect((await waitForOperation(s, operationId as string)).status).toBe('succeeded');
    expect(await roleLimit(role)).toBe(before);
    await setPolicy({ mode: 'report' });
    expect((await sweep()).findings).toEqual([]);
  });
});

describe('checking passwords against the stored secrets', () => {
  const logins = [login(T.bridge), login(T.silo), login(T.bridge2), login(T.bridge3), DP.poolRole];
  const verified = async () =>
    (
      await s.sql<{ r: string }>(
        s.controlDb,
        'SELECT role_name AS r FROM drift_verified_credentials ORDER BY 1',
      )
    ).map((x) => x.r);

  it('derives keys for a bounded number of new logins per sweep, and says how many it left', async () => {
    await s.sql(s.controlDb, 'DELETE FROM drift_verified_credentials');
    // A process of its own (nothing remembered), at most one key derivation per sweep.
    const extra = extraDrift(s, { credentialChecksPerSweep: 1 });
    try {
      for (let left = logins.length - 1; left >= 0; left--) {
        const r = await extra.drift.runNow();
        expect(r?.findings).toEqual([]);
        expect(r?.run.summary.notChecked).toEqual(
          left > 0
            ? [{ check: 'credentials', reason: expect.stringContaining(`${left} login(s) not checked`) }]
            : undefined,
        );
      }
      // Each verified match is kept (role, secret version, a hash of the verifier), never the verifier.
      expect(await verified()).toEqual([...logins].sort());
      const [row] = await s.sql<{ h: string }>(
        s.controlDb,
        'SELECT verifier_sha256 AS h FROM drift_verified_credentials WHERE role_name = $1',
        [login(T.bridge)],
      );
      expect(row?.h).toMatch(/^[0-9a-f]{64}$/);

      // Two logins change their password: over the budget, one is found at the next sweep; the
      // other at the one after, while the first (found wrong) is checked again whatever the budget.
      await asTenant(T.bridge2, `ALTER ROLE ${login(T.bridge2)} PASSWORD 'one'`);
      await asTenant(T.bridge3, `ALTER ROLE ${login(T.bridge3)} PASSWORD 'two'`);
      const first = await extra.drift.runNow();
      expect(first?.findings.map((f) => `${f.name}.${f.field}`)).toEqual([`${login(T.bridge2)}.password`]);
      expect(first?.run.summary.notChecked).toEqual([
        { check: 'credentials', reason: expect.stringContaining('1 login(s) not checked') },
      ]);
      const second = await extra.drift.runNow();
      expect(second?.findings.map((f) => `${f.name}.${f.field}`).sort()).toEqual([
        `${login(T.bridge2)}.password`,
        `${login(T.bridge3)}.password`,
      ]);
      expect(second?.run.summary.notChecked).toBeUndefined();
      // A login found wrong is never left out for the budget: changed again, beside another login
      // whose name sorts first, both are checked.
      await asTenant(T.bridge, `ALTER ROLE ${login(T.bridge)} PASSWORD 'three'`);
      const c = new pg.Client({ connectionString: s.adminUrl('postgres') });
      await c.connect();
      await c.query(`ALTER ROLE ${login(T.bridge2)} PASSWORD 'four'`).finally(() => c.end());
      const third = await extra.drift.runNow();
      expect(third?.findings.map((f) => `${f.name}.${f.field}`).sort()).toEqual([
        `${login(T.bridge)}.password`,
        `${login(T.bridge2)}.password`,
        `${login(T.bridge3)}.password`,
      ]);
    } finally {
      await extra.close();
    }
    // The stack's own sweeper repairs them; the stored credentials work again.
    await setPolicy({ mode: 'remediate' });
    try {
      const r = await sweep();
      expect(r.findings.map((f) => [f.field, f.resolution])).toEqual([
        ['password', 'repaired'],
        ['password', 'repaired'],
        ['password', 'repaired'],
      ]);
    } finally {
      await setPolicy({ mode: 'report' });
    }
    for (const slug of [T.bridge, T.bridge2, T.bridge3]) expect(await tenantCanQuery(s, slug)).toBe(true);
    expect((await sweep()).findings).toEqual([]);
  });

  it('reports the check as not possible, and still observes the rest, when pg_authid is refused', async () => {
    const { catalog, tenantSchema } = loadTemplates('templates');
    await s.sql('postgres', `CREATE ROLE drift_no_authid LOGIN PASSWORD 'drift-no-authid'`);
    await s.sql('postgres', 'GRANT CONNECT ON DATABASE postgres TO drift_no_authid');
    const dp = new DataPlane(s.adminUrl(DATA), { maxConnections: 2 });
    const url = new URL(s.adminUrl('postgres'));
    url.username = 'drift_no_authid';
    url.password = 'drift-no-authid';
    // Roles and databases are read on the maintenance sessions: there, an admin that is not a
    // superuser (an RDS master user, say).
    const own = dp.maintenance;
    Object.assign(dp, { maintenance: new pg.Pool({ connectionString: url.toString(), max: 2 }) });
    const detector = new LocalDriftDetector(dp, s.runtime.services.db, catalog, tenantSchema, {
      secrets: { getSecret: () => Promise.reject(new Error('never asked')) },
    });
    try {
      const obs = await detector.observe();
      expect(obs.notChecked).toEqual([
        {
          check: 'credentials',
          reason: expect.stringMatching(/pg_authid is not readable.*permission denied/),
        },
      ]);
      expect(obs.credentials).toBeUndefined();
      expect(obs.roles.get(login(T.bridge))).toMatchObject({ canLogin: true, connectionLimit: 20 });
    } finally {
      await own.end();
      await dp.close();
      await s.sql('postgres', 'REVOKE CONNECT ON DATABASE postgres FROM drift_no_authid');
      await s.sql('postgres', 'DROP ROLE drift_no_authid');
    }
  });
});

describe('orphans', () => {
  it('reports an object that follows Tenantry naming but belongs to no tenant, and never drops it', async () => {
    const ghost = obj('ghost-co');
    await setPolicy({ mode: 'remediate' });
    try {
      await s.sql(DATA, `CREATE SCHEMA ${ghost}`);
      const r = await sweep();
      expect(r.findings).toEqual([
        expect.objectContaining({
          tenantId: null,
          tenantSlug: 'ghost-co',
          resource: 'schema',
          name: `${DATA}.${ghost}`,
          kind: 'unexpected',
          category: 'orphan',
          resolution: 'open',
        }),
      ]);
      expect(
        await superCount(DATA, 'SELECT count(*) AS n FROM pg_namespace WHERE nspname = $1', [ghost]),
      ).toBe(1);
    } finally {
      await s.sql(DATA, `DROP SCHEMA IF EXISTS ${ghost}`);
      await setPolicy({ mode: 'report' });
    }
  });
});

describe('reading the catalogs', () => {
  it('reads a silo in one snapshot, falling back when its bookkeeping tables are missing', async () => {
    const db = 'drift_silo_variants';
    await s.sql('postgres', `CREATE DATABASE ${db}`);
    const c = new pg.Client({ connectionString: s.adminUrl(db) });
    await c.connect();
    try {
      await c.query('CREATE SCHEMA app; CREATE TABLE app.users (id int PRIMARY KEY)');
      // No tenantry_meta at all: the third try, after two failed transactions on the same session.
      const bare = await readSiloCatalog(c);
      expect(bare.relations.map((r) => `${r.name}:${r.kind}`).sort()).toEqual(['users:r', 'users_pkey:i']);
      expect([bare.versions, bare.frozen]).toEqual([[], []]);
      await c.query(`CREATE SCHEMA tenantry_meta;
        CREATE TABLE tenantry_meta.schema_versions (schema_name text PRIMARY KEY, version int NOT NULL);
        INSERT INTO tenantry_meta.schema_versions VALUES ('app', 4)`);
      // Versions but no freeze table: the second try.
      expect((await readSiloCatalog(c)).versions).toEqual([{ schema: 'app', version: 4 }]);
      // The session is usable afterwards: no transaction left open or aborted.
      expect((await c.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
      expect((await c.query('SELECT pg_current_xact_id_if_assigned() AS x')).rows[0].x).toBeNull();
    } finally {
      await c.end();
      await s.sql('postgres', `DROP DATABASE ${db}`);
    }
  });

  it('tells a password from a verifier Postgres made itself, and hashes it as the roles read does', async () => {
    await s.sql('postgres', `CREATE ROLE drift_scram_probe PASSWORD 'pencil'`);
    const c = new pg.Client({ connectionString: s.adminUrl('postgres') });
    await c.connect();
    try {
      const [r] = (
        await c.query<{ v: string }>(
          `SELECT rolpassword AS v FROM pg_authid WHERE rolname = 'drift_scram_probe'`,
        )
      ).rows;
      expect(r?.v).toMatch(/^SCRAM-SHA-256\$4096:/);
      expect(await scramMatches('pencil', r?.v as string)).toBe(true);
      expect(await scramMatches('pencil!', r?.v as string)).toBe(false);
      const { roles, verifiersUnreadable } = await readRoles(c, ['drift_scram_probe']);
      expect(verifiersUnreadable).toBeNull();
      expect(roles.get('drift_scram_probe')?.verifierHash).toBe(verifierHash(r?.v as string));
    } finally {
      await c.end();
      await s.sql('postgres', 'DROP ROLE drift_scram_probe');
    }
  });

  it('fails a sweep cleanly when a shared read fails while the silo pass runs', async () => {
    const { catalog, tenantSchema } = loadTemplates('templates');
    const dp = new DataPlane(s.adminUrl(DATA), { maxConnections: 2 });
    // The control database (keys and secrets) refusing at once, e.g. while it restarts: before, the
    // rejection went unhandled while the databases were listed, and Node ended the process.
    const down = {
      query: () => Promise.reject(Object.assign(new Error('control database down'), { code: '57P01' })),
    };
    const detector = new LocalDriftDetector(dp, down, catalog, tenantSchema);
    try {
      await expect(detector.observe()).rejects.toThrow('control database down');
    } finally {
      await dp.close();
    }
  });
});

describe('the drift API and the job queue', () => {
  it('queues a sweep with POST /v1/drift-runs, runs it in the worker, and lists it', async () => {
    const res = await s.app.inject({ method: 'POST', url: '/v1/drift-runs', headers: auth(s.tokens.sre) });
    expect(res.statusCode).toBe(202);
    const run = res.json() as { id: string; status: string; trigger: string };
    expect(run).toMatchObject({ status: 'queued', trigger: 'api' });
    let got: { status: string; findings: unknown[]; tenantsChecked: number } | undefined;
    for (let i = 0; i < 400; i++) {
      const g = await s.app.inject({
        method: 'GET',
        url: `/v1/drift-runs/${run.id}`,
        headers: auth(s.tokens['sales-ops']),
      });
      expect(g.statusCode).toBe(200);
      got = g.json();
      if (got?.status === 'succeeded' || got?.status === 'failed') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(got).toMatchObject({ status: 'succeeded', findings: [], tenantsChecked: Object.keys(T).length });
    const list = await s.app.inject({
      method: 'GET',
      url: '/v1/drift-runs?limit=2',
      headers: auth(s.tokens.sre),
    });
    expect(list.statusCode).toBe(200);
    expect(list.json().items).toHaveLength(2);
    expect(list.json().items[0].id).toBe(run.id);
    const audit = await s.sql<{ n: string }>(
      s.controlDb,
      `SELECT count(*) AS n FROM audit_log WHERE action = 'drift.run.requested' AND details->>'driftRunId' = $1`,
      [run.id],
    );
    expect(Number(audit[0]?.n)).toBe(1);
  });

  it('answers 404 for an unknown run and 400 for a malformed id', async () => {
    const missing = await s.app.inject({
      method: 'GET',
      url: `/v1/drift-runs/dr_${'0'.repeat(28)}`,
      headers: auth(s.tokens.sre),
    });
    expect(missing.statusCode).toBe(404);
    const bad = await s.app.inject({
      method: 'GET',
      url: '/v1/drift-runs/x;drop',
      headers: auth(s.tokens.sre),
    });
    expect(bad.statusCode).toBe(400);
    const noTenant = await s.app.inject({
      method: 'GET',
      url: '/v1/tenants/no-such/drift',
      headers: auth(s.tokens.sre),
    });
    expect(noTenant.statusCode).toBe(404);
  });

  it('exports findings by kind and resource, and sweep durations, as Prometheus metrics', async () => {
    await s.sql('postgres', `ALTER ROLE ${login(T.bridge)} CONNECTION LIMIT 7`);
    try {
      await sweep();
      const m = (await s.app.inject({ method: 'GET', url: '/metrics' })).body;
      expect(m).toMatch(/tenantry_drift_findings\{kind="changed",resource="role"\} 1\b/);
      expect(m).toMatch(/tenantry_drift_findings\{kind="missing",resource="schema"\} 0\b/);
      expect(m).toMatch(
        /tenantry_drift_sweep_duration_seconds_count\{trigger="manual",outcome="succeeded"\} \d+/,
      );
    } finally {
      await s.sql('postgres', `ALTER ROLE ${login(T.bridge)} CONNECTION LIMIT 20`);
    }
  });

  it('never runs two sweeps at once: a concurrent one returns without running', async () => {
    const [a, b] = await Promise.all([s.drift.runNow(), s.drift.runNow()]);
    expect([a, b].filter((x) => x !== null)).toHaveLength(1);
  });

  it('forgets runs and findings older than the retention, keeping the recent ones', async () => {
    const old = `dr_${'e'.repeat(28)}`;
    await s.sql(
      s.controlDb,
      `INSERT INTO drift_runs (id, trigger, status, target, created_at, started_at, finished_at)
       VALUES ($1, 'schedule', 'succeeded', 'local', now() - interval '40 days', now() - interval '40 days', now() - interval '40 days')`,
      [old],
    );
    await s.sql(
      s.controlDb,
      `INSERT INTO drift_findings (run_id, seq, resource, name, kind, field, category) VALUES ($1, 1, 'role', 'x', 'changed', 'f', 'state')`,
      [old],
    );
    const r = await sweep();
    const left = await s.sql<{ id: string }>(
      s.controlDb,
      'SELECT id FROM drift_runs WHERE id = ANY($1::text[])',
      [[old, r.run.id]],
    );
    expect(left.map((x) => x.id)).toEqual([r.run.id]);
    const findings = await s.sql<{ n: string }>(
      s.controlDb,
      'SELECT count(*) AS n FROM drift_findings WHERE run_id = $1',
      [old],
    );
    expect(Number(findings[0]?.n)).toBe(0);
  });

  it('fails a run left running by a dead process when the next sweep starts', async () => {
    await s.sql(
      s.controlDb,
      `INSERT INTO drift_runs (id, trigger, status, target, started_at) VALUES ($1, 'schedule', 'running', 'local', now())`,
      [`dr_${'f'.repeat(28)}`],
    );
    await sweep();
    const [row] = await s.sql<{ status: string; error: string }>(
      s.controlDb,
      'SELECT status, error FROM drift_runs WHERE id = $1',
      [`dr_${'f'.repeat(28)}`],
    );
    expect(row).toMatchObject({ status: 'failed', error: expect.stringMatching(/interrupted/) });
  });
});
