import { metaLockSql, type Queryable } from './sql.js';

/**
 * What a tenant session may read or call in a data-plane database beyond its own objects, cut down
 * to what Postgres lets us revoke without breaking ordinary clients (drivers, ORMs, psql, pg_dump
 * of one schema). Every revoke here is an ACL change in this one database's catalogs: pg_class and
 * pg_proc are per database, and even a shared catalog (pg_db_role_setting) keeps its ACL in each
 * database's pg_class. So it must run in the shared data database and in the silo template (silos
 * cloned from the template inherit it); other databases of the cluster are untouched.
 *
 * Two scopes:
 * - `cluster`: reveals other databases or other sessions of the whole cluster (pg_stat_activity,
 *   pg_stat_database, pg_locks, replication slots, role settings). Revoked in every placement.
 * - `database`: reveals the other tenants of this database (per-table statistics, large objects,
 *   `pg_notify`). Revoked where tenants share a database; in a silo the tenant is alone, so it keeps
 *   its own table statistics, large objects and `pg_notify`.
 *
 * Statistics views and the `pg_stat_get_*` functions under them are granted back to
 * `pg_read_all_stats` (so `pg_monitor` keeps working). `pg_roles.rolconfig` and `pg_user.useconfig`
 * are hidden column by column: every other column stays readable (psql's \du, pg_dump's role
 * names), only the column and `SELECT *` are refused. Role settings still apply at login.
 *
 * What it costs a tenant: its own sessions in pg_stat_activity, psql's \drds and (where shared)
 * \lo_list, `pg_dump --create`, `SELECT * FROM pg_roles`; where shared, large objects and
 * `pg_notify` (the NOTIFY statement has no privilege and cannot be revoked). What stays visible
 * (names in pg_class, pg_namespace, pg_roles, pg_database; reltuples/relpages; relation sizes;
 * publications; advisory locks) is listed in the README's "What each tier isolates".
 *
 * Must run as the catalogs' owner (a superuser): a non-owner's REVOKE is only a warning. The
 * returned state says what PUBLIC still reaches, so a run that could not revoke is visible.
 */
export interface HardeningSpec {
  /** Several tenants share this database (the data database), or not (a silo, the silo template). */
  shared: boolean;
}

export interface HardeningTarget {
  kind: 'relation' | 'function' | 'column';
  /** `pg_stat_activity`, `pg_notify(text, text)`, `pg_roles.rolconfig`. */
  name: string;
  scope: 'cluster' | 'database';
  /** Whether PUBLIC still reaches it here. */
  reachable: boolean;
}

export interface HardeningState {
  targets: HardeningTarget[];
  /** Names PUBLIC still reaches: empty once hardened. */
  reachable: string[];
}

/** Per-database statistics: tables, indexes, sequences and functions of this database only. */
const PER_DATABASE_VIEW = '^pg_stat(io)?_(xact_)?(all|sys|user)_(tables|indexes|sequences|functions)$';
const PER_DATABASE_FN =
  '^pg_stat_get_(xact_)?(numscans|lastscan|tuples_[a-z_]+|live_tuples|dead_tuples|mod_since_analyze|ins_since_vacuum|blocks_(fetched|hit)|last_(auto)?(vacuum|analyze)_time|(auto)?(vacuum|analyze)_count|total_(auto)?(vacuum|analyze)_time|function_[a-z_]+)$';

/**
 * The targets as rows (kind, oid, col, name, scope, monitor). Found in the catalog rather than
 * listed, so a Postgres version with more statistics views or functions is covered, and one with
 * fewer does not fail. `monitor`: granted back to pg_read_all_stats.
 */
const TARGETS = `
  SELECT 'relation' AS kind, c.oid, NULL::name AS col, c.relname::text AS name,
         CASE WHEN c.relname ~ '${PER_DATABASE_VIEW}' THEN 'database' ELSE 'cluster' END AS scope, true AS monitor
    FROM pg_catalog.pg_class c
   WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'v' AND c.relname ~ '^pg_stat(io)?_'
  UNION ALL
  SELECT 'function', p.oid, NULL, p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
         CASE WHEN p.proname ~ '${PER_DATABASE_FN}' THEN 'database' ELSE 'cluster' END, true
    FROM pg_catalog.pg_proc p
   WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE 'pg\\_stat\\_get\\_%'
  UNION ALL
  SELECT 'function', p.oid, NULL, p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
         'database', false
    FROM pg_catalog.pg_proc p
   WHERE p.pronamespace = 'pg_catalog'::regnamespace AND (p.proname LIKE 'lo\\_%' OR p.proname IN ('loread', 'lowrite'))
  UNION ALL
  SELECT x.kind, x.oid, x.col, x.name, x.scope, x.monitor
    FROM (VALUES
      ('relation', pg_catalog.to_regclass('pg_catalog.pg_locks')::oid, NULL::name, 'pg_locks', 'cluster', true),
      ('function', pg_catalog.to_regprocedure('pg_catalog.pg_lock_status()')::oid, NULL, 'pg_lock_status()', 'cluster', true),
      ('relation', pg_catalog.to_regclass('pg_catalog.pg_replication_slots')::oid, NULL, 'pg_replication_slots', 'cluster', true),
      ('function', pg_catalog.to_regprocedure('pg_catalog.pg_get_replication_slots()')::oid, NULL, 'pg_get_replication_slots()', 'cluster', true),
      ('relation', pg_catalog.to_regclass('pg_catalog.pg_db_role_setting')::oid, NULL, 'pg_db_role_setting', 'cluster', false),
      ('column', pg_catalog.to_regclass('pg_catalog.pg_roles')::oid, 'rolconfig', 'pg_roles.rolconfig', 'cluster', false),
      ('column', pg_catalog.to_regclass('pg_catalog.pg_user')::oid, 'useconfig', 'pg_user.useconfig', 'cluster', false),
      ('relation', pg_catalog.to_regclass('pg_catalog.pg_largeobject_metadata')::oid, NULL, 'pg_largeobject_metadata', 'database', false),
      ('function', pg_catalog.to_regprocedure('pg_catalog.pg_notify(text, text)')::oid, NULL, 'pg_notify(text, text)', 'database', false)
    ) AS x(kind, oid, col, name, scope, monitor)
   WHERE x.oid IS NOT NULL`;

