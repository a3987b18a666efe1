import type { RoleLimits } from '../../domain/tiers.js';
import { parseScramVerifier, scramVerifier } from './scram.js';
import { ident, inTransaction, literal, lockDatabaseAcl, type Queryable } from './sql.js';
import type { Provider } from './types.js';

export interface RoleSpec extends RoleLimits {
  name: string;
  /** Plaintext password; hashed to a SCRAM verifier client-side. Omit to leave the password unchanged. */
  password?: string;
  /** The password's SCRAM verifier, made beforehand (`scramVerifierAsync`), instead of `password`. */
  verifier?: string;
  searchPath?: string[];
  /**
   * LOGIN (default) or NOLOGIN, for owner roles that must never open a session; `unchanged` leaves an
   * existing role's LOGIN as it is (a role it creates starts NOLOGIN): a rotation's logins, whose
   * LOGIN only the rotation changes.
   */
  login?: boolean | 'unchanged';
  /** A role it is a member of (INHERIT), with nothing of its own: a rotation's login in its group. */
  inRole?: string;
  /** Databases in which the role may hold privileges; DROP OWNED runs in each before the role is dropped. */
  cleanupIn?: Queryable[];
  /**
   * Grant the role to the session user (`WITH INHERIT TRUE, SET TRUE` on PostgreSQL 16+) when that
   * user is not a superuser, so it may act as the role: CREATE DATABASE … OWNER, SET ROLE, DROP
   * OWNED. An RDS master user is never a superuser.
   */
  grantToSessionUser?: boolean;
}

export interface RoleState {
  name: string;
  canLogin: boolean;
  superuser: boolean;
  bypassRls: boolean;
  createRole: boolean;
  createDb: boolean;
  connectionLimit: number;
  settings: Record<string, string>;
}

/**
 * One DO block: create the role if missing, then converge its attributes and limits. A superuser
 * states NOSUPERUSER NOREPLICATION NOBYPASSRLS outright; PostgreSQL refuses a non-superuser even the
 * denial of an attribute it does not hold itself (RDS), so for such an admin those are left out and
 * the role is checked to hold none of them instead. All in one round trip, identifiers validated.
 */
function roleSql(spec: RoleSpec, create: boolean): string {
  return rolesSql([spec], create);
}

/**
 * Several roles as roleSql does each, with their PL/pgSQL in one DO block (one compile, the admin's
 * attributes read once), then each role's settings, password and membership in order.
 */
function rolesSql(specs: readonly RoleSpec[], create: boolean): string {
  const blocks = specs.map((spec) => {
    const r = ident(spec.name);
    const name = literal(spec.name);
    const login = spec.login === 'unchanged' ? '' : spec.login === false ? 'NOLOGIN ' : 'LOGIN ';
    const base = `ALTER ROLE ${r} WITH ${login}NOCREATEDB NOCREATEROLE CONNECTION LIMIT ${Math.trunc(spec.connectionLimit)}`;
    return [
      ...(create ? [`BEGIN CREATE ROLE ${r} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END;`] : []),
      `EXECUTE ${literal(base)}
       || CASE WHEN me.rolsuper THEN ' NOSUPERUSER' ELSE '' END
       || CASE WHEN me.rolsuper OR me.rolreplication THEN ' NOREPLICATION' ELSE '' END
       || CASE WHEN me.rolsuper OR me.rolbypassrls THEN ' NOBYPASSRLS' ELSE '' END;`,
      `IF NOT me.rolsuper AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${name}
        AND (rolsuper OR rolreplication OR rolbypassrls)) THEN
       RAISE EXCEPTION 'role % holds SUPERUSER, REPLICATION or BYPASSRLS and this admin cannot take it away', ${name};
     END IF;`,
      ...(spec.grantToSessionUser
        ? [
            `IF NOT me.rolsuper THEN
             EXECUTE ${literal(`GRANT ${r} TO CURRENT_USER`)} || CASE WHEN me.v >= 160000 THEN ' WITH INHERIT TRUE, SET TRUE' ELSE '' END;
           END IF;`,
          ]
        : []),
    ];
  });
  const body = [
    'DECLARE me record;',
    'BEGIN',
    `SELECT rolsuper, rolreplication, rolbypassrls, current_setting('server_version_num')::int AS v
       INTO me FROM pg_roles WHERE rolname = current_user;`,
    ...blocks.flat(),
    'END',
  ].join('\n');
  return [`DO ${dollarQuote(body)}`, ...settingsSql(specs)].join(';\n');
}

