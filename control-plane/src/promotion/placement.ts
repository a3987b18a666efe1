import { TenantryError } from '../domain/errors.js';
import { loginRoleNames, tenantObjectName } from '../domain/naming.js';
import type { Queryable } from '../domain/queryable.js';
import type { Tier } from '../domain/tiers.js';
import { migrateSchema, migrationSql, type SchemaSpec } from '../providers/postgres/schema.js';
import { ident, literal } from '../providers/postgres/sql.js';

/**
 * Where a tenant's tables live on each tier: the one answer to "bridge: the shared database, silo:
 * the tenant's own". Engines, drift and promotion ask here. No pg, no key store: plain names, and
 * the one way an existing private placement is brought to a template version (`migratePrivateSchema`).
 */

/** The data plane's names a placement is derived from (`DataPlane.names` has them). */
export interface PlacementNames {
  /** The shared database holding the pool schema and the bridge schemas. */
  database: string;
  /** NOLOGIN role that owns every tenant schema, table and silo database. */
  ownerRole: string;
  /** The pool's shared login role. */
  poolRole: string;
  poolSchema: string;
  siloSchema: string;
}

/** Where a tenant's tables live on a tier. */
export interface Placement {
  tier: Tier;
  database: string;
  schema: string;
  /** Pool tables are shared: every statement filters on tenant_id. */
  shared: boolean;
  /**
   * A shared placement's row-level security context: every session on it sets this tenant, so an
   * admin that does not bypass RLS (an RDS master user) sees and writes the tenant's rows.
   */
  context?: { setting: string; tenantId: string };
  /**
   * The roles that can write the placement (whose older transactions a freeze waits for): the group
   * holding the grants (the login itself, in the single-login layout) and its two logins.
   */
  writers: string[];
  /** The role owning the freeze guard; unset: the schema's owner. */
  owner?: string;
  /**
   * The server holding the placement when it is not the source's cluster (an RDS instance on the
   * aws target): admin URLs of its databases. Unset: the promotion's data plane.
   */
  server?: { urlFor(database: string): string };
  /**
   * Roles, grants and routing of the placement belong to someone else (the tenant's Pulumi stack
   * on the aws target): the promotion moves rows and freezes, nothing more.
   */
  managed?: boolean;
}

/** A login group and its two logins: every role that may write where the group holds grants. */
const writersOf = (group: string): string[] => [group, ...loginRoleNames(group)];

/** The tiers whose tables are in the shared database. */
type SharedDatabaseTier = 'pool' | 'bridge';

/** Where `slug`'s tables are in the shared database: the pool schema, or the tenant's bridge schema. */
function inSharedDatabase(
  names: Pick<PlacementNames, 'database' | 'poolSchema' | 'poolRole'>,
  slug: string,
  tier: SharedDatabaseTier,
): Placement {
  if (tier === 'pool') {
    return {
      tier,
      database: names.database,
      schema: names.poolSchema,
      shared: true,
      writers: writersOf(names.poolRole),
    };
  }
  const name = tenantObjectName(slug);
  return { tier, database: names.database, schema: name, shared: false, writers: writersOf(name) };
}

/** Where `slug`'s tables are on `tier` (a data plane, or anything carrying its names). */
export function placementOf(dp: { names: PlacementNames }, slug: string, tier: Tier): Placement {
  const owner = dp.names.ownerRole;
  switch (tier) {
    case 'pool':
    case 'bridge':
      return { ...inSharedDatabase(dp.names, slug, tier), owner };
    case 'silo': {
      const name = tenantObjectName(slug);
      return {
        tier,
        database: name,
        schema: dp.names.siloSchema,
        shared: false,
        writers: writersOf(name),
        owner,
      };
    }
    default:
      throw new TenantryError(
        'TIER_NOT_AVAILABLE_ON_TARGET',
        `tier ${tier} has no Postgres placement on this target`,
      );
  }
}

/** The names of a shared cluster whose tenant objects a stack manages (the aws target's platform settings). */
export interface ManagedPlacementNames extends Pick<PlacementNames, 'database' | 'poolSchema' | 'poolRole'> {
  /** The setting the pool's row-level security policy reads the tenant from. */
  tenantSetting: string;
}

