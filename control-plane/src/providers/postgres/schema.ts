import { ensureMeta } from './meta.js';
import { ident, inTransaction, literal, metaLock, metaLockSql, type Queryable } from './sql.js';
import type { Provider, TenantTemplate } from './types.js';

export interface SchemaSpec {
  /** Schema name, e.g. `tenant_acme` (bridge), `app` (silo) or `pool`. */
  name: string;
  /** NOLOGIN owner of the schema and of every table in it. */
  owner: string;
  template: TenantTemplate;
}

export interface SchemaState {
  name: string;
  owner: string;
  templateVersion: number;
  tables: string[];
}

/**
 * A schema built from the versioned tenant template. Migrations are forward-only and
 * each runs in a transaction, as the owner role, with search_path set to the schema.
 */
/** A new schema built from the template in one implicit transaction, then `andThen` in the same one. */
function newSchemaScript(spec: SchemaSpec, andThen: string[] = []): string {
  const s = ident(spec.name);
  const migrations = [...spec.template.migrations].sort((a, b) => a.version - b.version);
  const last = migrations[migrations.length - 1]?.version ?? 0;
  return [
    metaLockSql(`tenantry.schema.${spec.name}`),
    `CREATE SCHEMA ${s} AUTHORIZATION ${ident(spec.owner)}`,
    `REVOKE ALL ON SCHEMA ${s} FROM PUBLIC`,
    `SET LOCAL ROLE ${ident(spec.owner)}`,
    `SET LOCAL search_path TO ${s}`,
    ...migrations.map((m) => m.sql),
    'RESET ROLE',
    `INSERT INTO tenantry_meta.schema_versions (schema_name, version) VALUES (${literal(spec.name)}, ${Math.trunc(last)})
       ON CONFLICT (schema_name) DO UPDATE SET version = excluded.version, applied_at = now()`,
    ...andThen,
  ].join(';\n');
}

/**
 * Hot path (provisioning): a new schema in one round trip and one commit, without reading it back,
 * with `andThen` (statements that must see the new tables) in the same transaction. A schema that
 * exists, or a database without Tenantry's bookkeeping yet, converges through `create` instead.
 */
export async function applySchema(
  db: Queryable,
  spec: SchemaSpec,
  opts: { andThen?: string[] } = {},
): Promise<void> {
  try {
    await db.query(newSchemaScript(spec, opts.andThen));
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code !== '42P06' && code !== '42P01' && code !== '3F000') throw e;
    await schemaProvider.create(db, spec);
    if (opts.andThen && opts.andThen.length > 0) await db.query(opts.andThen.join(';\n'));
  }
}

export const schemaProvider: Provider<SchemaSpec, SchemaState> = {
  kind: 'schema',

  async create(db, spec) {
    const existing = await this.observe(db, spec);
    if (!existing) {
      // A new schema: one implicit transaction, one round trip. A crash leaves nothing behind,
      // and a concurrent creator makes this fail cleanly (then we converge).
      try {
        await db.query(newSchemaScript(spec));
        const created = await this.observe(db, spec);
        if (created) return created;
      } catch (e) {
        if ((e as { code?: string }).code !== '42P06') throw e; // created concurrently: converge below
      }
    }
    return this.update(db, spec);
  },

  async observe(db, spec) {
    await ensureMeta(db);
    const { rows } = await db.query<{ owner: string; version: number | null; tables: string[] }>(
      `SELECT pg_get_userbyid(n.nspowner) AS owner,
              (SELECT v.version FROM tenantry_meta.schema_versions v WHERE v.schema_name = n.nspname) AS version,
              coalesce(array(SELECT c.relname::text FROM pg_class c
                              WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p') ORDER BY 1), '{}') AS tables
         FROM pg_namespace n WHERE n.nspname = $1`,
      [spec.name],
    );
    const r = rows[0];
    return r ? { name: spec.name, owner: r.owner, templateVersion: r.version ?? 0, tables: r.tables } : null;
  },

  async update(db, spec) {
    await ensureMeta(db);
    const s = ident(spec.name);
    const current = await this.observe(db, spec);
    const target = Math.max(0, ...spec.template.migrations.map((m) => m.version));
    if (current && current.templateVersion >= target && current.owner === spec.owner) {
      await db.query(`REVOKE ALL ON SCHEMA ${s} FROM PUBLIC`);
      return current;
    }
    for (const m of [...spec.template.migrations].sort((a, b) => a.version - b.version)) {
      await inTransaction(db, async () => {
        // Serialize concurrent appliers of the same schema; the version check below runs under the lock.
        await metaLock(db, `tenantry.schema.${spec.name}`);
        const { rows } = await db.query<{ version: number }>(
          'SELECT version FROM tenantry_meta.schema_versions WHERE schema_name = $1',
          [spec.name],
        );
        if ((rows[0]?.version ?? 0) >= m.version) return;
        await db.query(`SET LOCAL ROLE ${ident(spec.owner)}`);
        await db.query(`SET LOCAL search_path TO ${s}`);
        await db.query(m.sql);
        await db.query('RESET ROLE');
        await db.query(
          `INSERT INTO tenantry_meta.schema_versions (schema_name, version) VALUES ($1, $2)
           ON CONFLICT (schema_name) DO UPDATE SET version = excluded.version, applied_at = now()`,
          [spec.name, m.version],
        );
      });
    }
    await db.query(`ALTER SCHEMA ${s} OWNER TO ${ident(spec.owner)}`);
    await db.query(`REVOKE ALL ON SCHEMA ${s} FROM PUBLIC`);
    const state = await this.observe(db, spec);
    if (!state) throw new Error(`schema ${spec.name} vanished during update`);
    return state;
  },

  async delete(db, spec) {
    await ensureMeta(db);
    await inTransaction(db, async () => {
      await db.query(`DROP SCHEMA IF EXISTS ${ident(spec.name)} CASCADE`);
      await db.query('DELETE FROM tenantry_meta.schema_versions WHERE schema_name = $1', [spec.name]);
    });
  },
};
