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
 */
import crypto from 'node:crypto';
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

/** Inputs of a dynamic Postgres resource, resolved. */
export interface PostgresResourceInputs {
  kind: PostgresKind;
  /** JSON of a pg ClientConfig for an admin connection (secret). Not part of the diff: rotating it changes nothing. */
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

const SECRET_OUTPUTS = ['admin', 'password'];

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

async function withClient<T>(admin: string, fn: (db: Queryable) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionTimeoutMillis: 15_000, ...JSON.parse(admin) });
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
      (news.password !== undefined && news.password !== olds.password);
    return { changes, replaces };
  },

  async create(inputs) {
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
