import {
  ACL_LOCK,
  ident,
  inTransaction,
  literal,
  lockDatabaseAcl,
  metaLockRowSql,
  metaLockSql,
  type Queryable,
  relationsOfSchemaSql,
} from './sql.js';
import type { Provider } from './types.js';

export interface GrantsSpec {
  /** The database the schema lives in (CONNECT is granted on it). */
  database: string;
  schema: string;
  /** The login role that gets USAGE and DML. */
  role: string;
  /** The owner whose future tables the default privileges cover. */
  owner: string;
}

export interface GrantsState {
  connect: boolean;
  usage: boolean;
  create: boolean;
  /** Per table: the DML privileges the role holds. */
  tables: Record<string, string[]>;
  defaultPrivileges: boolean;
}

const DML = ['DELETE', 'INSERT', 'SELECT', 'UPDATE'];

/**
 * What `REVOKE ALL ON ALL TABLES IN SCHEMA s FROM PUBLIC; GRANT … ON ALL TABLES | SEQUENCES IN
 * SCHEMA s TO role` do, on the same relations (tables, views, materialized views, foreign and
 * partitioned tables; sequences), found through pg_depend: the `ALL … IN SCHEMA` forms scan the whole
 * of pg_class, which in the shared bridge database grows with every tenant (docs/benchmarks.md).
 * Names come from regclass (quoted, qualified where not visible); the role is validated and quoted.
 */
function grantRelationsSql(schema: string, role: string): string {
  const grantee = literal(ident(role));
  return `DO $grants$
DECLARE tabs text; seqs text;
BEGIN
  SELECT string_agg(c.oid::regclass::text, ', ') FILTER (WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')),
         string_agg(c.oid::regclass::text, ', ') FILTER (WHERE c.relkind = 'S')
    INTO tabs, seqs FROM ${relationsOfSchemaSql(`${literal(schema)}::regnamespace`)};
  IF tabs IS NOT NULL THEN
    EXECUTE 'REVOKE ALL ON TABLE ' || tabs || ' FROM PUBLIC';
    EXECUTE 'GRANT ${DML.join(', ')} ON TABLE ' || tabs || ' TO ' || ${grantee};
  END IF;
  IF seqs IS NOT NULL THEN
    EXECUTE 'GRANT USAGE, SELECT ON SEQUENCE ' || seqs || ' TO ' || ${grantee};
  END IF;
END $grants$`;
}

/**
 * The statements of `applyGrants`, for a caller that runs them at the end of a transaction of its
 * own (a new schema and its grants in one commit). The database-ACL lock (lockDatabaseAcl's) is taken
 * last, just before the one statement that needs it, so concurrent tenants wait only for each other's
 * GRANT CONNECT and commit, not for their whole batches: keep these last in the caller's transaction.
 */
export function grantsSql(
  spec: GrantsSpec,
  known?: { relations: readonly string[]; sequences: readonly string[] },
): string[] {
  const s = ident(spec.schema);
  const role = ident(spec.role);
  const owner = ident(spec.owner);
  const q = (names: readonly string[]) => names.map((n) => `${s}.${ident(n)}`).join(', ');
  // `known`: the schema's relations as its template makes them (a schema just created from it in
  // the caller's transaction), named directly instead of found in the catalog.
  const relations = known
    ? [
        ...(known.relations.length > 0
          ? [
              `REVOKE ALL ON TABLE ${q(known.relations)} FROM PUBLIC`,
              `GRANT ${DML.join(', ')} ON TABLE ${q(known.relations)} TO ${role}`,
            ]
          : []),
        ...(known.sequences.length > 0
          ? [`GRANT USAGE, SELECT ON SEQUENCE ${q(known.sequences)} TO ${role}`]
          : []),
      ]
    : [grantRelationsSql(spec.schema, spec.role)];
  return [
    `REVOKE ALL ON SCHEMA ${s} FROM PUBLIC`,
    `REVOKE CREATE ON SCHEMA ${s} FROM ${role}`,
    `GRANT USAGE ON SCHEMA ${s} TO ${role}`,
    ...relations,
    `ALTER DEFAULT PRIVILEGES FOR ROLE ${owner} IN SCHEMA ${s} GRANT ${DML.join(', ')} ON TABLES TO ${role}`,
    `ALTER DEFAULT PRIVILEGES FOR ROLE ${owner} IN SCHEMA ${s} GRANT USAGE, SELECT ON SEQUENCES TO ${role}`,
    // With `known`, the caller's transaction made the schema, behind the locks table's row: it exists.
    known ? metaLockRowSql(ACL_LOCK) : metaLockSql(ACL_LOCK),
    `GRANT CONNECT ON DATABASE ${ident(spec.database)} TO ${role}`,
  ];
}

