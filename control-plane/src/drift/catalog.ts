import pg from 'pg';
import type { LoginRotation } from '../db/rotations.js';
import type { Queryable } from '../domain/queryable.js';
import { FREEZE_TRIGGERS } from '../providers/postgres/freeze.js';
import { literal } from '../providers/postgres/sql.js';
import type { CredentialStatus } from './credentials.js';

/**
 * The `pg_trigger.tgenabled` state of a freeze guard as freeze.ts creates it (a plain CREATE
 * TRIGGER): 'O', it fires in every ordinary session but not under session_replication_role =
 * replica, which the promotion's copy sets to write past the target placement's own freeze. 'D'
 * (disabled) and 'R' (replica only) guards never fire for a tenant; 'A' (always) would refuse that copy.
 */
export const GUARD_ENABLED = 'O';

const sqlArray = (xs: readonly string[], type = 'text') =>
  `ARRAY[${xs.map((x) => literal(x)).join(', ')}]::${type}[]`;

/**
 * The batched catalog reads of a local-target sweep. Each runs once per sweep (the silo pass once
 * per silo database, the only per-tenant reads, because in-database state lives in each database);
 * never once per tenant. The benchmark runs these same statements alone as its floor.
 */

/**
 * Roles, their attributes, role-level settings (everywhere, and per database) and memberships, and
 * the SHA-256 (hex) of each one's password verifier, computed by the server (shared catalog:
 * maintenance database). Read from pg_authid, which only a superuser may read (the passwords are
 * never returned, only their hash: see credentials.ts); ROLES_NO_AUTHID_SQL is the same read from
 * pg_roles, for an admin refused it.
 */
const rolesSql = (from: 'pg_authid' | 'pg_roles') => `
SELECT r.oid, r.rolname AS name, r.rolcanlogin AS login, r.rolsuper AS super, r.rolbypassrls AS bypassrls,
       r.rolcreaterole AS createrole, r.rolcreatedb AS createdb, r.rolreplication AS replication,
       r.rolconnlimit AS connlimit, s.setconfig AS config, coalesce(m.member_of, '{}') AS member_of,
       ds.db_config, ${from === 'pg_authid' ? `encode(sha256(convert_to(r.rolpassword, 'UTF8')), 'hex')` : 'NULL::text'} AS verifier
  FROM ${from} r
  LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0
  LEFT JOIN (SELECT a.member, array_agg(b.rolname::text ORDER BY b.rolname::text) AS member_of
               FROM pg_auth_members a JOIN pg_roles b ON b.oid = a.roleid
              GROUP BY a.member) m ON m.member = r.oid
  LEFT JOIN (SELECT x.setrole, json_object_agg(d.datname, x.setconfig) AS db_config
               FROM pg_db_role_setting x JOIN pg_database d ON d.oid = x.setdatabase
              GROUP BY x.setrole) ds ON ds.setrole = r.oid
 WHERE r.rolname LIKE 'tenant\\_%' OR r.rolname LIKE 'login\\_%' OR r.rolname = ANY($1::text[])`;
export const ROLES_SQL = rolesSql('pg_authid');
const ROLES_NO_AUTHID_SQL = rolesSql('pg_roles');

/** The verifiers themselves (pg_authid.rolpassword), of the few logins a sweep checks. */
export const VERIFIERS_SQL = `SELECT rolname AS name, rolpassword AS verifier FROM pg_authid WHERE rolname = ANY ($1::text[])`;

/**
 * Every database with its owner and its ACL, parsed here for the holders of CONNECT. (Not
 * aclexplode: it takes time quadratic in the ACL's length, about a second for the shared database's
 * 3,800 grants at 10,000 tenants.)
 */
export const DATABASES_SQL = `
SELECT d.datname AS name, pg_get_userbyid(d.datdba) AS owner, d.datallowconn AS allowconn,
       coalesce(d.datacl, acldefault('d', d.datdba)) AS acl
  FROM pg_database d
 WHERE NOT d.datistemplate OR d.datname LIKE 'tenant\\_%'`;

/**
 * In one database: the schemas Tenantry names (tenant_*, the pool schema, the silo schema), with ACLs
 * and template versions; their tables with owner, RLS flags, ACLs and freeze guards (plus any table
 * owned by a login role Tenantry manages, wherever it lives); the policies of the given schemas;
 * default privileges. ACLs come back in aclitem[] output (`grantee=privs/grantor`) and owners as
 * oids, both resolved client-side: a `::text[]` cast or pg_get_userbyid per row costs the server
 * more than the rows themselves (the tables read took 210 ms with them, 130 ms without).
 */
