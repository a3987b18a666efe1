/**
 * The Postgres dynamic provider (stacks/common/postgres-provider.ts) against a real PostgreSQL, its
 * admin credentials in the AWS API emulator's Secrets Manager as an RDS-managed master secret is:
 * the provider reads the secret each time it connects, so no password is stored and a rotated one is
 * used at once. Skipped, with the reason, where moto_server is missing.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import {
  CreateAccountCommand,
  CreateOrganizationCommand,
  DescribeCreateAccountStatusCommand,
  OrganizationsClient,
} from '@aws-sdk/client-organizations';
import {
  CreateSecretCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { STSClient } from '@aws-sdk/client-sts';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { assumeRole, memberRoleArn } from '../../control-plane/src/aws/accounts.js';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import {
  type PostgresResourceInputs,
  type PostgresResourceOutputs,
  postgresProvider,
} from '../../stacks/common/postgres-provider.js';
import { SILO_SCHEMA, tenantOwnerRoleName } from '../../stacks/common/tenant-postgres.js';
import { MOTO_REGION, skipReason, useMoto } from './helpers/moto.js';

const moto = useMoto({ reset: false });
const sm = () => new SecretsManagerClient({ region: MOTO_REGION });

/**
 * The provider against a real PostgreSQL, connected as an RDS master user would be: a login role
 * with CREATEROLE and CREATEDB but no superuser. Every name carries a random suffix: the cluster
 * is shared with the other test files.
 */
describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `the Postgres dynamic provider on a real cluster, as a non-superuser admin${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    const suffix = randomBytes(4).toString('hex');
    /** A silo tenant's objects, and a tenant whose owner the admin is never granted. */
    const silo = { owner: tenantOwnerRoleName(`t${suffix}`), login: tenantObjectName(`t${suffix}`) };
    const ungranted = { owner: tenantOwnerRoleName(`u${suffix}`), database: tenantObjectName(`u${suffix}`) };
    const poolApp = `pool_app_${suffix}`;
    const master = `rds_master_${suffix}`;
    let masterPassword = randomBytes(12).toString('hex');
    const url = new URL(inject('pgAdminUrl'));
    const su = new pg.Client({ connectionString: url.toString() });
    const limits = {
      connectionLimit: 5,
      statementTimeoutMs: 5_000,
      idleInTransactionSessionTimeoutMs: 5_000,
    };
    const template = loadTemplates(path.resolve('templates')).tenantSchema;
    /** The RDS-managed master secret's stand-in, in the emulator's Secrets Manager. */
    let masterSecretArn = '';
    const admin = (database: string, extra: Record<string, unknown> = {}) =>
      JSON.stringify({
        secretId: masterSecretArn,
        region: MOTO_REGION,
        endpoint: moto.endpoint(),
        host: url.hostname,
        port: Number(url.port),
        database,
        ssl: false,
        ...extra,
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
      if (skipReason) return;
      masterSecretArn = String(
        (
          await sm().send(
            new CreateSecretCommand({
              Name: `rds!db-${suffix}`,
              SecretString: JSON.stringify({ username: master, password: masterPassword }),
            }),
          )
        ).ARN,
      );
      await su.connect();
      await su.query(
        `CREATE ROLE ${master} LOGIN CREATEROLE CREATEDB NOSUPERUSER PASSWORD '${masterPassword}'`,
      );
      // An RDS master may connect to its maintenance database; on this shared test cluster other
      // files' local engines revoke CONNECT on it from PUBLIC, so grant it as RDS would have.
      await su.query(`GRANT CONNECT ON DATABASE postgres TO ${master}`);
    });

    afterAll(async () => {
      if (skipReason) return;
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
    it('keeps no admin password in what it stores, and reads the rotated master password at every call', async () => {
      const owner = tenantOwnerRoleName(`r${suffix}`);
      const outs = await create({
        kind: 'role',
        admin: admin('postgres'),
        spec: { name: owner, ...limits, connectionLimit: 0, login: false },
        grantToAdmin: true,
      });
      expect(JSON.stringify(outs)).not.toContain(masterPassword);
      expect(JSON.parse(outs.admin)).not.toHaveProperty('password');
      // RDS rotates the master password (every 7 days when it manages it): in Postgres and in the secret.
      masterPassword = randomBytes(12).toString('hex');
      await su.query(`ALTER ROLE ${master} PASSWORD '${masterPassword}'`);
      await sm().send(
        new PutSecretValueCommand({
          SecretId: masterSecretArn,
          SecretString: JSON.stringify({ username: master, password: masterPassword }),
        }),
      );
      // A refresh (drift) and an offboarding's delete use the stored state: they log in with the new one.
      const read = await postgresProvider.read?.(`role/${owner}`, outs);
      expect(read?.props).toMatchObject({ kind: 'role', state: expect.objectContaining({ name: owner }) });
      await postgresProvider.delete?.(`role/${owner}`, outs);
      const { rows } = await su.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [owner]);
      expect(rows).toEqual([]);
    });

    it('reads an admin secret in another account through the role it is given (the account tier)', async () => {
      const org = new OrganizationsClient({ region: 'us-east-1' });
      await org.send(new CreateOrganizationCommand({ FeatureSet: 'ALL' })).catch(() => undefined);
      const created = await org.send(
        new CreateAccountCommand({
          Email: `root+pg${suffix}@tenants.example.com`,
          AccountName: `pg${suffix}`,
          RoleName: 'OrganizationAccountAccessRole',
        }),
      );
      const status = await org.send(
        new DescribeCreateAccountStatusCommand({ CreateAccountRequestId: created.CreateAccountStatus?.Id }),
      );
      const roleArn = memberRoleArn(
        String(status.CreateAccountStatus?.AccountId),
        'OrganizationAccountAccessRole',
      );
      const credentials = await assumeRole(new STSClient({ region: MOTO_REGION }), roleArn, 'tenantry-test');
      const inside = new SecretsManagerClient({ region: MOTO_REGION, credentials });
      const arn = String(
        (
          await inside.send(
            new CreateSecretCommand({
              Name: `rds!db-acct-${suffix}`,
              SecretString: JSON.stringify({ username: master, password: masterPassword }),
            }),
          )
        ).ARN,
      );
      const owner = tenantOwnerRoleName(`a${suffix}`);
      const spec = { name: owner, ...limits, connectionLimit: 0, login: false };
      // Without the role, the platform account has no such secret.
      await expect(
        postgresProvider.create({ kind: 'role', admin: admin('postgres', { secretId: arn }), spec }),
      ).rejects.toThrow(/ResourceNotFound|can't find/i);
      await create({
        kind: 'role',
        admin: admin('postgres', { secretId: arn, roleArn }),
        spec,
        grantToAdmin: true,
      });
      const { rows } = await su.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [owner]);
      expect(rows).toHaveLength(1);
    });
  },
);
