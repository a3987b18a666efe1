/**
 * The Pulumi dynamic provider for Postgres-level resources. It has no SQL of its own: it
 * dispatches to the providers in control-plane/src/providers/postgres, the same ones the
 * local engine calls, so there is exactly one implementation.
 *
 * The engine ships this object to the dynamic-provider host by serializing its closure.
 * Keep it self-contained: npm packages and Node built-ins are imported as whole modules
 * (`import pg from 'pg'`, `import crypto from 'node:crypto'`) so they serialize as
 * `require(...)`; a named import of a built-in function (`import { randomBytes }`) is
 * captured by value and cannot be serialized. tests/stacks/postgres-provider.test.ts
 * serializes it in CI.
 *
 * The admin connection is a reference (AdminRef), never a password: every create, read, update and
 * delete reads the admin secret from Secrets Manager first, so a rotated RDS master password is used
 * at once and the state holds none.
 */
import crypto from 'node:crypto';
import smPkg from '@aws-sdk/client-secrets-manager';
import stsPkg from '@aws-sdk/client-sts';
import type * as pulumi from '@pulumi/pulumi';
import pg from 'pg';
import type { Provider, Queryable } from '../../control-plane/src/providers/postgres/index.js';
import {
  databaseProvider,
  grantsProvider,
  poolMembershipProvider,
  poolProvider,
  roleProvider,
  schemaProvider,
} from '../../control-plane/src/providers/postgres/index.js';

export const POSTGRES_KINDS = ['role', 'schema', 'grants', 'database', 'pool', 'pool-membership'] as const;
export type PostgresKind = (typeof POSTGRES_KINDS)[number];

/**
 * Where the admin credentials are, never what they are: the Secrets Manager secret (an RDS-managed
 * master secret, or the shared cluster's admin secret) is read each time the provider connects, so a
 * rotated master password is used at once, by `read` (refresh, drift) and `delete` (offboarding) too,
 * and no password is kept in the stack's state.
 */
export interface AdminRef {
  /** ARN or name of a secret holding `username` and `password` (and `host`, `port` where `host` is unset here). */
  secretId: string;
  region: string;
  /** Secrets Manager and STS endpoint (an emulator); the SDK's own resolution otherwise. */
  endpoint?: string;
  /** A role to assume before reading the secret (the account tier: it lives in the tenant's account). */
  roleArn?: string;
  host?: string;
  port?: number;
  database: string;
  ssl: boolean;
}

/** Inputs of a dynamic Postgres resource, resolved. */
export interface PostgresResourceInputs {
  kind: PostgresKind;
  /**
   * JSON of an AdminRef: where to connect and which secret holds the admin's credentials. Not part of
   * the diff, except that a state written by an earlier version (a pg ClientConfig with the password)
   * is rewritten as a reference by the next `up`.
   */
  admin: string;
  /** The provider spec, minus the password. */
  spec: Record<string, unknown>;
  /** Role only: generate a password on create and keep it in state (a secret output). */
  generatePassword?: boolean;
  /** Role only: this password (a secret input, e.g. the pool role's from its platform secret). */
  password?: string;
  /**
   * Role only: make the connecting admin a member that inherits the role and may SET ROLE to it,
   * when the admin is not a superuser (the RDS master user never is). CREATE DATABASE … OWNER,
   * CREATE SCHEMA … AUTHORIZATION and the template's SET ROLE need it (PostgreSQL 16+).
   */
  grantToAdmin?: boolean;
}

export interface PostgresResourceOutputs extends PostgresResourceInputs {
  state: unknown;
}

const SECRET_OUTPUTS = ['password'];

function providerFor(kind: PostgresKind): Provider<never, unknown> {
  const table: Record<PostgresKind, Provider<never, unknown>> = {
    role: roleProvider as Provider<never, unknown>,
    schema: schemaProvider as Provider<never, unknown>,
    grants: grantsProvider as Provider<never, unknown>,
    database: databaseProvider as Provider<never, unknown>,
    pool: poolProvider as Provider<never, unknown>,
    'pool-membership': poolMembershipProvider as Provider<never, unknown>,
  };
  const p = table[kind];
  if (!p) throw new Error(`unknown postgres resource kind: ${String(kind)}`);
  return p;
}