export const SCHEMAS_SQL = `
SELECT n.nspname AS name, n.nspowner AS owner, n.nspacl AS acl, v.version
  FROM pg_namespace n
  LEFT JOIN tenantry_meta.schema_versions v ON v.schema_name = n.nspname
 WHERE n.nspname LIKE 'tenant\\_%' OR n.nspname = ANY($1::text[])`;

/** The same, for a database whose bookkeeping schema is gone (every version then reads as unknown). */
const SCHEMAS_NO_META_SQL = `
SELECT n.nspname AS name, n.nspowner AS owner, n.nspacl AS acl, NULL::int AS version
  FROM pg_namespace n
 WHERE n.nspname LIKE 'tenant\\_%' OR n.nspname = ANY($1::text[])`;

/**
 * The shared database's tables: Tenantry's schemas, and any table a tenant or the pool role owns
 * anywhere. With each, its freeze guards, and those of them not in the state freeze.ts creates them
 * in (`tgenabled` 'O') as `name=state`: null for almost every table, so the check costs next to nothing.
 */
export const TABLES_SQL = `
SELECT n.nspname AS schema, c.relname AS name, c.relowner AS owner, c.relrowsecurity AS rls,
       c.relforcerowsecurity AS forced, c.relacl AS acl, g.guards, g.guard_states
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN (SELECT tgrelid, array_agg(tgname ORDER BY tgname) AS guards,
                    array_agg(tgname::text || '=' || tgenabled::text ORDER BY tgname)
                      FILTER (WHERE tgenabled <> ${literal(GUARD_ENABLED)}) AS guard_states
               FROM pg_trigger
              WHERE tgname = ANY (${sqlArray(FREEZE_TRIGGERS.all, 'name')}) GROUP BY tgrelid) g ON g.tgrelid = c.oid
 WHERE c.relkind IN ('r', 'p')
   AND (n.nspname LIKE 'tenant\\_%' OR n.nspname = ANY($1::text[])
        OR c.relowner IN (SELECT oid FROM pg_roles WHERE rolname LIKE 'tenant\\_%' OR rolname = ANY($2::text[])))`;

export const POLICIES_SQL = `
SELECT n.nspname AS schema, c.relname AS "table", p.polname AS name, p.polcmd::text AS command,
       p.polpermissive AS permissive, pg_get_expr(p.polqual, p.polrelid) AS using,
       pg_get_expr(p.polwithcheck, p.polrelid) AS with_check,
       array(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END FROM unnest(p.polroles) r ORDER BY 1) AS roles
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1::text[])`;

export const DEFAULT_ACLS_SQL = `
SELECT n.nspname AS schema, d.defaclrole AS owner, d.defaclobjtype AS objtype, d.defaclacl AS acl
  FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace
 WHERE n.nspname LIKE 'tenant\\_%' OR n.nspname = ANY($1::text[])`;

/** Tenants whose writes a placement in this database refuses (promotion and offboarding freezes). */
export const FROZEN_SQL = `
SELECT tenant_id::text AS tenant_id, schema_name AS schema, reason FROM tenantry_meta.frozen_tenants`;

export const POOL_MEMBERS_SQL = `
SELECT tenant_id::text AS tenant_id, slug FROM tenantry_meta.pool_members`;

/** The local key and secret store, read whole: one statement each (no decryption). */
export const SECRETS_SQL = `
SELECT DISTINCT ON (s.name) s.name, s.version, s.key_id, k.alias, k.state, s.created_at
  FROM local_secrets s JOIN local_keys k ON k.key_id = s.key_id
 WHERE s.name LIKE 'tenantry/%'
 ORDER BY s.name, s.version DESC`;

export const KEYS_SQL = `
SELECT alias, key_id FROM local_keys WHERE state = 'enabled' AND alias LIKE 'alias/tenantry/%'`;

/**
 * Credential rotation as the control plane recorded it (login_rotations, migration 0012): each login
 * group's current and previous login and the old one's grace period; and whether a rotation of the
 * pool's shared login is in flight (its logins are then between two states, and not judged).
 */
export const LOGIN_ROTATIONS_SQL = `
SELECT subject, login_group, current_login, previous_login, rotated_at, grace_until, retired_at,
       EXISTS (SELECT 1 FROM operations o WHERE o.kind = 'rotate' AND o.status IN ('queued', 'running')
                  AND (o.params ->> 'subject') = 'pool') AS pool_rotating
  FROM (SELECT NULL) one LEFT JOIN login_rotations ON true`;

/* ------------------------------------------------------------------ parsed shapes */

export interface AclEntry {
  grantee: string; // 'PUBLIC' for the public pseudo-role
  privileges: string[]; // sorted privilege names
}

