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
  ident,
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
 * The statement LocalEngine.bootstrap runs for its owner role, for a role of the stack: a
 * superuser needs nothing; from PostgreSQL 16 membership alone no longer lets its holder SET
 * ROLE or inherit, so both are granted explicitly.
 */
async function grantRoleToAdmin(db: Queryable, role: string): Promise<void> {
  const { rows } = await db.query<{ su: boolean; version: number }>(
    `SELECT r.rolsuper AS su, current_setting('server_version_num')::int AS version
       FROM pg_roles r WHERE r.rolname = current_user`,
  );
  const me = rows[0];
  if (!me || me.su) return;
  const options = me.version >= 160000 ? ' WITH INHERIT TRUE, SET TRUE' : '';
  await db.query(`GRANT ${ident(role)} TO CURRENT_USER${options}`);
}

/** Role attributes a non-superuser may not name in ALTER ROLE, not even to deny them, unless it holds them (PostgreSQL 16+). */
const HELD_ATTRIBUTES = [
  ['SUPERUSER', 'rolsuper'],
  ['REPLICATION', 'rolreplication'],
  ['BYPASSRLS', 'rolbypassrls'],
] as const;

/**
 * The session as the role provider may use it. The shared provider states `NOSUPERUSER
 * NOREPLICATION NOBYPASSRLS` on every role, which PostgreSQL refuses from an admin without those
 * attributes (the RDS master user has none of them). For such an admin the denials it may not
 * state are left out of `ALTER ROLE … WITH`; `checkRole` then verifies the role holds none of them.
 * Interim: the shared provider should decide this itself (see docs/aws.md).
 */
async function roleSession(db: Queryable): Promise<Queryable> {
  const { rows } = await db.query<Record<(typeof HELD_ATTRIBUTES)[number][1], boolean>>(
    'SELECT rolsuper, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = current_user',
  );
  const me = rows[0];
  if (!me || me.rolsuper) return db;
  const unsayable = HELD_ATTRIBUTES.filter(([, col]) => !me[col]).map(([attr]) => ` NO${attr}`);
  return {
    query: (text, params) =>
      db.query(
        text.replace(/ALTER ROLE "[a-z0-9_]+" WITH [^;\n]*/g, (stmt) =>
          unsayable.reduce((s, attr) => s.replace(attr, ''), stmt),
        ),
        params,
      ),
  };
}

function checkRole(name: string, state: unknown): void {
  const s = state as { superuser?: boolean; bypassRls?: boolean } | null;
  if (s?.superuser || s?.bypassRls) {
    throw new Error(`role ${name} is SUPERUSER or BYPASSRLS and this admin cannot take that away`);
  }
}

/** Runs a kind's provider, then what the shared providers leave to the caller (the admin's membership). */
async function apply(
  db: Queryable,
  inputs: PostgresResourceInputs,
  password: string | undefined,
  how: 'create' | 'update',
): Promise<unknown> {
  const spec = specWithPassword(inputs.spec, password);
  if (inputs.kind !== 'role') return providerFor(inputs.kind)[how](db, spec);
  const name = String(inputs.spec.name);
  const state = await roleProvider[how](await roleSession(db), spec);
  checkRole(name, state);
  if (inputs.grantToAdmin) await grantRoleToAdmin(db, name);
  return state;
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
    await withClient(props.admin, async (db) => {
      if (props.kind === 'role') {
        // DROP OWNED needs the role's privileges, which a non-superuser admin holds only once granted.
        const spec = props.spec as never;
        if (await roleProvider.observe(db, spec)) await grantRoleToAdmin(db, String(props.spec.name));
        return roleProvider.delete(db, spec);
      }
      return providerFor(props.kind).delete(db, props.spec as never);
    });
  },
};

export const POSTGRES_SECRET_OUTPUTS = SECRET_OUTPUTS;
