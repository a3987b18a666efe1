import { randomBytes } from 'node:crypto';
import { ensureMeta } from './meta.js';
import {
  ident,
  inTransaction,
  literal,
  metaLock,
  metaLockRowSql,
  metaLockSql,
  type Queryable,
  relationsOfSchemaSql,
} from './sql.js';
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
    // Plain: where the locks table is missing this fails (42P01) and applySchema converges instead.
    metaLockRowSql(`tenantry.schema.${spec.name}`),
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
 * exists, or a database without Tenantry's bookkeeping yet, converges through `create` instead, and
 * then runs `andThenExisting` (default `andThen`): statements that must hold for a schema found as it
 * is, so idempotent, where `andThen` may assume the schema it follows is new.
 */
export async function applySchema(
  db: Queryable,
  spec: SchemaSpec,
  opts: { andThen?: string[]; andThenExisting?: string[] } = {},
): Promise<void> {
  try {
    await db.query(newSchemaScript(spec, opts.andThen));
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code !== '42P06' && code !== '42P01' && code !== '3F000') throw e;
    await schemaProvider.create(db, spec);
    const then = opts.andThenExisting ?? opts.andThen ?? [];
    if (then.length > 0) await db.query(then.join(';\n'));
  }
}

/** The relations a template creates in a schema, by kind (names unqualified, in catalog order). */
export interface TemplateRelations {
  /** Tables (plain and partitioned): each gets its freeze guard. */
  tables: string[];
  /** Everything DML is granted on: tables, views, materialized views, foreign tables. */
  relations: string[];
  sequences: string[];
}

const probed = new WeakMap<TenantTemplate, Promise<TemplateRelations>>();

/**
 * What `template` creates, read from the catalog after applying it to a scratch schema in a
 * transaction that is rolled back: once per template (per process), so that a new schema's guards
 * and grants name its relations directly instead of finding them in the catalog in every onboarding
 * (a catalog query that cost more than the statements themselves: docs/benchmarks.md). The template
 * is static DDL, so a schema built from it holds exactly these; the drift sweep checks every schema's
 * guards and grants against the catalog all the same.
 */
export function templateRelations(db: Queryable, template: TenantTemplate): Promise<TemplateRelations> {
  const known = probed.get(template);
  if (known) return known;
  const probe = (async () => {
    const scratch = `tenantry_probe_${randomBytes(6).toString('hex')}`;
    await db.query('BEGIN');
    try {
      await db.query(
        [
          `CREATE SCHEMA ${ident(scratch)}`,
          `SET LOCAL search_path TO ${ident(scratch)}`,
          ...[...template.migrations].sort((a, b) => a.version - b.version).map((m) => m.sql),
        ].join(';\n'),
      );
      const { rows } = await db.query<{ relname: string; relkind: string }>(
        `SELECT c.relname::text AS relname, c.relkind::text AS relkind
           FROM ${relationsOfSchemaSql('to_regnamespace($1)')} ORDER BY c.oid`,
        [scratch],
      );
      return {
        tables: rows.filter((r) => r.relkind === 'r' || r.relkind === 'p').map((r) => r.relname),
        relations: rows.filter((r) => ['r', 'p', 'v', 'm', 'f'].includes(r.relkind)).map((r) => r.relname),
        sequences: rows.filter((r) => r.relkind === 'S').map((r) => r.relname),
      };
    } finally {
      await db.query('ROLLBACK').catch(() => undefined);
    }
  })();
  probed.set(template, probe);
  probe.catch(() => probed.delete(template)); // a failed probe is tried again next time
  return probe;
}

/** What the version guard of `migrationScript` fails with when the schema is not at the version before. */
const GUARD = 'tenantry version guard';

/**
 * One template migration as one implicit transaction (one round trip): the schema's lock (its row in
 * `tenantry_meta.locks`, as `metaLockSql` takes it), the version bump, which is also the guard (it
 * moves the schema's version from exactly the one before, or fails the transaction: a migration is
 * never applied twice, nor over a gap), the migration as the owner, then `andThen`. Plain SQL: no
 * PL/pgSQL block to compile per tenant. `fallbackLock`: the lock for a database without the locks table.
 */
