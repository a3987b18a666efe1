/**
 * A bridge, a silo and an account tenant's suspension, reactivation and limit overrides on the aws target, on real
 * Postgres: the engine's own steps, with what cannot run here simulated, and only that. The Pulumi `up`
 * is a runner that applies the tenant's login role as the stack would: the spec the programs build
 * (`tenantLoginRoleSpec`, from the job's input), through the stacks' dynamic provider itself
 * (`postgresProvider.update`, which reads the admin secret from Secrets Manager on the AWS API emulator,
 * moto_server). The shared cluster is a database of the test server whose admin is like an RDS master
 * user (no SUPERUSER; `pg_signal_backend`, which rds_superuser holds); the silo's "instance" is another
 * database of the same server, reached through its "master secret" by ARN, as the engine does on RDS.
 * The account tenant's instance is one more database, its master secret inside a member account vended
 * on the emulator: the stack's provider and the engine both read it through the account's role.
 */
import { CreateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { effectiveLimits } from '../../control-plane/src/domain/lifecycle.js';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import type { StepContext, StepTenant } from '../../control-plane/src/domain/ports.js';
import { AwsEngine } from '../../control-plane/src/engine/aws.js';
import type { PulumiJob, PulumiResult } from '../../control-plane/src/engine/pulumi/runner.js';
import {
  databaseProvider,
  grantsProvider,
  roleProvider,
  schemaProvider,
} from '../../control-plane/src/providers/postgres/index.js';
import { postgresProvider } from '../../stacks/common/postgres-provider.js';
import { DEFAULT_TEMPLATES_DIR, loadProgramTemplates } from '../../stacks/common/templates.js';
import {
  SILO_SCHEMA,
  tenantLoginRoleSpec,
  tenantOwnerRoleName,
} from '../../stacks/common/tenant-postgres.js';
import { type MemberAccount, vendMemberAccount } from '../aws/helpers/accounts.js';
import { MOTO_REGION, skipReason, useMoto } from '../aws/helpers/moto.js';
import { TEST_PLATFORM } from '../fixtures/platform.js';
import {
  adminUrl,
  createOwnerRole,
  dropDatabases,
  rand,
  superQuery,
  withClient,
} from '../helpers/runtime.js';

const moto = useMoto({ reset: false });
const { catalog, tenantSchema: template } = loadProgramTemplates(DEFAULT_TEMPLATES_DIR);
const id = rand(4);
const SHARED_DB = `ss_${id}`;
const SHARED_ADMIN = `sadm_${id}`;
const SHARED_ADMIN_PASSWORD = `a-${rand(12)}`;
const SHARED_SECRET = `tenantry/platform/shared-cluster-admin-${id}`;
const port = Number(new URL(adminUrl()).port);
const sm = () => new SecretsManagerClient({ region: MOTO_REGION });
const uuid = () => crypto.randomUUID();

type OwnLoginTier = 'bridge' | 'silo' | 'account';
type Tenant = StepTenant & { tier: OwnLoginTier };
const passwords = new Map<string, string>();
let siloSecretArn = '';
/** The account tenant's member account and its instance's master secret, which is in that account. */
let member: MemberAccount;
let accountSecretArn = '';

/** Where a tenant's placement is: its database and schema. */
const placementOf = (t: Tenant) =>
  t.tier === 'bridge'
    ? { database: SHARED_DB, schema: tenantObjectName(t.slug) }
    : { database: tenantObjectName(t.slug), schema: SILO_SCHEMA };

/** The admin reference the stacks give the dynamic provider (postgres-provider.ts AdminRef). */
const adminRef = (t: Tenant) =>
  JSON.stringify({
    secretId: { bridge: SHARED_SECRET, silo: siloSecretArn, account: accountSecretArn }[t.tier],
    ...(t.tier === 'account' ? { roleArn: member.roleArn } : {}),
    region: MOTO_REGION,
    endpoint: moto.endpoint(),
    host: '127.0.0.1',
    port,
    database: placementOf(t).database,
    ssl: false,
  });

const asAdmin = (database: string) => {
  const u = new URL(adminUrl(database));
  u.username = SHARED_ADMIN;
  u.password = SHARED_ADMIN_PASSWORD;
  return u.toString();
};

/** A session of the tenant's login, as the data plane opens one. */
async function login(t: Tenant): Promise<pg.Client> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    database: placementOf(t).database,
    user: tenantObjectName(t.slug),
    password: passwords.get(t.slug),
  });
  c.on('error', () => {}); // a terminated session's late error
  await c.connect();
  return c;
}