/**
 * Where a tenant's tables are in the shared database of a cluster whose roles, grants and routing
 * a stack manages (the aws target): the same layout as `placementOf`, marked `managed`, the
 * schema's owner left to the stack. Its admin (an RDS master user) does not bypass RLS: on the
 * pool, it sees and writes the rows of the tenant it sets.
 */
export function managedPlacementOf(
  names: ManagedPlacementNames,
  tenant: { id: string; slug: string },
  tier: SharedDatabaseTier,
): Placement {
  const p = inSharedDatabase(names, tenant.slug, tier);
  return {
    ...p,
    managed: true,
    ...(p.shared ? { context: { setting: names.tenantSetting, tenantId: tenant.id } } : {}),
  };
}

/** The tables of a placement's schema (plain and partitioned), by name. */
export async function tablesOf(db: Queryable, schema: string): Promise<string[]> {
  const { rows } = await db.query<{ t: string }>(
    `SELECT c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`,
    [schema],
  );
  return rows.map((r) => r.t);
}

/**
 * What a template version must not leave in a tenant's own schema (bridge, silo): anything PUBLIC
 * reaches. A version that grants its schema or a table to PUBLIC would open them to every other
 * role of the cluster. Appended to each version's transaction wherever an existing private
 * placement is migrated (the rollout's migrator, a promotion's source); a schema built at the
 * version loses the same in its grants step (providers/postgres/grants.ts), and the pool's shared
 * tables are converged by the platform step.
 */
export function revokePublicSql(schema: string): string[] {
  const s = ident(schema);
  return [
    `REVOKE ALL ON SCHEMA ${s} FROM PUBLIC`,
    `REVOKE ALL ON ALL TABLES IN SCHEMA ${s} FROM PUBLIC`,
    `REVOKE ALL ON ALL SEQUENCES IN SCHEMA ${s} FROM PUBLIC`,
  ];
}

/** What the check of `publicCheckSql` fails a version's transaction with. */
const PUBLIC_CHECK = 'tenantry public grant check';

/**
 * revokePublicSql's guarantee at the price of an indexed read: the transaction fails unless PUBLIC
 * holds nothing on the schema named by `name` (a SQL text expression: a literal, or `$1` when
 * prepared), on any relation in it, or on any of their columns. The relations are found through their
 * dependency on the schema (pg_depend is indexed by what is referenced), where `REVOKE ... ON ALL
 * TABLES/SEQUENCES IN SCHEMA` reads the whole of pg_class once per kind of relation: 250 ms a tenant
 * with 10,000 schemas, 20 times the version's own DDL (docs/benchmarks.md, Rollouts).
 */
function publicCheckSql(name: string): string {
  const nsp = `${name}::regnamespace`;
  return `SELECT CASE WHEN count(*) = 0 THEN 0 ELSE ('${PUBLIC_CHECK} ' || count(*))::int END FROM (
    SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.oid = ${nsp} AND a.grantee = 0
    UNION ALL
    SELECT 1 FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
     WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_namespace'::regclass AND d.refobjid = ${nsp}
       AND (EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = 0)
            OR EXISTS (SELECT 1 FROM pg_attribute t, aclexplode(t.attacl) a
                        WHERE t.attrelid = c.oid AND t.attacl IS NOT NULL AND a.grantee = 0))) AS public_grants`;
}

/** The session-level name publicCheckSql is prepared under. */
const PUBLIC_CHECK_STATEMENT = 'tenantry_public_check';
/** Sessions holding the prepared check (a pooled session keeps it, and its plan, for every tenant it migrates). */
const checkPrepared = new WeakSet<Queryable>();

/**
 * The check prepared in `db`'s session, once. Parsed and planned in every transaction it cost about
 * 0.7 ms of the server's CPU per tenant, more than the lock, the bump and the version's ALTERs
 * together (1.5 s over 1,520 bridge schemas, as much again as the floor's); executed prepared, about
 * 0.1 ms. False if it could not be prepared: the check is then inlined.
 */