export interface ObservedRole {
  name: string;
  canLogin: boolean;
  superuser: boolean;
  bypassRls: boolean;
  createRole: boolean;
  createDb: boolean;
  replication: boolean;
  connectionLimit: number;
  settings: Record<string, string>;
  /** Settings for this role in one database only (`ALTER ROLE … IN DATABASE … SET`): database → settings. */
  databaseSettings: Record<string, Record<string, string>>;
  memberOf: string[];
  /** SHA-256 (hex) of its password verifier; null: no password; undefined: pg_authid not readable. */
  verifierHash?: string | null;
}

export interface ObservedDatabase {
  name: string;
  owner: string;
  allowConnections: boolean;
  connect: string[];
}

export interface ObservedSchema {
  name: string;
  owner: string;
  version: number | null;
  acl: AclEntry[];
}

export interface ObservedTable {
  schema: string;
  name: string;
  owner: string;
  rlsEnabled: boolean;
  rlsForced: boolean;
  acl: AclEntry[] | null; // null: the default (owner only)
  /** The write-freeze guard triggers on it (sorted). */
  guards: string[];
  /**
   * Its guards whose `pg_trigger.tgenabled` is not GUARD_ENABLED, by name: 'D' (disabled, as
   * `ALTER TABLE … DISABLE TRIGGER` or `pg_restore --disable-triggers` leave it), 'R' (fires only
   * under session_replication_role = replica) or 'A' (fires always). Empty when every guard is as
   * created.
   */
  guardStates: Readonly<Record<string, string>>;
}

export interface ObservedFreeze {
  tenantId: string;
  schema: string;
  reason: string;
}

export interface ObservedPolicy {
  schema: string;
  table: string;
  name: string;
  command: string;
  permissive: boolean;
  using: string | null;
  withCheck: string | null;
  roles: string[];
}

export interface ObservedDefaultAcl {
  schema: string;
  owner: string;
  objtype: string;
  acl: AclEntry[];
}

/** What one database holds, as far as drift is concerned. */
export interface ObservedDatabaseContents {
  schemas: Map<string, ObservedSchema>;
  /** schema → tables */
  tables: Map<string, ObservedTable[]>;
  /** `schema.table` → policies */
  policies: Map<string, ObservedPolicy[]>;
  /** schema → default ACL rows */
  defaultAcls: Map<string, ObservedDefaultAcl[]>;
  /** Write freezes standing in this database. */
  frozen: ObservedFreeze[];
}

export interface ObservedSecret {
  name: string;
  version: number;
  keyId: string;
  keyAlias: string;
  keyState: string;
  /** When its current version was written (the local store says; a store that does not, leaves it out). */
  createdAt?: Date;
}

/** A login group's last rotation, as login_rotations records it. */
export type ObservedLoginRotation = Pick<
  LoginRotation,
  'group' | 'current' | 'previous' | 'rotatedAt' | 'graceUntil' | 'retiredAt'
>;

export interface ObservedLogins {
  /** By subject: a tenant's id, or `pool`. */
  rotations: Map<string, ObservedLoginRotation>;
  /** A rotation of the pool's shared login is queued or running. */
  poolRotating: boolean;
}

export interface ObservedFleet {
  roles: Map<string, ObservedRole>;
  databases: Map<string, ObservedDatabase>;
  /** database name → contents (the shared data database and each inspected silo) */
  contents: Map<string, ObservedDatabaseContents>;
  /** Silo databases that could not be inspected, with the reason. */
  unreachable: Map<string, string>;
  poolMembers: Map<string, string>;
  secrets: Map<string, ObservedSecret>;
  /** alias → enabled key id */
  keys: Map<string, string>;
  /** Tenantry logins whose password was checked against their stored secret (see credentials.ts). */
  credentials?: Map<string, CredentialStatus>;
  /** Credential rotation as recorded (read from the control database); absent: nothing was read. */
  logins?: ObservedLogins;
  /** When the observation was made (ms epoch): what grace periods and password ages are judged at. */
  observedAt?: number;
  /** Checks this observation could not make, with the reason (recorded in the run's summary). */
  notChecked?: NotChecked[];
}

export interface NotChecked {
  check: 'credentials';
  reason: string;
}

/* ------------------------------------------------------------------ parsing */

const PRIVS: Record<string, string> = {
  a: 'INSERT',
  r: 'SELECT',
  w: 'UPDATE',
  d: 'DELETE',
  D: 'TRUNCATE',
  x: 'REFERENCES',
  t: 'TRIGGER',
  m: 'MAINTAIN',
  X: 'EXECUTE',
  U: 'USAGE',
  C: 'CREATE',
  c: 'CONNECT',
  T: 'TEMPORARY',
  s: 'SET',
  A: 'ALTER SYSTEM',
};