/**
 * Roles none of which exists yet, as plain statements in one round trip (no PL/pgSQL block to
 * compile per onboarding): CREATE ROLE gives a new role none of SUPERUSER, REPLICATION, BYPASSRLS,
 * CREATEDB or CREATEROLE, so there is nothing to deny or check that rolesSql's block must. Fails
 * with duplicate_object (42710), the whole of it undone, if any of them exists.
 */
function newRolesSql(specs: readonly RoleSpec[]): string {
  const creates = specs.map(
    (spec) =>
      `CREATE ROLE ${ident(spec.name)} WITH ${spec.login === true || spec.login === undefined ? 'LOGIN' : 'NOLOGIN'} CONNECTION LIMIT ${Math.trunc(spec.connectionLimit)}`,
  );
  return [...creates, ...settingsSql(specs)].join(';\n');
}

/** Each role's settings, password (a SCRAM verifier only) and membership, in order. */
function settingsSql(specs: readonly RoleSpec[]): string[] {
  const parts: string[] = [];
  for (const spec of specs) {
    const r = ident(spec.name);
    parts.push(
      `ALTER ROLE ${r} SET statement_timeout = ${Math.trunc(spec.statementTimeoutMs)}`,
      `ALTER ROLE ${r} SET idle_in_transaction_session_timeout = ${Math.trunc(spec.idleInTransactionSessionTimeoutMs)}`,
    );
    if (spec.searchPath && spec.searchPath.length > 0) {
      parts.push(`ALTER ROLE ${r} SET search_path = ${spec.searchPath.map(ident).join(', ')}`);
    }
    const verifier =
      spec.verifier ?? (spec.password !== undefined ? scramVerifier(spec.password) : undefined);
    if (verifier !== undefined) {
      // Only ever a verifier: a plaintext password would reach the server (and its logs).
      if (!parseScramVerifier(verifier))
        throw new Error(`the password of ${spec.name} is not a SCRAM verifier`);
      parts.push(`ALTER ROLE ${r} WITH PASSWORD ${literal(verifier)}`);
    }
    // Re-granting a membership it holds is a notice, not an error.
    if (spec.inRole !== undefined) parts.push(`GRANT ${ident(spec.inRole)} TO ${r}`);
  }
  return parts;
}

/** A dollar-quoted body; its tag never occurs in it (the body holds only validated identifiers). */
function dollarQuote(body: string): string {
  let tag = '$role$';
  for (let i = 0; body.includes(tag); i++) tag = `$role${i}$`;
  return `${tag}${body}${tag}`;
}

/** Create-if-missing and converge in one round trip, without reading back; a concurrent creator is harmless. */
export async function applyRole(db: Queryable, spec: RoleSpec): Promise<void> {
  await db.query(roleSql(spec, true));
}

/**
 * Several roles, each as applyRole does, in order, in one round trip (one implicit transaction).
 * `fresh`: the caller expects none of them to exist (an onboarding): plain CREATE ROLE statements are
 * tried first, and the block that converges roles as found runs only if one exists. `db` must not be
 * inside a transaction of the caller's then (the failed try would end it).
 */