/**
 * USAGE and DML on one schema, CONNECT on one database; never CREATE, never ownership.
 * Applies the grants in one implicit transaction (one round trip) without reading them back;
 * create/update add the observation, callers on a hot path may skip it.
 */
export async function applyGrants(db: Queryable, spec: GrantsSpec): Promise<void> {
  await db.query(grantsSql(spec).join(';\n'));
}

export const grantsProvider: Provider<GrantsSpec, GrantsState> = {
  kind: 'grants',

  create(db, spec) {
    return this.update(db, spec);
  },

  async observe(db, spec) {
    const { rows } = await db.query<{
      role_exists: boolean;
      connect: boolean;
      usage: boolean;
      create: boolean;
      tables: Record<string, string[]> | null;
      defaults: boolean;
    }>(
      `WITH r AS (SELECT oid FROM pg_roles WHERE rolname = $3), n AS (SELECT oid FROM pg_namespace WHERE nspname = $2)
       SELECT EXISTS (SELECT 1 FROM r) AS role_exists,
              coalesce((SELECT has_database_privilege($3, $1, 'CONNECT') FROM r), false) AS connect,
              coalesce((SELECT has_schema_privilege($3, $2, 'USAGE') FROM r, n), false) AS usage,
              coalesce((SELECT has_schema_privilege($3, $2, 'CREATE') FROM r, n), false) AS create,
              (SELECT jsonb_object_agg(c.relname, array(
                        SELECT p FROM unnest(ARRAY['DELETE','INSERT','SELECT','UPDATE']) p
                         WHERE has_table_privilege((SELECT oid FROM r), c.oid, p) ORDER BY p))
                 FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM n) AND c.relkind IN ('r','p')
                  AND EXISTS (SELECT 1 FROM r)) AS tables,
              EXISTS (SELECT 1 FROM pg_default_acl d, aclexplode(d.defaclacl) a
                       WHERE d.defaclnamespace = (SELECT oid FROM n) AND d.defaclobjtype = 'r'
                         AND a.grantee = (SELECT oid FROM r)) AS defaults`,
      [spec.database, spec.schema, spec.role],
    );
    const r = rows[0];
    if (!r?.role_exists) return null;
    return {
      connect: r.connect,
      usage: r.usage,
      create: r.create,
      tables: r.tables ?? {},
      defaultPrivileges: r.defaults,
    };
  },

  async update(db, spec) {
    await applyGrants(db, spec);
    const state = await this.observe(db, spec);
    if (!state) throw new Error(`role ${spec.role} missing while granting`);
    return state;
  },

  async delete(db, spec) {
    if (!(await this.observe(db, spec))) return;
    const s = ident(spec.schema);
    const role = ident(spec.role);
    await inTransaction(db, async () => {
      const { rows } = await db.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [spec.schema]);
      if (rows.length > 0) {
        await db.query(`REVOKE ALL ON ALL TABLES IN SCHEMA ${s} FROM ${role}`);
        await db.query(`REVOKE ALL ON ALL SEQUENCES IN SCHEMA ${s} FROM ${role}`);
        await db.query(`REVOKE ALL ON SCHEMA ${s} FROM ${role}`);
        await db.query(
          `ALTER DEFAULT PRIVILEGES FOR ROLE ${ident(spec.owner)} IN SCHEMA ${s} REVOKE ALL ON TABLES FROM ${role}`,
        );
        await db.query(
          `ALTER DEFAULT PRIVILEGES FOR ROLE ${ident(spec.owner)} IN SCHEMA ${s} REVOKE ALL ON SEQUENCES FROM ${role}`,
        );
      }
      await lockDatabaseAcl(db);
      await db.query(`REVOKE CONNECT ON DATABASE ${ident(spec.database)} FROM ${role}`);
    });
  },
};