function unquote(s: string): string {
  return s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1).replaceAll('""', '"') : s;
}

/** `grantee=privs/grantor` (grantee empty for PUBLIC; `*` marks a grant option) → one entry per grantee. */
/** Privilege letters (`arwd`, `*` grant options ignored) → sorted names; a fleet repeats a handful. */
const privilegeNames = new Map<string, readonly string[]>();
function privilegesOf(letters: string): readonly string[] {
  let names = privilegeNames.get(letters);
  if (!names) {
    names = [
      ...new Set([...letters].map((ch) => PRIVS[ch]).filter((p): p is string => p !== undefined)),
    ].sort();
    privilegeNames.set(letters, names);
  }
  return names;
}

export function parseAcl(items: string[] | null): AclEntry[] | null {
  if (items === null) return null;
  // Most ACLs hold a few items, where a linear merge beats a map; a database's CONNECT list holds
  // one per tenant role (thousands on the shared database), where a linear merge is quadratic.
  const out: AclEntry[] = [];
  const byGrantee = items.length > 16 ? new Map<string, AclEntry>() : null;
  for (const item of items) {
    const slash = item.lastIndexOf('/');
    const body = slash >= 0 ? item.slice(0, slash) : item;
    const eq = body.lastIndexOf('=');
    if (eq < 0) continue;
    const grantee = eq === 0 ? 'PUBLIC' : unquote(body.slice(0, eq));
    const privileges = privilegesOf(body.slice(eq + 1));
    if (privileges.length === 0) continue;
    const seen = byGrantee ? byGrantee.get(grantee) : out.find((e) => e.grantee === grantee);
    if (!seen) {
      const entry = { grantee, privileges: privileges as string[] };
      out.push(entry);
      byGrantee?.set(grantee, entry);
    } else seen.privileges = [...new Set([...seen.privileges, ...privileges])].sort();
  }
  return out;
}

const TEXT_ARRAY_OID = 1009;
/** Array types whose output the catalog reads split with parseTextArray: text[], name[], aclitem[]. */
const SPLIT_ARRAYS: ReadonlySet<number> = new Set([TEXT_ARRAY_OID, 1003, 1034]);
const genericTextArray = (
  pg.types.getTypeParser as (oid: number, format: 'text') => (raw: string) => string[]
)(TEXT_ARRAY_OID, 'text');

/**
 * A `text[]` value in Postgres' array output. The catalog reads return tens of thousands of them
 * (ACLs, trigger names) whose elements need no quoting; those are split directly, anything else
 * (a quoted or escaped element, NULL, a nested or offset array) goes to pg's generic parser.
 */