/** The identity of a resource: changing it replaces the resource instead of updating it. */
function identityOf(kind: PostgresKind, spec: Record<string, unknown>): string {
  const s = (k: string) => String(spec[k] ?? '');
  switch (kind) {
    case 'role':
    case 'schema':
    case 'database':
      return `${kind}/${s('name')}`;
    case 'grants':
      return `grants/${s('database')}/${s('schema')}/${s('role')}`;
    case 'pool':
      return `pool/${s('database')}/${s('schema')}`;
    case 'pool-membership':
      return `pool-membership/${s('schema')}/${s('tenantId')}`;
  }
}

/** A stored admin connection from before references: a pg ClientConfig, the password in it. */
function isLegacyAdmin(admin: string): boolean {
  try {
    const v = JSON.parse(admin) as Record<string, unknown>;
    return typeof v.secretId !== 'string' && ('password' in v || 'user' in v);
  } catch {
    return false;
  }
}

/** What create and update never write into a state: an admin connection with its password. */
function refuseLegacyAdmin(admin: string): void {
  if (isLegacyAdmin(admin)) {
    throw new Error('the admin connection must reference its secret (secretId), never carry the password');
  }
}

/** The admin connection, its credentials read from the secret now (after assuming `roleArn`, if set). */
async function resolveAdmin(admin: string): Promise<pg.ClientConfig> {
  const parsed = JSON.parse(admin) as AdminRef | pg.ClientConfig;
  // A state written before references: read and delete still connect with it (create and update refuse it).
  if (isLegacyAdmin(admin)) return parsed as pg.ClientConfig;
  const ref = parsed as AdminRef;
  const where = { region: ref.region, ...(ref.endpoint ? { endpoint: ref.endpoint } : {}) };
  let credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined;
  if (ref.roleArn) {
    const sts = new stsPkg.STSClient(where);
    try {
      const r = await sts.send(
        new stsPkg.AssumeRoleCommand({
          RoleArn: ref.roleArn,
          RoleSessionName: 'tenantry-postgres',
          DurationSeconds: 900,
        }),
      );
      const c = r.Credentials;
      if (!c?.AccessKeyId || !c.SecretAccessKey)
        throw new Error(`AssumeRole ${ref.roleArn} returned no credentials`);
      credentials = {
        accessKeyId: c.AccessKeyId,
        secretAccessKey: c.SecretAccessKey,
        ...(c.SessionToken ? { sessionToken: c.SessionToken } : {}),
      };
    } finally {
      sts.destroy();
    }
  }
  const sm = new smPkg.SecretsManagerClient({ ...where, ...(credentials ? { credentials } : {}) });
  let secret: Record<string, unknown>;
  try {
    const res = await sm.send(new smPkg.GetSecretValueCommand({ SecretId: ref.secretId }));
    secret = JSON.parse(res.SecretString ?? '{}') as Record<string, unknown>;
  } finally {
    sm.destroy();
  }
  const { username, password } = secret;
  // Never the value in a message: it is a secret.
  if (typeof username !== 'string' || typeof password !== 'string') {
    throw new Error(`admin secret ${ref.secretId} must hold username and password`);
  }
  const host = ref.host ?? secret.host;
  if (typeof host !== 'string' || host === '')
    throw new Error(`admin secret ${ref.secretId} has no host and none was given`);
  return {
    host,
    port: Number(ref.port ?? secret.port ?? 5432),
    database: ref.database,
    user: username,
    password,
    ssl: ref.ssl ? { rejectUnauthorized: true } : false,
  };
}

