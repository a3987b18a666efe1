import { randomBytes } from 'node:crypto';
import path from 'node:path';
import * as pulumi from '@pulumi/pulumi';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import {
  type PostgresResourceInputs,
  type PostgresResourceOutputs,
  postgresProvider,
} from '../../stacks/common/postgres-provider.js';
import { SILO_SCHEMA, tenantOwnerRoleName } from '../../stacks/common/tenant-postgres.js';

const admin = JSON.stringify({
  host: 'db.internal',
  port: 5432,
  database: 'postgres',
  user: 'admin',
  password: 'x',
});

function outs(kind: PostgresResourceOutputs['kind'], spec: Record<string, unknown>): PostgresResourceOutputs {
  return { kind, admin, spec, generatePassword: false, state: {} };
}

describe('the Postgres dynamic provider', () => {
  it('serializes, capturing pg and node:crypto as requires rather than by value', async () => {
    // This is what the engine does when it registers a dynamic resource; a closure that
    // cannot be serialized must fail here, not in the middle of a tenant's onboarding.
    const sf = await pulumi.runtime.serializeFunction(() => postgresProvider);
    expect(sf.text).toContain('require("pg")');
    expect(sf.text).toContain('require("crypto")');
    // The shared providers travel by value: the SQL is theirs, not a copy.
    expect(sf.text).toContain('CREATE ROLE');
    expect(sf.text).toContain('CREATE SCHEMA IF NOT EXISTS');
    expect(sf.text.length).toBeLessThan(200_000);
  });

  it('rejects an unknown kind and a missing admin connection at check time', async () => {
    const check = postgresProvider.check;
    if (!check) throw new Error('check is not implemented');
    const bad = await check(outs('role', {}), {
      ...outs('role', { name: 'r' }),
      kind: 'table' as never,
      admin: '',
    });
    expect(bad.failures?.map((f) => f.property).sort()).toEqual(['admin', 'kind']);
    const good = await check(outs('role', {}), outs('role', { name: 'r' }));
    expect(good.failures).toBeUndefined();
  });

  it('replaces a resource whose identity changes and updates one whose settings change', async () => {
    const diff = postgresProvider.diff;
    if (!diff) throw new Error('diff is not implemented');
    const [a, b] = [tenantObjectName('acme'), tenantObjectName('beta')];
    const role = outs('role', { name: a, connectionLimit: 20 });
    const renamed = await diff(`role/${a}`, role, {
      ...role,
      spec: { name: b, connectionLimit: 20 },
    });
    expect(renamed).toEqual({ changes: true, replaces: ['spec'] });
    const limited = await diff(`role/${a}`, role, {
      ...role,
      spec: { name: a, connectionLimit: 5 },
    });
    expect(limited).toEqual({ changes: true, replaces: [] });
    const grants = outs('grants', { database: 'd', schema: 's', role: 'r', owner: 'o' });
    const regranted = await diff('g', grants, {
      ...grants,
      spec: { database: 'd', schema: 's', role: 'r2', owner: 'o' },
    });
    expect(regranted.replaces).toEqual(['spec']);
  });

  it('does not treat a rotated admin credential as a change to the resource', async () => {
    const diff = postgresProvider.diff;
    if (!diff) throw new Error('diff is not implemented');
    const schema = outs('schema', { name: tenantObjectName('acme'), owner: tenantOwnerRoleName('acme') });
    const rotated = await diff(`schema/${tenantObjectName('acme')}`, schema, {
      ...schema,
      admin: admin.replace('"x"', '"y"'),
    });
    expect(rotated).toEqual({ changes: false, replaces: [] });
  });
});

/**
 * The provider against a real PostgreSQL, connected as an RDS master user would be: a login role
 * with CREATEROLE and CREATEDB but no superuser. Every name carries a random suffix: the cluster
 * is shared with the other test files.
 */