export async function applyRoles(
  db: Queryable,
  specs: readonly RoleSpec[],
  opts: { fresh?: boolean } = {},
): Promise<void> {
  if (specs.length === 0) return;
  if (opts.fresh && specs.every((x) => !x.grantToSessionUser)) {
    try {
      await db.query(newRolesSql(specs));
      return;
    } catch (e) {
      if ((e as { code?: string }).code !== '42710') throw e; // one exists: converge them as found
    }
  }
  await db.query(rolesSql(specs, true));
}

/** Lets a non-superuser session act as the role (for DROP OWNED); a superuser needs nothing. */
const GRANT_TO_SESSION_USER = (r: string) => `DO $grant$
DECLARE me record;
BEGIN
  SELECT rolsuper, current_setting('server_version_num')::int AS v INTO me FROM pg_roles WHERE rolname = current_user;
  IF NOT me.rolsuper THEN
    EXECUTE ${literal(`GRANT ${r} TO CURRENT_USER`)} || CASE WHEN me.v >= 160000 THEN ' WITH INHERIT TRUE, SET TRUE' ELSE '' END;
  END IF;
END $grant$`;

export const roleProvider: Provider<RoleSpec, RoleState> = {
  kind: 'role',

  async create(db, spec) {
    await applyRole(db, spec);
    const state = await this.observe(db, spec);
    if (!state) throw new Error(`role ${spec.name} vanished during create`);
    return state;
  },

  async observe(db, spec) {
    const { rows } = await db.query<{
      rolname: string;
      rolcanlogin: boolean;
      rolsuper: boolean;
      rolbypassrls: boolean;
      rolcreaterole: boolean;
      rolcreatedb: boolean;
      rolconnlimit: number;
      config: string[] | null;
    }>(
      `SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, r.rolconnlimit,
              s.setconfig AS config
         FROM pg_roles r
         LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0
        WHERE r.rolname = $1`,
      [spec.name],
    );
    const r = rows[0];
    if (!r) return null;
    return {
      name: r.rolname,
      canLogin: r.rolcanlogin,
      superuser: r.rolsuper,
      bypassRls: r.rolbypassrls,
      createRole: r.rolcreaterole,
      createDb: r.rolcreatedb,
      connectionLimit: r.rolconnlimit,
      settings: parseSettings(r.config),
    };
  },

  async update(db, spec) {
    await db.query(roleSql(spec, false));
    const state = await this.observe(db, spec);
    if (!state) throw new Error(`role ${spec.name} vanished during update`);
    return state;
  },

  async delete(db, spec) {
    if (!(await this.observe(db, spec))) return;
    const r = ident(spec.name);
    // Stop new sessions, end current ones, then drop what it holds everywhere (DROP OWNED needs the
    // role's privileges, which a non-superuser admin holds only once the role is granted to it).
    await db.query(`ALTER ROLE ${r} WITH NOLOGIN`);
    await db.query(GRANT_TO_SESSION_USER(r));
    await db.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [spec.name]);
    // DROP OWNED also revokes database-level grants (pg_database ACLs): serialize those writers.
    const dropOwned = (q: Queryable) =>
      inTransaction(q, async () => {
        await lockDatabaseAcl(q);
        await q.query(`DROP OWNED BY ${r}`);
      });
    for (const other of spec.cleanupIn ?? []) await dropOwned(other);
    await dropOwned(db);
    await db.query(`DROP ROLE IF EXISTS ${r}`);
  },
};

export function parseSettings(config: string[] | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of config ?? []) {
    const eq = item.indexOf('=');
    if (eq > 0) out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/**
 * Stops a login role's use of the cluster before its objects go: no new sessions, and the open
 * ones ended (waiting up to `waitMs` for each to exit), so a transaction the tenant left open
 * cannot hold a lock that our DROP then waits on.
 */
export async function endRoleSessions(db: Queryable, name: string, waitMs = 5000): Promise<void> {
  const { rows } = await db.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [name]);
  if (rows.length === 0) return;
  await db.query(`ALTER ROLE ${ident(name)} WITH NOLOGIN`);
  await db.query(
    'SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()',
    [name, waitMs],
  );
}
