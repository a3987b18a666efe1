import { ident, type Queryable } from './sql.js';
import type { Provider } from './types.js';

export interface DatabaseSpec {
  name: string;
  /** A NOLOGIN owner role: the tenant's login role never owns its database. */
  owner: string;
  /** Optional template database to clone from (faster than replaying the schema). */
  template?: string;
}

export interface DatabaseState {
  name: string;
  owner: string;
  allowConnections: boolean;
  /** Roles holding CONNECT, with "PUBLIC" for the public pseudo-role. */
  connect: string[];
}

/** CREATE DATABASE cannot run in a transaction: every statement here is sent on its own. */
export const databaseProvider: Provider<DatabaseSpec, DatabaseState> = {
  kind: 'database',

  async create(db, spec) {
    if (!(await this.observe(db, spec))) {
      const from = spec.template ? ` TEMPLATE ${ident(spec.template)}` : '';
      await db
        .query(`CREATE DATABASE ${ident(spec.name)} OWNER ${ident(spec.owner)}${from}`)
        .catch((e: { code?: string }) => {
          // Created concurrently (42P04), or the same CREATE DATABASE of a killed process still
          // finishing in its orphaned backend (23505 on pg_database's name index): converge below.
          if (e.code !== '42P04' && e.code !== '23505') throw e;
        });
    }
    return this.update(db, spec);
  },

  async observe(db, spec) {
    const { rows } = await db.query<{
      datname: string;
      owner: string;
      datallowconn: boolean;
      connect: string[];
    }>(
      `SELECT d.datname, pg_get_userbyid(d.datdba) AS owner, d.datallowconn,
              coalesce(array(
                SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                  FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                 WHERE a.privilege_type = 'CONNECT'
                 ORDER BY 1), '{}') AS connect
         FROM pg_database d WHERE d.datname = $1`,
      [spec.name],
    );
    const r = rows[0];
    return r
      ? { name: r.datname, owner: r.owner, allowConnections: r.datallowconn, connect: r.connect }
      : null;
  },

  async update(db, spec) {
    const d = ident(spec.name);
    await db.query(`ALTER DATABASE ${d} OWNER TO ${ident(spec.owner)}`);
    await db.query(`REVOKE CONNECT, TEMPORARY ON DATABASE ${d} FROM PUBLIC`);
    const state = await this.observe(db, spec);
    if (!state) throw new Error(`database ${spec.name} vanished during update`);
    return state;
  },

  async delete(db, spec) {
    await db.query(`DROP DATABASE IF EXISTS ${ident(spec.name)} WITH (FORCE)`);
  },
};

/** Revoke CONNECT from PUBLIC on databases a tenant role must never reach (control plane, postgres, template1). */
export async function lockDownDatabases(db: Queryable, names: string[]): Promise<void> {
  for (const name of names) {
    const { rows } = await db.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (rows.length > 0) await db.query(`REVOKE CONNECT, TEMPORARY ON DATABASE ${ident(name)} FROM PUBLIC`);
  }
}