/** The `up` of a tenant's stack, for its login role: the dynamic provider's update of the program's spec. */
const jobs: PulumiJob[] = [];
async function runner(job: PulumiJob): Promise<PulumiResult> {
  jobs.push(job);
  const t = { id: job.input.tenantId, slug: job.input.slug, tier: job.input.tier } as Tenant;
  const { database, schema } = placementOf(t);
  const inputs = {
    kind: 'role' as const,
    admin: adminRef(t),
    spec: tenantLoginRoleSpec({
      slug: t.slug,
      schema,
      limits: effectiveLimits(catalog.tiers[t.tier].role, job.input.limitOverrides),
      suspended: job.input.suspended === true,
    }),
    generatePassword: true,
  };
  const olds = { ...inputs, spec: {}, password: passwords.get(t.slug), state: {} };
  await postgresProvider.update!(tenantObjectName(t.slug), olds, inputs);
  return {
    summary: {},
    outputs: {
      tier: t.tier,
      host: '127.0.0.1',
      port,
      database,
      schema,
      user: tenantObjectName(t.slug),
      ...(t.tier === 'silo' ? { adminSecretArn: siloSecretArn } : {}),
      ...(t.tier === 'account' ? { adminSecretArn: accountSecretArn, accountId: member.accountId } : {}),
    },
  };
}

/** A tenant as its onboarding's `up` leaves it: owner and login roles, schema and grants. */
async function provision(tier: OwnLoginTier): Promise<Tenant> {
  const t: Tenant = { id: uuid(), slug: `${tier}-${rand(6)}`, tier, templateVersion: 1 };
  const { database, schema } = placementOf(t);
  const name = tenantObjectName(t.slug);
  const owner = tenantOwnerRoleName(t.slug);
  const limits = catalog.tiers[tier].role;
  const password = `p-${rand(16)}`;
  passwords.set(t.slug, password);
  await withClient(asAdmin(SHARED_DB), async (db) => {
    await createOwnerRole(db, owner, limits);
    await roleProvider.create(db, { ...tenantLoginRoleSpec({ slug: t.slug, schema, limits }), password });
    if (tier !== 'bridge') await databaseProvider.create(db, { name, owner });
  });
  await withClient(asAdmin(database), async (db) => {
    await schemaProvider.create(db, { name: schema, owner, template });
    await grantsProvider.create(db, { database, schema, role: name, owner });
  });
  return t;
}

let engine: AwsEngine;
const made: Tenant[] = [];

beforeAll(async () => {
  if (skipReason) return;
  await superQuery(
    'postgres',
    `CREATE ROLE ${SHARED_ADMIN} LOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE CREATEDB PASSWORD '${SHARED_ADMIN_PASSWORD}'`,
  );
  // What rds_superuser holds: it may end other roles' sessions.
  await superQuery('postgres', `GRANT pg_signal_backend TO ${SHARED_ADMIN}`);
  await superQuery('postgres', `GRANT CONNECT ON DATABASE postgres TO ${SHARED_ADMIN}`);
  await withClient(asAdmin('postgres'), (db) => db.query(`CREATE DATABASE ${SHARED_DB} TEMPLATE template0`));
  const admin = { username: SHARED_ADMIN, password: SHARED_ADMIN_PASSWORD };
  await sm().send(
    new CreateSecretCommand({
      Name: SHARED_SECRET,
      SecretString: JSON.stringify({ ...admin, host: '127.0.0.1', port, dbname: SHARED_DB }),
    }),
  );
  // An RDS-managed master secret: credentials only, the instance's address comes from the stack.
  siloSecretArn = (
    await sm().send(new CreateSecretCommand({ Name: `rds!db-${id}`, SecretString: JSON.stringify(admin) }))
  ).ARN as string;
  member = await vendMemberAccount(`root+susp-${id}@tenants.example.com`);
  accountSecretArn = await member.createSecret(`rds!db-acct-${id}`, admin);
  engine = new AwsEngine({
    backendUrl: 'file:///var/lib/tenantry/state',
    envVars: { PATH: '/usr/bin' },
    aws: {
      region: MOTO_REGION,
      endpoints: { secretsmanager: moto.endpoint(), sts: moto.endpoint(), organizations: moto.endpoint() },
    },
    platform: { ...TEST_PLATFORM, sharedCluster: { adminSecretName: SHARED_SECRET, ssl: false } },
    workspaceRoot: '/var/lib/tenantry/pulumi',
    concurrency: 2,
    timeoutMs: 60_000,
    programVersion: '1.0.0+template.1',
    policyPackDir: null,
    runner,
    siloTls: false, // the test server stands in for the RDS instance, without TLS
  });
  made.push(await provision('bridge'), await provision('silo'), await provision('account'));
}, 120_000);

