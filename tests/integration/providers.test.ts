import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import {
  databaseProvider,
  grantsProvider,
  POLICY_NAME,
  poolMembershipProvider,
  poolProvider,
  roleProvider,
  schemaProvider,
} from '../../control-plane/src/providers/postgres/index.js';
import { scramVerifierAsync } from '../../control-plane/src/providers/postgres/scram.js';
import { adminUrl, dropDatabases, rand, superQuery } from '../helpers/runtime.js';

/** Each provider: create twice (idempotent), observe, update converges drift, delete twice (idempotent). */
const { tenantSchema: template } = loadTemplates('templates');
let dbName: string;
let db: pg.Client;
let maint: pg.Client;
const owner = `owner_${rand(4)}`;

beforeAll(async () => {
  dbName = `prov_${rand()}`;
  await superQuery('postgres', `CREATE DATABASE ${dbName}`);
  await superQuery('postgres', `CREATE ROLE ${owner} NOLOGIN`);
  db = new pg.Client({ connectionString: adminUrl(dbName) });
  maint = new pg.Client({ connectionString: adminUrl('postgres') });
  await Promise.all([db.connect(), maint.connect()]);
});
afterAll(async () => {
  await db?.end();
  await maint?.end();
  if (dbName) await dropDatabases([dbName], [owner]);
});

const limits = { connectionLimit: 7, statementTimeoutMs: 1234, idleInTransactionSessionTimeoutMs: 5678 };

describe('role provider', () => {
  it('creates idempotently, stores only a SCRAM verifier, converges drift, and deletes idempotently', async () => {
    const name = `r_${rand(4)}`;
    const spec = { name, ...limits, password: 'first-password', searchPath: ['app'] };
    await roleProvider.create(maint, spec);
    const state = await roleProvider.create(maint, { ...spec, password: undefined });
    expect(state).toMatchObject({ canLogin: true, superuser: false, bypassRls: false, connectionLimit: 7 });
    expect(state.settings).toMatchObject({
      statement_timeout: '1234',
      idle_in_transaction_session_timeout: '5678',
      search_path: 'app',
    });
    const auth = await superQuery<{ rolpassword: string }>(
      'postgres',
      'SELECT rolpassword FROM pg_authid WHERE rolname = $1',
      [name],
    );
    expect(auth[0]!.rolpassword).toMatch(/^SCRAM-SHA-256\$4096:/);
    const c = new pg.Client({
      connectionString: adminUrl(dbName).replace(/\/\/[^@]+@/, `//${name}:first-password@`),
    });
    await c.connect();
    await c.end();
    await superQuery('postgres', `ALTER ROLE ${name} CONNECTION LIMIT 999 BYPASSRLS`);
    expect((await roleProvider.update(maint, spec)).connectionLimit).toBe(7);
    expect((await roleProvider.observe(maint, spec))?.bypassRls).toBe(false);
    await roleProvider.delete(maint, spec);
    await roleProvider.delete(maint, spec);
    expect(await roleProvider.observe(maint, spec)).toBeNull();
  });
});

describe('role provider: a verifier made beforehand', () => {
  it('sets a SCRAM verifier the caller made, and refuses anything else before sending a statement', async () => {
    const name = `r_${rand(4)}`;
    const spec = { name, ...limits, verifier: await scramVerifierAsync('made-ahead'), searchPath: ['app'] };
    await roleProvider.create(maint, spec);
    const c = new pg.Client({
      connectionString: adminUrl(dbName).replace(/\/\/[^@]+@/, `//${name}:made-ahead@`),
    });
    await c.connect();
    await c.end();
    // A plaintext password passed as a verifier would reach the server: refused, and nothing changes.
    const before = await superQuery<{ rolpassword: string }>(
      'postgres',
      'SELECT rolpassword FROM pg_authid WHERE rolname = $1',
      [name],
    );
    await expect(roleProvider.update(maint, { ...spec, verifier: 'plain-text' })).rejects.toThrow(
      `the password of ${name} is not a SCRAM verifier`,
    );
    const after = await superQuery<{ rolpassword: string }>(
      'postgres',
      'SELECT rolpassword FROM pg_authid WHERE rolname = $1',
      [name],
    );
    expect(after[0]!.rolpassword).toBe(before[0]!.rolpassword);
    await roleProvider.delete(maint, spec);
  });
});

describe('database provider', () => {
  it('creates with a NOLOGIN owner and no PUBLIC CONNECT, converges, and deletes idempotently', async () => {
    const spec = { name: `d_${rand(4)}`, owner };
    await databaseProvider.create(maint, spec);
    const state = await databaseProvider.create(maint, spec);
    expect(state).toMatchObject({ owner, allowConnections: true });
    expect(state.connect).not.toContain('PUBLIC');
    await superQuery('postgres', `GRANT CONNECT ON DATABASE ${spec.name} TO PUBLIC`);
    expect((await databaseProvider.observe(maint, spec))?.connect).toContain('PUBLIC');
    expect((await databaseProvider.update(maint, spec)).connect).not.toContain('PUBLIC');
    await databaseProvider.delete(maint, spec);
    await databaseProvider.delete(maint, spec);
    expect(await databaseProvider.observe(maint, spec)).toBeNull();
  });
});