function migrationScript(spec: SchemaSpec, version: number, andThen: string[], fallbackLock = false): string {
  const m = spec.template.migrations.find((x) => x.version === version);
  if (!m) throw new Error(`the template has no migration ${version}`);
  const s = ident(spec.name);
  const name = literal(spec.name);
  const lock = `tenantry.schema.${spec.name}`;
  const bump =
    version === 1
      ? `INSERT INTO tenantry_meta.schema_versions AS v (schema_name, version) VALUES (${name}, 1)
           ON CONFLICT (schema_name) DO UPDATE SET version = 1, applied_at = now() WHERE v.version = 0 RETURNING 1`
      : `UPDATE tenantry_meta.schema_versions SET version = ${version}, applied_at = now()
          WHERE schema_name = ${name} AND version = ${version - 1} RETURNING 1`;
  return [
    fallbackLock ? metaLockSql(lock) : metaLockRowSql(lock),
    // A cast that fails unless exactly one row moved: the transaction ends there, nothing applied.
    `WITH bumped AS (${bump}) SELECT CASE WHEN count(*) = 1 THEN 0 ELSE ('${GUARD} ' || count(*))::int END FROM bumped`,
    `SET LOCAL ROLE ${ident(spec.owner)}`,
    `SET LOCAL search_path TO ${s}`,
    m.sql,
    'RESET ROLE',
    ...andThen,
  ].join(';\n');
}

/**
 * One version's transaction on a schema at the version before, as migrateSchema sends it (the lock,
 * the bump that guards it, the migration as the owner, then `andThen`), for a caller that sends
 * several schemas' in one round trip, each inside its own BEGIN and COMMIT.
 */
export function migrationSql(spec: SchemaSpec, version: number, andThen: string[]): string {
  return migrationScript(spec, version, andThen);
}

/**
 * Brings an existing schema from `from` (its version as last recorded) to `toVersion`: each template
 * migration in its own transaction with its version bump, under the schema's lock, in one round trip.
 * A version already applied (by an earlier attempt that crashed before recording it, or by a
 * concurrent applier) is skipped, never applied twice; a schema found behind `from` is migrated from
 * where it is. `andThen(version)` adds statements to that version's transaction. Returns the versions
 * this call applied and the version the schema is at.
 */
export async function migrateSchema(
  db: Queryable,
  spec: SchemaSpec,
  opts: { from: number; toVersion: number; andThen?: (version: number) => string[] },
): Promise<{ applied: number[]; version: number }> {
  const applied: number[] = [];
  let at = opts.from;
  let fallbackLock = false;
  let stuck = 0;
  while (at < opts.toVersion) {
    const v = at + 1;
    try {
      await db.query(migrationScript(spec, v, opts.andThen?.(v) ?? [], fallbackLock));
      applied.push(v);
      at = v;
    } catch (e) {
      const err = e as { code?: string; message?: string };
      if (err.code === '42P01' && !fallbackLock && /tenantry_meta\.locks|"locks"/.test(err.message ?? '')) {
        fallbackLock = true; // a database from before the locks table
        continue;
      }
      if (!(err.message ?? '').includes(GUARD)) throw e;
      // Not at the version before: read where the schema is, and go on from there.
      const { rows } = await db.query<{ version: number }>(
        'SELECT version FROM tenantry_meta.schema_versions WHERE schema_name = $1',
        [spec.name],
      );
      const actual = rows[0]?.version ?? 0;
      if (actual === at && ++stuck > 2)
        throw new Error(`schema ${spec.name} has no recorded version to migrate from (expected ${at})`);
      at = actual;
    }
  }
  return { applied, version: at };
}

/** A template cut at `version`: what a schema at that version was built from. */
export function templateUpTo(template: TenantTemplate, version: number): TenantTemplate {
  const migrations = template.migrations.filter((m) => m.version <= version);
  return { version: Math.min(version, template.version), migrations };
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