afterAll(async () => {
  if (skipReason) return;
  await engine?.close();
  const names = made.map((t) => tenantObjectName(t.slug));
  await dropDatabases(
    [SHARED_DB, ...made.filter((t) => t.tier !== 'bridge').map((t) => tenantObjectName(t.slug))],
    [...names, ...made.map((t) => tenantOwnerRoleName(t.slug))],
  );
  // Its CONNECT on `postgres` and its membership of pg_signal_backend go with it.
  await superQuery('postgres', `DROP OWNED BY ${SHARED_ADMIN}`);
  await superQuery('postgres', `DROP ROLE ${SHARED_ADMIN}`);
});

const step = (t: Tenant, kind: 'suspend' | 'reactivate' | 'update', name: string) => {
  const c: StepContext = {
    operationId: `op_${rand(10)}`,
    kind,
    step: name,
    // From the suspension's commit until its reactivation succeeds, the tenant is recorded suspended.
    tenant: kind === 'update' ? t : { ...t, suspended: true },
    signal: new AbortController().signal,
  };
  return engine.runStep(c);
};

const role = async (t: Tenant) =>
  (
    await superQuery<{ login: boolean; limit: number; config: string[] | null }>(
      'postgres',
      `SELECT r.rolcanlogin AS login, r.rolconnlimit AS limit, s.setconfig AS config
         FROM pg_roles r LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0
        WHERE r.rolname = $1`,
      [tenantObjectName(t.slug)],
    )
  )[0];

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `bridge, silo and account suspension on the aws target, through the stack${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    it.each(['bridge', 'silo', 'account'] as const)(
      'suspends the %s tenant: its open session is ended, a new login refused; reactivation gives it back',
      async (tier) => {
        const t = made.find((x) => x.tier === tier)!;
        const held = await login(t);
        expect((await held.query('SELECT 1 AS one')).rows[0]).toEqual({ one: 1 });
        jobs.length = 0;

        const out = await step(t, 'suspend', 'suspend-logins');
        expect(jobs.map((j) => [j.op, j.input.suspended, j.config['tenantry:suspended']?.value])).toEqual([
          ['up', true, 'true'],
        ]);
        expect(out).toMatchObject({ user: tenantObjectName(t.slug), programVersion: engine.programVersion });
        expect((await role(t))?.login).toBe(false);
        // The session opened before the suspension is gone (57P01: terminated by an administrator).
        await expect(held.query('SELECT 1')).rejects.toThrow();
        await held.end().catch(() => undefined);
        await expect(login(t)).rejects.toMatchObject({ code: '28000' });
        // Again, as after a crash: the same.
        await step(t, 'suspend', 'suspend-logins');
        await expect(login(t)).rejects.toMatchObject({ code: '28000' });

        jobs.length = 0;
        await step(t, 'reactivate', 'resume-logins');
        expect(jobs.map((j) => [j.op, j.input.suspended, j.config['tenantry:suspended']?.value])).toEqual([
          ['up', undefined, undefined],
        ]);
        expect((await role(t))?.login).toBe(true);
        const back = await login(t);
        expect((await back.query('SELECT 1 AS one')).rows[0]).toEqual({ one: 1 });
        await back.end();
      },
    );

    it.each(['bridge', 'account'] as const)(
      'applies limit overrides to the %s tenant’s login role through the stack, and an up of the suspended tenant keeps both',
      async (tier) => {
        const t = {
          ...made.find((x) => x.tier === tier)!,
          limits: { connectionLimit: 3, statementTimeoutMs: 2000 },
        };
        await step(t, 'update', 'limits');
        const r = await role(t);
        expect(r).toMatchObject({ login: true, limit: 3 });
        expect(r?.config).toEqual(expect.arrayContaining(['statement_timeout=2000']));
        // A suspended tenant's later `up` (a promotion's, a drift repair's): still NOLOGIN, still 3.
        await engine.runStep({
          operationId: `op_${rand(10)}`,
          kind: 'reconcile',
          step: 'stack-up',
          tenant: { ...t, suspended: true },
          signal: new AbortController().signal,
        });
        expect(await role(t)).toMatchObject({ login: false, limit: 3 });
        await step(t, 'reactivate', 'resume-logins');
        expect(await role(t)).toMatchObject({ login: true, limit: 3 });
      },
    );
  },
);