describe('the Postgres dynamic provider on a real cluster, as a non-superuser admin', () => {
  const suffix = randomBytes(4).toString('hex');
  /** A silo tenant's objects, and a tenant whose owner the admin is never granted. */
  const silo = { owner: tenantOwnerRoleName(`t${suffix}`), login: tenantObjectName(`t${suffix}`) };
  const ungranted = { owner: tenantOwnerRoleName(`u${suffix}`), database: tenantObjectName(`u${suffix}`) };
  const poolApp = `pool_app_${suffix}`;
  const master = `rds_master_${suffix}`;
  const masterPassword = randomBytes(12).toString('hex');
  const url = new URL(inject('pgAdminUrl'));
  const su = new pg.Client({ connectionString: url.toString() });
  const limits = { connectionLimit: 5, statementTimeoutMs: 5_000, idleInTransactionSessionTimeoutMs: 5_000 };
  const template = loadTemplates(path.resolve('templates')).tenantSchema;
  const admin = (database: string) =>
    JSON.stringify({
      host: url.hostname,
      port: Number(url.port),
      database,
      user: master,
      password: masterPassword,
      ssl: false,
    });
  const created: { inputs: PostgresResourceInputs; outs: PostgresResourceOutputs }[] = [];
  async function create(inputs: PostgresResourceInputs): Promise<PostgresResourceOutputs> {
    const { outs } = await postgresProvider.create(inputs);
    created.push({ inputs, outs: outs as PostgresResourceOutputs });
    return outs as PostgresResourceOutputs;
  }
  async function as<T>(
    user: string,
    password: string,
    database: string,
    fn: (c: pg.Client) => Promise<T>,
  ): Promise<T> {
    const c = new pg.Client({ host: url.hostname, port: Number(url.port), user, password, database });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  }

  beforeAll(async () => {
    await su.connect();
    await su.query(
      `CREATE ROLE ${master} LOGIN CREATEROLE CREATEDB NOSUPERUSER PASSWORD '${masterPassword}'`,
    );
    // An RDS master may connect to its maintenance database; on this shared test cluster other
    // files' local engines revoke CONNECT on it from PUBLIC, so grant it as RDS would have.
    await su.query(`GRANT CONNECT ON DATABASE postgres TO ${master}`);
  });

  afterAll(async () => {
    // The pool login's CONNECT grant (made by the superuser) would keep its role from being dropped.
    await su.query(`REVOKE CONNECT ON DATABASE postgres FROM ${poolApp}`).catch(() => undefined);
    for (const { outs } of created.reverse()) {
      await postgresProvider.delete?.('', outs).catch(() => undefined);
    }
    // Whatever a failed test left of the databases it made (the provider's deletes above may not have run).
    for (const db of [silo.login, ungranted.database]) {
      await su.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(db)} WITH (FORCE)`);
    }
    await su.query(`REVOKE CONNECT ON DATABASE postgres FROM ${master}`).catch(() => undefined);
    await su.query(`DROP OWNED BY ${master} CASCADE`).catch(() => undefined);
    await su.query(`DROP ROLE IF EXISTS ${master}`).catch(() => undefined);
    await su.end();
  });

  it('creates a NOLOGIN owner the admin can act as, so CREATE DATABASE … OWNER, the schema and the grants succeed', async () => {
    const { owner, login } = silo;
    await create({
      kind: 'role',
      admin: admin('postgres'),
      spec: { name: owner, ...limits, connectionLimit: 0, login: false },
      grantToAdmin: true,
    });
    const role = await create({
      kind: 'role',
      admin: admin('postgres'),
      spec: { name: login, ...limits, searchPath: [SILO_SCHEMA] },
      generatePassword: true,
    });
    await create({ kind: 'database', admin: admin('postgres'), spec: { name: login, owner } });
    await create({ kind: 'schema', admin: admin(login), spec: { name: SILO_SCHEMA, owner, template } });
    await create({
      kind: 'grants',
      admin: admin(login),
      spec: { database: login, schema: SILO_SCHEMA, role: login, owner },
    });

    const { rows } = await su.query<{ rolcanlogin: boolean; member: boolean }>(
      `SELECT r.rolcanlogin, pg_has_role($2, r.oid, 'SET') AS member FROM pg_roles r WHERE r.rolname = $1`,
      [owner, master],
    );
    expect(rows[0]).toEqual({ rolcanlogin: false, member: true });
    // 24 random bytes, base64url.
    expect(role.password).toMatch(/^[A-Za-z0-9_-]{32}$/);
    // The tenant's login role connects with the generated password and lands in its schema.
    const seen = await as(login, String(role.password), login, async (c) => {
      const sp = await c.query<{ search_path: string }>('SHOW search_path');
      const t = await c.query<{ n: string }>('SELECT count(*) AS n FROM users');
      return { searchPath: sp.rows[0]?.search_path, users: t.rows[0]?.n };
    });
    expect(seen).toEqual({ searchPath: SILO_SCHEMA, users: '0' });
  });

  it('deletes all of it again as the same admin, dependents first, as an offboarding destroy does', async () => {
    const { login } = silo;
    const made = created.filter(({ outs }) => JSON.stringify(outs.spec).includes(login));
    expect(made.map(({ inputs }) => inputs.kind)).toEqual(['role', 'role', 'database', 'schema', 'grants']);
    for (const { outs } of [...made].reverse()) {
      if (outs.kind === 'schema' || outs.kind === 'grants') continue; // they go with the database
      await postgresProvider.delete?.('', outs);
    }
    const { rows } = await su.query<{ n: string }>(
      `SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE $1) + (SELECT count(*) FROM pg_database WHERE datname = $2) AS n`,
      [`${login}%`, login],
    );
    expect(rows[0]?.n).toBe('0');
    created.splice(0, created.length, ...created.filter((c) => !made.includes(c)));
  });

  it('fails to create a database owned by a role the admin was not granted (what RDS did before)', async () => {
    const { owner } = ungranted;
    await create({
      kind: 'role',
      admin: admin('postgres'),
      spec: { name: owner, ...limits, connectionLimit: 0, login: false },
      grantToAdmin: false,
    });
    await expect(
      postgresProvider.create({
        kind: 'database',
        admin: admin('postgres'),
        spec: { name: ungranted.database, owner },
      }),
    ).rejects.toThrow(/must be able to SET ROLE|permission denied|must be member/);
  });

  it('gives the pool login role the given password and the pool schema as its search_path', async () => {
    const app = poolApp;
    const password = randomBytes(12).toString('hex');
    const outs = await create({
      kind: 'role',
      admin: admin('postgres'),
      spec: { name: app, ...limits, searchPath: ['pool'] },
      password,
    });
    expect(outs.password).toBe(password);
    const { rows } = await su.query<{ scram: boolean }>(
      `SELECT rolpassword LIKE 'SCRAM-SHA-256$%' AS scram FROM pg_authid WHERE rolname = $1`,
      [app],
    );
    expect(rows[0]?.scram).toBe(true);
    // Logging in needs CONNECT somewhere; other files lock `postgres` down on this shared cluster.
    await su.query(`GRANT CONNECT ON DATABASE postgres TO ${app}`);
    const searchPath = await as(app, password, 'postgres', async (c) => {
      const r = await c.query<{ search_path: string }>('SHOW search_path');
      return r.rows[0]?.search_path;
    });
    expect(searchPath).toBe('pool');
    // A changed platform secret converges the role on the next update; an unchanged one is no change.
    const diff = postgresProvider.diff;
    if (!diff) throw new Error('diff is not implemented');
    const inputs = created.at(-1)?.inputs as PostgresResourceInputs;
    expect((await diff(app, outs, { ...inputs })).changes).toBe(false);
    expect((await diff(app, outs, { ...inputs, password: 'rotated' })).changes).toBe(true);
  });
});
