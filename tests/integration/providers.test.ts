import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import {
  migratePrivateSchema,
  migratePrivateSchemasAtOnce,
} from '../../control-plane/src/promotion/placement.js';
import {
  applyLogins,
  applySchema,
  databaseProvider,
  dropLogins,
  ensureFreezeSupport,
  grantsProvider,
  grantsSql,
  guardNewTablesSql,
  guardPrivateSchemaSql,
  POLICY_NAME,
  poolMembershipProvider,
  poolProvider,
  roleProvider,
  schemaProvider,
  templateRelations,
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

describe('login roles for a new tenant (fresh)', () => {
  it('creates the group and its logins with plain statements, and converges roles found already there', async () => {
    const group = `gr_${rand(4)}`;
    const logins = [`la_${group}`, `lb_${group}`] as [string, string];
    const spec = {
      group,
      logins,
      current: logins[0],
      ...limits,
      searchPath: ['app'],
      verifier: await scramVerifierAsync('fresh-one'),
    };
    const roles = () =>
      superQuery<{
        n: string;
        login: boolean;
        su: boolean;
        bypass: boolean;
        limit: number;
        cfg: string[] | null;
      }>(
        'postgres',
        `SELECT rolname AS n, rolcanlogin AS login, rolsuper AS su, rolbypassrls AS bypass, rolconnlimit AS limit,
                rolconfig AS cfg FROM pg_roles WHERE rolname = ANY ($1) ORDER BY 1`,
        [[group, ...logins]],
      );
    const members = () =>
      superQuery<{ m: string }>(
        'postgres',
        `SELECT pg_get_userbyid(member) AS m FROM pg_auth_members WHERE roleid = $1::regrole ORDER BY 1`,
        [group],
      );
    const cfg = ['statement_timeout=1234', 'idle_in_transaction_session_timeout=5678', 'search_path=app'];
    const expected = [
      { n: group, login: false, su: false, bypass: false, limit: 7, cfg },
      { n: logins[0], login: true, su: false, bypass: false, limit: 7, cfg },
      { n: logins[1], login: false, su: false, bypass: false, limit: 7, cfg },
    ].sort((a, b) => a.n.localeCompare(b.n));
    await applyLogins(maint, spec, { fresh: true });
    expect(await roles()).toEqual(expected);
    expect((await members()).map((r) => r.m)).toEqual(expect.arrayContaining(logins));
    const c = new pg.Client({
      connectionString: adminUrl(dbName).replace(/\/\/[^@]+@/, `//${logins[0]}:fresh-one@`),
    });
    await c.connect();
    await c.end();
    // Found already there, one of them changed behind our back: the plain statements fail, nothing of
    // them stays, and the roles are converged as found.
    await superQuery('postgres', `ALTER ROLE ${logins[1]} BYPASSRLS CONNECTION LIMIT 99`);
    await applyLogins(maint, spec, { fresh: true });
    expect(await roles()).toEqual(expected);
    await dropLogins(maint, { group, logins, ...limits });
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

  it("names a new schema's relations from the template's probe: the same guards and grants as found in the catalog", async () => {
    // The probe leaves nothing behind (its schema is rolled back) and is read once per template.
    const schemasBefore = await superQuery<{ n: number }>(
      dbName,
      'SELECT count(*)::int AS n FROM pg_namespace',
    );
    const rels = await templateRelations(db, template);
    expect(rels).toEqual({
      tables: ['users', 'documents', 'settings'],
      relations: ['users', 'documents', 'settings'],
      sequences: [],
    });
    expect(await templateRelations(db, template)).toBe(rels);
    expect(await superQuery<{ n: number }>(dbName, 'SELECT count(*)::int AS n FROM pg_namespace')).toEqual(
      schemasBefore,
    );
    await ensureFreezeSupport(db, owner);
    // Two schemas from the template: one guarded and granted by name, one by the catalog search.
    const grantsOf = async (schema: string) =>
      superQuery<{ t: string; g: string; p: string }>(
        dbName,
        `SELECT c.relname AS t, pg_get_userbyid(a.grantee) AS g, a.privilege_type AS p
           FROM pg_class c, aclexplode(c.relacl) a
          WHERE c.relnamespace = $1::regnamespace AND pg_get_userbyid(a.grantee) <> pg_get_userbyid(c.relowner)
          ORDER BY 1, 2, 3`,
        [schema],
      );
    const guardsOf = async (schema: string) =>
      superQuery<{ t: string; g: string }>(
        dbName,
        `SELECT c.relname AS t, g.tgname AS g FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
          WHERE c.relnamespace = $1::regnamespace AND NOT g.tgisinternal ORDER BY 1, 2`,
        [schema],
      );
    const made: { schema: string; role: string }[] = [];
    for (const byName of [true, false]) {
      const name = `s_${rand(4)}`;
      const role = `g_${rand(4)}`;
      await roleProvider.create(maint, { name: role, ...limits });
      const g = { database: dbName, schema: name, role, owner };
      await applySchema(
        db,
        { name, owner, template },
        {
          andThen: byName
            ? [...guardNewTablesSql(name, rels.tables), ...grantsSql(g, rels)]
            : [guardPrivateSchemaSql(name), ...grantsSql(g)],
        },
      );
      made.push({ schema: name, role });
    }
    const [a, b] = made as [{ schema: string; role: string }, { schema: string; role: string }];
    const rename = (rows: { g: string }[], from: string) =>
      rows.map((r) => ({ ...r, g: r.g === from ? 'ROLE' : r.g }));
    expect(rename(await grantsOf(a.schema), a.role)).toEqual(rename(await grantsOf(b.schema), b.role));
    expect(await grantsOf(a.schema)).toContainEqual({ t: 'users', g: a.role, p: 'UPDATE' });
    expect(await guardsOf(a.schema)).toEqual(await guardsOf(b.schema));
    expect((await guardsOf(a.schema)).map((r) => r.t)).toEqual(['documents', 'settings', 'users']);
    // A rerun finds the schema: it converges through the catalog-searching statements, without error.
    await applySchema(
      db,
      { name: a.schema, owner, template },
      {
        andThen: [...guardNewTablesSql(a.schema, rels.tables)],
        andThenExisting: [guardPrivateSchemaSql(a.schema)],
      },
    );
    expect((await guardsOf(a.schema)).map((r) => r.t)).toEqual(['documents', 'settings', 'users']);
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

describe('private schemas migrated in one round trip', () => {
  it('commits each schema on its own: a failure leaves those before it migrated and the rest untouched, and each one again on its own ends at the version with nothing applied twice', async () => {
    const prefix = `atonce_${rand(4)}`;
    const names = [0, 1, 2].map((i) => `${prefix}_${i}`);
    for (const name of names) await schemaProvider.create(db, { name, owner, template });
    const v2 = {
      version: 2,
      name: 'nicknames',
      sql: 'ALTER TABLE users ADD COLUMN nick text;\nALTER TABLE users ADD CONSTRAINT users_email_lower CHECK (email = lower(email))',
    };
    const specs = names.map((name) => ({
      name,
      owner,
      template: { ...template, version: 2, migrations: [...template.migrations, v2] },
    }));
    // The middle schema holds a row version 2 refuses.
    await db.query(
      `INSERT INTO ${names[1]}.users (tenant_id, email) VALUES (gen_random_uuid(), 'Upper@Example.COM')`,
    );
    const versions = async () =>
      (
        await db.query<{ version: number }>(
          'SELECT version FROM tenantry_meta.schema_versions WHERE schema_name = ANY($1) ORDER BY schema_name',
          [names],
        )
      ).rows.map((r) => r.version);

    await expect(
      migratePrivateSchemasAtOnce(
        db,
        specs.map((spec) => ({ spec })),
        2,
      ),
    ).rejects.toThrow(/users_email_lower/);
    expect(await versions()).toEqual([2, 1, 1]);
    // The failed transaction was rolled back: the session is usable, outside any transaction.
    expect(
      (await db.query<{ s: string }>('SELECT pg_current_xact_id_if_assigned() IS NULL AS s')).rows[0]?.s,
    ).toBe(true);

    // Each again on its own, as the rollout does after a failed batch.
    const again = (i: number) =>
      migratePrivateSchema(db, specs[i] as (typeof specs)[number], { from: 1, toVersion: 2 });
    expect(await again(0)).toEqual({ applied: [], version: 2 });
    await expect(again(1)).rejects.toThrow(/users_email_lower/);
    expect(await again(2)).toEqual({ applied: [2], version: 2 });
    expect(await versions()).toEqual([2, 1, 2]);
    const nick = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM information_schema.columns WHERE table_schema = ANY($1) AND table_name = 'users' AND column_name = 'nick'`,
      [names],
    );
    expect(nick.rows[0]?.n).toBe(2);
  });
});