async function withClient<T>(admin: string, fn: (db: Queryable) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionTimeoutMillis: 15_000, ...(await resolveAdmin(admin)) });
  await client.connect();
  try {
    return await fn(client as unknown as Queryable);
  } finally {
    await client.end();
  }
}

function specWithPassword(spec: Record<string, unknown>, password: string | undefined): never {
  return (password === undefined ? spec : { ...spec, password }) as never;
}

/**
 * Runs a kind's provider. A role's `grantToAdmin` becomes the shared provider's
 * `grantToSessionUser`: the role provider itself copes with a non-superuser admin (RDS).
 */
async function apply(
  db: Queryable,
  inputs: PostgresResourceInputs,
  password: string | undefined,
  how: 'create' | 'update',
): Promise<unknown> {
  const spec = specWithPassword(
    inputs.kind === 'role' && inputs.grantToAdmin
      ? { ...inputs.spec, grantToSessionUser: true }
      : inputs.spec,
    password,
  );
  return providerFor(inputs.kind)[how](db, spec);
}

export const postgresProvider: pulumi.dynamic.ResourceProvider<
  PostgresResourceInputs,
  PostgresResourceOutputs
> = {
  async check(_olds, news) {
    const failures: { property: string; reason: string }[] = [];
    if (!POSTGRES_KINDS.includes(news.kind))
      failures.push({ property: 'kind', reason: `unknown kind ${news.kind}` });
    if (typeof news.admin !== 'string' || news.admin === '')
      failures.push({ property: 'admin', reason: 'required' });
    else if (isLegacyAdmin(news.admin))
      failures.push({
        property: 'admin',
        reason: 'must reference the admin secret (secretId), never carry the password',
      });
    if (news.spec === null || typeof news.spec !== 'object')
      failures.push({ property: 'spec', reason: 'required' });
    return failures.length > 0 ? { failures } : { inputs: news };
  },

  async diff(_id, olds, news) {
    const replaces: string[] = [];
    if (olds.kind !== news.kind || identityOf(olds.kind, olds.spec) !== identityOf(news.kind, news.spec)) {
      replaces.push('spec');
    }
    const changes =
      replaces.length > 0 ||
      JSON.stringify(olds.spec) !== JSON.stringify(news.spec) ||
      Boolean(olds.generatePassword) !== Boolean(news.generatePassword) ||
      Boolean(olds.grantToAdmin) !== Boolean(news.grantToAdmin) ||
      // A state from before references holds the admin password: the update rewrites it as one.
      isLegacyAdmin(olds.admin) ||
      (news.password !== undefined && news.password !== olds.password);
    return { changes, replaces };
  },

  async create(inputs) {
    refuseLegacyAdmin(inputs.admin);
    const password =
      inputs.password ?? (inputs.generatePassword ? crypto.randomBytes(24).toString('base64url') : undefined);
    const state = await withClient(inputs.admin, (db) => apply(db, inputs, password, 'create'));
    return {
      id: identityOf(inputs.kind, inputs.spec),
      outs: { ...inputs, state, ...(password === undefined ? {} : { password }) },
    };
  },

  /** Refresh: what is really there. A missing object reads as gone, so drift shows as a delete. */
  async read(id, props) {
    if (!props) return {};
    const state = await withClient(props.admin, (db) =>
      providerFor(props.kind).observe(db, props.spec as never),
    );
    if (state === null) return {};
    return { id, props: { ...props, state } };
  },

  async update(_id, olds, news) {
    refuseLegacyAdmin(news.admin);
    // A generated password lives in state: an update converges the role without rotating it.
    const password = news.password ?? (news.generatePassword ? olds.password : undefined);
    const state = await withClient(news.admin, (db) => apply(db, news, password, 'update'));
    return { outs: { ...news, state, ...(password === undefined ? {} : { password }) } };
  },

  async delete(_id, props) {
    await withClient(props.admin, (db) => providerFor(props.kind).delete(db, props.spec as never));
  },
};

export const POSTGRES_SECRET_OUTPUTS = SECRET_OUTPUTS;
