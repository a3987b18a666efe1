import { scramVerifier } from './scram.js';
import { ident, inTransaction, literal, lockDatabaseAcl, type Queryable } from './sql.js';
import type { Provider, RoleLimits } from './types.js';

export interface RoleSpec extends RoleLimits {
  name: string;
  /** Plaintext password; hashed to a SCRAM verifier client-side. Omit to leave the password unchanged. */
  password?: string;
  searchPath?: string[];
  /** LOGIN (default) or NOLOGIN, for owner roles that must never open a session. */
  login?: boolean;
  /** Databases in which the role may hold privileges; DROP OWNED runs in each before the role is dropped. */
  cleanupIn?: Queryable[];
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

function limitsSql(spec: RoleSpec): string {
  const r = ident(spec.name);
  const parts = [
    `ALTER ROLE ${r} WITH ${spec.login === false ? 'NOLOGIN' : 'LOGIN'} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT ${Math.trunc(spec.connectionLimit)}`,
    `ALTER ROLE ${r} SET statement_timeout = ${Math.trunc(spec.statementTimeoutMs)}`,
    `ALTER ROLE ${r} SET idle_in_transaction_session_timeout = ${Math.trunc(spec.idleInTransactionSessionTimeoutMs)}`,
  ];
  if (spec.searchPath && spec.searchPath.length > 0) {
    parts.push(`ALTER ROLE ${r} SET search_path = ${spec.searchPath.map(ident).join(', ')}`);
  }
  if (spec.password !== undefined) {
    parts.push(`ALTER ROLE ${r} WITH PASSWORD ${literal(scramVerifier(spec.password))}`);
  }
  return parts.join(';\n');
}

/** Create-if-missing and converge in one round trip, without reading back; a concurrent creator is harmless. */
export async function applyRole(db: Queryable, spec: RoleSpec): Promise<void> {
  await db.query(
    `DO $$ BEGIN CREATE ROLE ${ident(spec.name)} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n${limitsSql(spec)}`,
  );
}

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
    await db.query(limitsSql(spec));
    const state = await this.observe(db, spec);
    if (!state) throw new Error(`role ${spec.name} vanished during update`);
    return state;
  },

  async delete(db, spec) {
    if (!(await this.observe(db, spec))) return;
    const r = ident(spec.name);
    // Stop new sessions, end current ones, then drop what it holds everywhere.
    await db.query(`ALTER ROLE ${r} WITH NOLOGIN`);
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