export function parseTextArray(raw: string): (string | null)[] {
  if (raw === '{}') return [];
  if (raw.charCodeAt(0) !== 123 /* { */ || /["\\{}]/.test(raw.slice(1, -1))) return genericTextArray(raw);
  return raw
    .slice(1, -1)
    .split(',')
    .map((x) => (x === 'NULL' ? null : x));
}

const CATALOG_TYPES = {
  getTypeParser: (oid: number, format?: 'text' | 'binary') =>
    SPLIT_ARRAYS.has(oid) && format !== 'binary'
      ? parseTextArray
      : (pg.types.getTypeParser as (o: number, f?: string) => unknown)(oid, format),
};

/** A catalog statement, its `text[]` columns parsed by parseTextArray (pg Pool and Client both take a config). */
function catalogQuery<R>(db: Queryable, text: string, values?: unknown[]): Promise<{ rows: R[] }> {
  const q = db as unknown as { query(config: pg.QueryConfig): Promise<{ rows: R[] }> };
  return q.query({ text, ...(values ? { values } : {}), types: CATALOG_TYPES } as pg.QueryConfig);
}

function parseSettings(config: string[] | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of config ?? []) {
    const eq = item.indexOf('=');
    if (eq > 0) out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/* ------------------------------------------------------------------ readers */

/**
 * The tenant and platform roles, and their names by oid: a silo pass reads owners as oids (resolved
 * here, or by roleNamer for a role outside that set).
 */
export interface RolesRead {
  roles: Map<string, ObservedRole>;
  namesByOid: Map<number, string>;
  /** Why the password verifiers could not be read (pg_authid refused); null when they were. */
  verifiersUnreadable: string | null;
}

type RoleRow = {
  oid: number;
  name: string;
  login: boolean;
  super: boolean;
  bypassrls: boolean;
  createrole: boolean;
  createdb: boolean;
  replication: boolean;
  connlimit: number;
  config: string[] | null;
  member_of: string[];
  db_config: Record<string, string[] | null> | null;
  verifier: string | null;
};

const NO_DB_SETTINGS: Record<string, Record<string, string>> = Object.freeze({}) as Record<
  string,
  Record<string, string>
>;

export async function readRoles(db: Queryable, extraRoles: string[]): Promise<RolesRead> {
  let verifiersUnreadable: string | null = null;
  const { rows } = await catalogQuery<RoleRow>(db, ROLES_SQL, [extraRoles]).catch(
    (e: { code?: string; message?: string }) => {
      if (e.code !== '42501') throw e;
      // Not a superuser (an RDS master user, say): everything else is still read.
      verifiersUnreadable = `pg_authid is not readable by the data-plane admin: ${e.message ?? 'permission denied'}`;
      return catalogQuery<RoleRow>(db, ROLES_NO_AUTHID_SQL, [extraRoles]);
    },
  );
  const roles = new Map<string, ObservedRole>();
  const namesByOid = new Map<number, string>();
  for (const r of rows) {
    namesByOid.set(r.oid, r.name);
    let databaseSettings = NO_DB_SETTINGS;
    if (r.db_config) {
      databaseSettings = {};
      for (const [d, config] of Object.entries(r.db_config)) databaseSettings[d] = parseSettings(config);
    }
    roles.set(r.name, {
      name: r.name,
      canLogin: r.login,
      superuser: r.super,
      bypassRls: r.bypassrls,
      createRole: r.createrole,
      createDb: r.createdb,
      replication: r.replication,
      connectionLimit: r.connlimit,
      settings: parseSettings(r.config),
      databaseSettings,
      memberOf: r.member_of,
      ...(verifiersUnreadable === null ? { verifierHash: r.verifier } : {}),
    });
  }
  return { roles, namesByOid, verifiersUnreadable };
}

/** The current verifiers of these roles (only a superuser may read them): role → verifier or null. */
export async function readVerifiers(db: Queryable, roles: string[]): Promise<Map<string, string | null>> {
  const { rows } = await db.query<{ name: string; verifier: string | null }>(VERIFIERS_SQL, [roles]);
  return new Map(rows.map((r) => [r.name, r.verifier]));
}

/**
 * The namer for the owners these databases' contents list: `names` (the tenant and platform roles)
 * plus one lookup for any other role (an object handed to a superuser, say). An oid no role has any
 * more reads as Postgres' own pg_get_userbyid spells it.
 */
export async function roleNamer(
  db: Queryable,
  names: Map<number, string>,
  dbs: DatabaseCatalog[],
): Promise<(oid: number) => string> {
  const missing = [...new Set(dbs.flatMap(ownerOids))].filter((o) => !names.has(o));
  if (missing.length > 0) {
    const { rows } = await db.query<{ oid: number; name: string }>(
      'SELECT oid, rolname AS name FROM pg_roles WHERE oid = ANY($1::oid[])',
      [missing],
    );
    for (const r of rows) names.set(r.oid, r.name);
  }
  return (oid) => names.get(oid) ?? `unknown (OID=${oid})`;
}

export async function readDatabases(db: Queryable): Promise<Map<string, ObservedDatabase>> {
  const { rows } = await catalogQuery<{ name: string; owner: string; allowconn: boolean; acl: string[] }>(
    db,
    DATABASES_SQL,
  );
  return new Map(
    rows.map((r) => [
      r.name,
      {
        name: r.name,
        owner: r.owner,
        allowConnections: r.allowconn,
        connect: (parseAcl(r.acl) ?? [])
          .filter((e) => e.privileges.includes('CONNECT'))
          .map((e) => e.grantee)
          .sort(),
      },
    ]),
  );
}

/** One pass over one database: schemas, tables, policies and default privileges (four statements). */
/* Owners are role oids until resolveDatabase names them. */
type SchemaRow = { name: string; owner: number; acl: string[] | null; version: number | null };
type TableRow = {
  schema: string;
  name: string;
  owner: number;
  rls: boolean;
  forced: boolean;
  acl: string[] | null;
  guards: string[] | null;
  /** `name=state` for each guard not in state GUARD_ENABLED; null when none. */
  guard_states: string[] | null;
};
type FrozenRow = { tenant_id: string; schema: string; reason: string };
type PolicyRow = {
  schema: string;
  table: string;
  name: string;
  command: string;
  permissive: boolean;
  using: string | null;
  with_check: string | null;
  roles: string[];
};
type DefaultRow = { schema: string; owner: number; objtype: string; acl: string[] | null };

/** What one database's catalogs hold, as read: owners still as role oids (see resolveDatabase). */
export interface DatabaseCatalog {
  schemas: SchemaRow[];
  tables: TableRow[];
  policies: PolicyRow[];
  defaults: DefaultRow[];
  frozen: FrozenRow[];
}

/** Every role oid a database's contents name as an owner (for roleNamer). */
function ownerOids(c: DatabaseCatalog): number[] {
  return [
    ...c.schemas.map((r) => r.owner),
    ...c.tables.map((r) => r.owner),
    ...c.defaults.map((r) => r.owner),
  ];
}

/** One pass over one database: schemas, tables, policies and default privileges (four statements). */
export async function readDatabaseContents(
  db: Queryable,
  opts: {
    schemas: string[];
    policySchemas: string[];
    ownerRoles: string[];
    /** True when `db` is a pool (statements may run on parallel sessions); false for one client. */
    parallel?: boolean;
  },
): Promise<DatabaseCatalog> {
  // Independent statements: on a pool they run in parallel sessions; on one client, one after another.
  const reads = [
    () =>
      catalogQuery<SchemaRow>(db, SCHEMAS_SQL, [opts.schemas]).catch((e: { code?: string }) => {
        if (e.code !== '42P01' && e.code !== '3F000') throw e;
        return catalogQuery<SchemaRow>(db, SCHEMAS_NO_META_SQL, [opts.schemas]);
      }),
    () => catalogQuery<TableRow>(db, TABLES_SQL, [opts.schemas, opts.ownerRoles]),
    () =>
      opts.policySchemas.length > 0
        ? catalogQuery<PolicyRow>(db, POLICIES_SQL, [opts.policySchemas])
        : Promise.resolve({ rows: [] as PolicyRow[] }),
    () => catalogQuery<DefaultRow>(db, DEFAULT_ACLS_SQL, [opts.schemas]),
    () =>
      db.query<FrozenRow>(FROZEN_SQL).catch((e: { code?: string }) => {
        if (e.code !== '42P01' && e.code !== '3F000') throw e;
        return { rows: [] as FrozenRow[] }; // no freeze support in this database yet
      }),
  ] as const;
  let results: unknown[];
  if (opts.parallel) results = await Promise.all(reads.map((r) => r()));
  else {
    results = [];
    for (const r of reads) results.push(await r());
  }
  const [schemas, tables, policies, defaults, frozen] = results as [
    { rows: SchemaRow[] },
    { rows: TableRow[] },
    { rows: PolicyRow[] },
    { rows: DefaultRow[] },
    { rows: FrozenRow[] },
  ];
  return {
    schemas: schemas.rows,
    tables: tables.rows,
    policies: policies.rows,
    defaults: defaults.rows,
    frozen: frozen.rows,
  };
}

const NO_GUARD_STATES: Readonly<Record<string, string>> = Object.freeze({});
/** `name=state` items → name → state (one shared empty object for the usual table, all guards as created). */
export function parseGuardStates(items: readonly string[] | null): Readonly<Record<string, string>> {
  if (!items || items.length === 0) return NO_GUARD_STATES;
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.lastIndexOf('=');
    if (eq > 0) out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/** A database's contents with its owners named (`roleName` maps every oid ownerOids lists). */
export function resolveDatabase(
  c: DatabaseCatalog,
  roleName: (oid: number) => string,
): ObservedDatabaseContents {
  const { schemas, tables, policies, defaults, frozen } = c;
  const out: ObservedDatabaseContents = {
    schemas: new Map(),
    tables: new Map(),
    policies: new Map(),
    defaultAcls: new Map(),
    frozen: frozen.map((r) => ({ tenantId: r.tenant_id, schema: r.schema, reason: r.reason })),
  };
  for (const r of schemas) {
    out.schemas.set(r.name, {
      name: r.name,
      owner: roleName(r.owner),
      version: r.version,
      acl: parseAcl(r.acl) ?? [],
    });
  }
  for (const r of tables) {
    const list = out.tables.get(r.schema) ?? [];
    list.push({
      schema: r.schema,
      name: r.name,
      owner: roleName(r.owner),
      rlsEnabled: r.rls,
      rlsForced: r.forced,
      acl: parseAcl(r.acl),
      guards: r.guards ?? [],
      guardStates: parseGuardStates(r.guard_states),
    });
    out.tables.set(r.schema, list);
  }
  for (const r of policies) {
    const key = `${r.schema}.${r.table}`;
    const list = out.policies.get(key) ?? [];
    list.push({
      schema: r.schema,
      table: r.table,
      name: r.name,
      command: r.command,
      permissive: r.permissive,
      using: r.using,
      withCheck: r.with_check,
      roles: r.roles,
    });
    out.policies.set(key, list);
  }
  for (const r of defaults) {
    const list = out.defaultAcls.get(r.schema) ?? [];
    list.push({ schema: r.schema, owner: roleName(r.owner), objtype: r.objtype, acl: parseAcl(r.acl) ?? [] });
    out.defaultAcls.set(r.schema, list);
  }
  return out;
}

/**
 * A silo pass: six plain statements in one simple-protocol round trip and one repeatable-read
 * transaction, on a fresh session (the benchmark's floor runs them too). A fresh backend builds its
 * catalog caches as it goes, so what a statement costs there is mostly what it makes the backend
 * look up: joins, `LIKE`, `= ANY`, casts and pg_get_userbyid each cost planning and cache fills.
 * These read whole (small) catalogs with no filter, owners as oids and ACLs in aclitem[] output,
 * and leave the filtering to siloDatabase(): about a fifth less CPU per silo than filtered joins.
 */
const SILO_STATEMENTS = {
  namespaces: 'SELECT oid, nspname AS name, nspowner AS owner, nspacl AS acl FROM pg_namespace',
  // User relations only (a schema created after initdb has an oid >= 16384, FirstNormalObjectId).
  relations: `SELECT oid, relnamespace AS ns, relname AS name, relkind AS kind, relowner AS owner,
       relrowsecurity AS rls, relforcerowsecurity AS forced, relacl AS acl FROM pg_class WHERE relnamespace >= 16384`,
  triggers: 'SELECT tgrelid AS rel, tgname AS name, tgenabled AS enabled FROM pg_trigger',
  defaults: `SELECT defaclnamespace AS ns, defaclrole AS owner, defaclobjtype AS objtype, defaclacl AS acl
  FROM pg_default_acl`,
  versions: 'SELECT schema_name AS schema, version FROM tenantry_meta.schema_versions',
  frozen: 'SELECT tenant_id, schema_name AS schema, reason FROM tenantry_meta.frozen_tenants',
} as const;

/**
 * Silo sessions in flight at once. The silo pass is CPU-bound on the data-plane server (a fork and
 * a cold backend per silo); 8 was as fast as 16 on two cores (2.35 against 2.5 s at 200 silos) and
 * holds half the connection slots.
 */
export const SILO_CONCURRENCY = 8;

type SiloVariant = 'full' | 'no-freeze' | 'no-meta';

/** The statements of a silo pass, as one string; a database older than the freeze support, or without Tenantry's bookkeeping, gets fewer. */
export function siloContentsSql(variant: SiloVariant = 'full', afterError = false): string {
  const S = SILO_STATEMENTS;
  return [
    // A failed try leaves its transaction open and aborted on this session.
    ...(afterError ? ['ROLLBACK'] : []),
    // One snapshot for all six reads: a table, its schema and its guards as of one moment.
    'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY',
    S.namespaces,
    S.relations,
    S.triggers,
    S.defaults,
    ...(variant !== 'no-meta' ? [S.versions] : []),
    ...(variant === 'full' ? [S.frozen] : []),
    'COMMIT',
  ].join(';\n');
}

/** What a silo pass read: whole catalogs, owners as role oids. */
export interface SiloCatalog {
  namespaces: { oid: number; name: string; owner: number; acl: string[] | null }[];
  relations: {
    oid: number;
    ns: number;
    name: string;
    kind: string;
    owner: number;
    rls: boolean;
    forced: boolean;
    acl: string[] | null;
  }[];
  /** `enabled` is pg_trigger.tgenabled ('O', 'D', 'R' or 'A'); absent in older readings. */
  triggers: { rel: number; name: string; enabled?: string }[];
  defaults: { ns: number; owner: number; objtype: string; acl: string[] | null }[];
  versions: { schema: string; version: number | null }[];
  frozen: FrozenRow[];
}

/** One round trip on a fresh session; a missing bookkeeping table costs a second try. */
export async function readSiloCatalog(db: Queryable): Promise<SiloCatalog> {
  const run = (variant: SiloVariant, afterError = false) =>
    catalogQuery(db, siloContentsSql(variant, afterError)) as unknown as Promise<
      { command: string; rows: Record<string, unknown>[] }[]
    >;
  const missing = (e: { code?: string }) => e.code === '42P01' || e.code === '3F000';
  const results = await run('full').catch((e: { code?: string }) => {
    if (!missing(e)) throw e;
    return run('no-freeze', true).catch((e2: { code?: string }) => {
      if (!missing(e2)) throw e2;
      return run('no-meta', true);
    });
  });
  const [namespaces, relations, triggers, defaults, versions, frozen] = results
    .filter((r) => r.command === 'SELECT')
    .map((r) => r.rows);
  return {
    namespaces: (namespaces ?? []) as SiloCatalog['namespaces'],
    relations: (relations ?? []) as SiloCatalog['relations'],
    triggers: (triggers ?? []) as SiloCatalog['triggers'],
    defaults: (defaults ?? []) as SiloCatalog['defaults'],
    versions: (versions ?? []) as SiloCatalog['versions'],
    frozen: (frozen ?? []) as FrozenRow[],
  };
}

const GUARD_NAMES: ReadonlySet<string> = new Set(FREEZE_TRIGGERS.all);
const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * A silo pass's rows filtered as the shared database's reads filter in SQL: the schemas Tenantry
 * names (tenant_*, and `schemas`) with their versions and default privileges, and the tables of
 * `schemas` with their freeze guards (sorted as Postgres sorts names).
 */
export function siloDatabase(c: SiloCatalog, schemas: string[]): DatabaseCatalog {
  const named = (n: string) => n.startsWith('tenant_') || schemas.includes(n);
  const nsName = new Map(c.namespaces.map((n) => [n.oid, n.name]));
  const version = new Map(c.versions.map((v) => [v.schema, v.version]));
  const guards = new Map<number, string[]>();
  const states = new Map<number, string[]>();
  for (const t of c.triggers) {
    if (!GUARD_NAMES.has(t.name)) continue;
    const list = guards.get(t.rel);
    if (list) list.push(t.name);
    else guards.set(t.rel, [t.name]);
    if (t.enabled !== undefined && t.enabled !== GUARD_ENABLED) {
      const off = states.get(t.rel);
      if (off) off.push(`${t.name}=${t.enabled}`);
      else states.set(t.rel, [`${t.name}=${t.enabled}`]);
    }
  }
  const tables: TableRow[] = [];
  for (const r of c.relations) {
    const schema = nsName.get(r.ns);
    if ((r.kind !== 'r' && r.kind !== 'p') || schema === undefined || !schemas.includes(schema)) continue;
    const { name, owner, rls, forced, acl } = r;
    tables.push({
      schema,
      name,
      owner,
      rls,
      forced,
      acl,
      guards: (guards.get(r.oid) ?? []).sort(byCodeUnit),
      guard_states: states.get(r.oid)?.sort(byCodeUnit) ?? null,
    });
  }
  const defaults: DefaultRow[] = [];
  for (const { ns, owner, objtype, acl } of c.defaults) {
    const schema = nsName.get(ns);
    if (schema !== undefined && named(schema)) defaults.push({ schema, owner, objtype, acl });
  }
  return {
    schemas: c.namespaces
      .filter((n) => named(n.name))
      .map(({ name, owner, acl }) => ({ name, owner, acl, version: version.get(name) ?? null })),
    tables,
    policies: [], // a silo has no policies
    defaults,
    frozen: c.frozen,
  };
}

export async function readPoolMembers(db: Queryable): Promise<Map<string, string>> {
  const { rows } = await db
    .query<{ tenant_id: string; slug: string }>(POOL_MEMBERS_SQL)
    .catch((e: { code?: string }) => {
      if (e.code === '42P01' || e.code === '3F000') return { rows: [] }; // bookkeeping not there yet
      throw e;
    });
  return new Map(rows.map((r) => [r.tenant_id, r.slug]));
}

export async function readSecrets(db: Queryable): Promise<Map<string, ObservedSecret>> {
  const { rows } = await db.query<{
    name: string;
    version: number;
    key_id: string;
    alias: string;
    state: string;
    created_at: Date;
  }>(SECRETS_SQL);
  return new Map(
    rows.map((r) => [
      r.name,
      {
        name: r.name,
        version: r.version,
        keyId: r.key_id,
        keyAlias: r.alias,
        keyState: r.state,
        createdAt: r.created_at,
      },
    ]),
  );
}

/** Credential rotation as the control database records it (one statement). */
export async function readLoginRotations(db: Queryable): Promise<ObservedLogins> {
  const { rows } = await db.query<{
    subject: string | null;
    login_group: string;
    current_login: string;
    previous_login: string | null;
    rotated_at: Date;
    grace_until: Date | null;
    retired_at: Date | null;
    pool_rotating: boolean;
  }>(LOGIN_ROTATIONS_SQL);
  const rotations = new Map<string, ObservedLoginRotation>();
  for (const r of rows) {
    if (r.subject === null) continue; // no rotation recorded yet (the one row of the outer join)
    rotations.set(r.subject, {
      group: r.login_group,
      current: r.current_login,
      previous: r.previous_login,
      rotatedAt: r.rotated_at,
      graceUntil: r.grace_until,
      retiredAt: r.retired_at,
    });
  }
  return { rotations, poolRotating: rows[0]?.pool_rotating ?? false };
}

export async function readKeys(db: Queryable): Promise<Map<string, string>> {
  const { rows } = await db.query<{ alias: string; key_id: string }>(KEYS_SQL);
  return new Map(rows.map((r) => [r.alias, r.key_id]));
}