/** The targets for a placement, with whether PUBLIC still reaches each. `shared` is a constant, never input. */
function targetsSql(shared: boolean): string {
  return `
  SELECT t.kind, t.oid, t.col, t.name, t.scope, t.monitor,
         CASE t.kind
           WHEN 'relation' THEN pg_catalog.has_table_privilege('public', t.oid, 'SELECT')
           WHEN 'column' THEN pg_catalog.has_column_privilege('public', t.oid, t.col, 'SELECT')
           ELSE pg_catalog.has_function_privilege('public', t.oid, 'EXECUTE')
         END AS reachable
    FROM (${TARGETS}) t
   WHERE t.scope = 'cluster' OR ${shared ? 'true' : 'false'}`;
}

/** What PUBLIC still reaches of what `hardenDatabase` revokes in this placement. */
export async function observeHardening(db: Queryable, spec: HardeningSpec): Promise<HardeningState> {
  const { rows } = await db.query<{
    kind: HardeningTarget['kind'];
    name: string;
    scope: HardeningTarget['scope'];
    reachable: boolean;
  }>(`SELECT kind, name, scope, reachable FROM (${targetsSql(spec.shared)}) s ORDER BY kind, name`);
  const targets = rows.map((r) => ({ kind: r.kind, name: r.name, scope: r.scope, reachable: r.reachable }));
  return { targets, reachable: targets.filter((t) => t.reachable).map((t) => t.name) };
}

/**
 * Revokes from PUBLIC, in the database `db` is connected to, what lets a tenant see or signal the
 * others (see the module comment). Idempotent: a hardened database costs one catalog read and no
 * write. The statements are built by the server from catalog names (format with %I), in one
 * implicit transaction behind Tenantry's per-database lock (metaLockSql), so concurrent starts do not collide on
 * the catalog rows ("tuple concurrently updated").
 */
export async function hardenDatabase(db: Queryable, spec: HardeningSpec): Promise<HardeningState> {
  const before = await observeHardening(db, spec);
  if (before.reachable.length === 0) return before;
  await db.query(
    `${metaLockSql('tenantry.hardening')};
DO $hardening$
DECLARE
  r record;
  target text;
BEGIN
  FOR r IN ${targetsSql(spec.shared)} LOOP
    CONTINUE WHEN NOT r.reachable;
    IF r.kind = 'function' THEN
      target := pg_catalog.format('FUNCTION pg_catalog.%I(%s)',
        (SELECT proname FROM pg_catalog.pg_proc WHERE oid = r.oid), pg_catalog.pg_get_function_identity_arguments(r.oid));
      EXECUTE pg_catalog.format('REVOKE EXECUTE ON %s FROM PUBLIC', target);
      IF r.monitor THEN EXECUTE pg_catalog.format('GRANT EXECUTE ON %s TO pg_read_all_stats', target); END IF;
    ELSE
      target := pg_catalog.format('TABLE pg_catalog.%I', (SELECT relname FROM pg_catalog.pg_class WHERE oid = r.oid));
      EXECUTE pg_catalog.format('REVOKE SELECT ON %s FROM PUBLIC', target);
      IF r.monitor THEN EXECUTE pg_catalog.format('GRANT SELECT ON %s TO pg_read_all_stats', target); END IF;
      IF r.kind = 'column' THEN
        -- Every other column stays readable: only SELECT * and the column itself are refused.
        EXECUTE pg_catalog.format('GRANT SELECT (%s) ON %s TO PUBLIC',
          (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
             FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> r.col),
          target);
      END IF;
    END IF;
  END LOOP;
END
$hardening$`,
  );
  return observeHardening(db, spec);
}