describe('schema and grants providers', () => {
  it('applies the template once, as the owner; grants DML only; revokes PUBLIC; deletes idempotently', async () => {
    const name = `s_${rand(4)}`;
    const role = `g_${rand(4)}`;
    await roleProvider.create(maint, { name: role, ...limits });
    const spec = { name, owner, template };
    await schemaProvider.create(db, spec);
    const state = await schemaProvider.create(db, spec);
    expect(state).toMatchObject({
      owner,
      templateVersion: template.version,
      tables: ['documents', 'settings', 'users'],
    });
    const owners = await superQuery<{ o: string }>(
      dbName,
      `SELECT DISTINCT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relnamespace = $1::regnamespace`,
      [name],
    );
    expect(owners).toEqual([{ o: owner }]);
    const g = { database: dbName, schema: name, role, owner };
    const granted = await grantsProvider.create(db, g);
    expect(granted).toMatchObject({ connect: true, usage: true, create: false, defaultPrivileges: true });
    expect(granted.tables.users).toEqual(['DELETE', 'INSERT', 'SELECT', 'UPDATE']);
    await superQuery(
      dbName,
      `GRANT CREATE ON SCHEMA ${name} TO ${role}; REVOKE UPDATE ON ${name}.users FROM ${role}`,
    );
    const drifted = await grantsProvider.observe(db, g);
    expect(drifted?.create).toBe(true);
    expect(drifted?.tables.users).toEqual(['DELETE', 'INSERT', 'SELECT']);
    const fixed = await grantsProvider.update(db, g);
    expect(fixed.create).toBe(false);
    expect(fixed.tables.users).toEqual(['DELETE', 'INSERT', 'SELECT', 'UPDATE']);
    await grantsProvider.delete(db, g);
    expect((await grantsProvider.observe(db, g))?.usage).toBe(false);
    await schemaProvider.delete(db, spec);
    await schemaProvider.delete(db, spec);
    expect(await schemaProvider.observe(db, spec)).toBeNull();
  });

  it('refuses an identifier that is not a plain lowercase name', async () => {
    await expect(
      schemaProvider.create(db, { name: 'x"; drop database postgres; --', owner, template }),
    ).rejects.toThrow(/invalid SQL identifier/);
  });
});

describe('pool providers', () => {
  it('enables and forces RLS with the one policy, and re-converges a loosened policy', async () => {
    const app = `pa_${rand(4)}`;
    await roleProvider.create(maint, { name: app, ...limits });
    const spec = {
      schema: `pool_${rand(4)}`,
      owner,
      appRole: app,
      database: dbName,
      setting: 'app.tenant_id',
      template,
    };
    const state = await poolProvider.create(db, spec);
    expect(state.tables).toHaveLength(3);
    for (const t of state.tables) {
      expect(t).toMatchObject({ rlsEnabled: true, rlsForced: true, owner });
      expect(t.policies).toHaveLength(1);
      expect(t.policies[0]!.using).toContain("current_setting('app.tenant_id'::text, true)");
      expect(t.policies[0]!.using).not.toMatch(/\bOR\b/);
    }
    await superQuery(
      dbName,
      `ALTER TABLE ${spec.schema}.users NO FORCE ROW LEVEL SECURITY; CREATE POLICY open ON ${spec.schema}.users USING (true)`,
    );
    const loose = await poolProvider.observe(db, spec);
    expect(loose?.tables.find((t) => t.table === 'users')).toMatchObject({ rlsForced: false });
    const fixed = await poolProvider.update(db, spec);
    const users = fixed.tables.find((t) => t.table === 'users')!;
    expect(users).toMatchObject({ rlsForced: true });
    expect(users.policies.map((p) => p.name)).toEqual([POLICY_NAME]);
  });

  it('membership is idempotent and removal deletes only that tenant, child tables first', async () => {
    const app = `pb_${rand(4)}`;
    await roleProvider.create(maint, { name: app, ...limits });
    const schema = `pool_${rand(4)}`;
    await poolProvider.create(db, {
      schema,
      owner,
      appRole: app,
      database: dbName,
      setting: 'app.tenant_id',
      template,
    });
    const [a, b] = [crypto.randomUUID(), crypto.randomUUID()];
    for (const id of [a, b]) {
      const m = {
        schema,
        tenantId: id,
        slug: `m-${id.slice(0, 6)}`,
        setting: 'app.tenant_id',
        deleteBatchSize: 7,
      };
      await poolMembershipProvider.create(db, m);
      await poolMembershipProvider.create(db, m);
      await superQuery(
        dbName,
        `WITH u AS (INSERT INTO ${schema}.users (tenant_id, email) SELECT $1, 'u' || g FROM generate_series(1, 20) g RETURNING id)
         INSERT INTO ${schema}.documents (tenant_id, owner_id, title) SELECT $1, id, 't' FROM u`,
        [id],
      );
    }
    const spec = { schema, tenantId: a, slug: 'x', setting: 'app.tenant_id', deleteBatchSize: 7 };
    await poolMembershipProvider.delete(db, spec);
    await poolMembershipProvider.delete(db, spec);
    expect(await poolMembershipProvider.observe(db, spec)).toBeNull();
    const left = await superQuery<{ tenant_id: string; n: number }>(
      dbName,
      `SELECT tenant_id, count(*)::int AS n FROM (SELECT tenant_id FROM ${schema}.users UNION ALL SELECT tenant_id FROM ${schema}.documents) x GROUP BY 1`,
    );
    expect(left).toEqual([{ tenant_id: b, n: 40 }]);
  });
});