async function prepareCheck(db: Queryable): Promise<boolean> {
  if (checkPrepared.has(db)) return true;
  try {
    await db.query(`PREPARE ${PUBLIC_CHECK_STATEMENT}(text) AS ${publicCheckSql('$1')}`);
  } catch (e) {
    // 42P05: already prepared in this session (by another wrapper of it).
    if ((e as { code?: string }).code !== '42P05') return false;
  }
  checkPrepared.add(db);
  return true;
}

/**
 * The check's statements at the end of a version's transaction on `schema`. Prepared: the search_path
 * goes back to the session's default, since a cached plan is planned again whenever the search_path
 * differs from the one it was prepared under (the migration sets the schema's).
 */
const publicCheck = (schema: string, prepared: boolean): string[] =>
  prepared
    ? ['SET LOCAL search_path TO DEFAULT', `EXECUTE ${PUBLIC_CHECK_STATEMENT}(${literal(schema)})`]
    : [publicCheckSql(literal(schema))];

/**
 * An existing private placement's schema (bridge, a silo's) brought to `toVersion`: each version in
 * its own transaction with its bump, under the schema's lock (providers/postgres/schema.ts
 * `migrateSchema`), `andThen`'s statements appended, and nothing left that PUBLIC reaches. Each
 * transaction ends with publicCheckSql (prepared in the session: prepareCheck); a version that does
 * grant to PUBLIC fails it, rolls back whole, and is applied again with revokePublicSql (the versions
 * before it are found applied and skipped). The rollout's migrator and a promotion's source both
 * migrate through here.
 */
export async function migratePrivateSchema(
  db: Queryable,
  spec: SchemaSpec,
  opts: {
    from: number;
    toVersion: number;
    andThen?: (version: number) => string[];
    /**
     * false: a session opened for this one schema (a silo's), where preparing the check would cost
     * a round trip and the same planning as the inlined check, once.
     */
    prepare?: boolean;
  },
): Promise<{ applied: number[]; version: number }> {
  const migrate = (revoke: boolean, prepared: boolean) =>
    migrateSchema(db, spec, {
      from: opts.from,
      toVersion: opts.toVersion,
      andThen: (v) => [
        ...(opts.andThen?.(v) ?? []),
        ...(revoke ? revokePublicSql(spec.name) : publicCheck(spec.name, prepared)),
      ],
    });
  let prepared = opts.prepare === false ? false : await prepareCheck(db);
  for (;;) {
    try {
      return await migrate(false, prepared);
    } catch (e) {
      const err = e as { code?: string; message?: unknown };
      // 26000: the statement is not in the session that ran the transaction (a Queryable over several
      // sessions); the transaction rolled back whole, so it is run again with the check inlined.
      if (prepared && err.code === '26000') {
        checkPrepared.delete(db);
        prepared = false;
        continue;
      }
      if (!String(err.message).includes(PUBLIC_CHECK)) throw e;
      return migrate(true, prepared);
    }
  }
}

/**
 * Several private schemas in the shared database, each at the version before `version`, brought to
 * it in one round trip: each schema's transaction (explicit BEGIN and COMMIT) is exactly the one
 * migratePrivateSchema sends for it, PUBLIC check included. Resolves once every one has committed.
 * On a failure, the transactions before the failing one have committed and the rest never ran (the
 * session's failed transaction is rolled back here): the caller then migrates each schema on its own
 * through migratePrivateSchema, which finds those already at the version and skips them, and gives
 * each failure to its own schema (a PUBLIC grant revoked, a transient error retried, a broken schema
 * reported).
 */
export async function migratePrivateSchemasAtOnce(
  db: Queryable,
  items: readonly { spec: SchemaSpec; andThen?: readonly string[] }[],
  version: number,
): Promise<void> {
  const prepared = await prepareCheck(db);
  const sql = items
    .map(
      ({ spec, andThen }) =>
        `BEGIN;\n${migrationSql(spec, version, [...(andThen ?? []), ...publicCheck(spec.name, prepared)])};\nCOMMIT`,
    )
    .join(';\n');
  try {
    await db.query(sql);
  } catch (e) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}
