import pg from 'pg';
import type { DataPlane } from '../dataplane/dataplane.js';
import { TenantryError } from '../domain/errors.js';
import type { Queryable } from '../domain/queryable.js';
import type { RolloutTier } from '../domain/rollout.js';
import { mapLimit } from '../lib/concurrency.js';
import { migratePrivateSchema, migratePrivateSchemasAtOnce, placementOf } from '../promotion/placement.js';
import {
  ensureMeta,
  guardPrivateSchemaSql,
  migrateSchema,
  poolProvider,
  type SchemaSpec,
  type TenantTemplate,
} from '../providers/postgres/index.js';

export interface MigrationTenant {
  id: string;
  slug: string;
  tier: RolloutTier;
}

/** The version a schema's catalog records (null when none). */
async function versionIn(db: Queryable, schema: string): Promise<number | null> {
  const { rows } = await db.query<{ version: number }>(
    'SELECT version FROM tenantry_meta.schema_versions WHERE schema_name = $1',
    [schema],
  );
  return rows[0]?.version ?? null;
}

/**
 * A tenant's placement (and the pool's shared tables) brought to a template version on the local
 * target's data plane: each template migration in its own transaction with the version bump, under
 * the schema's lock (providers/postgres/schema.ts `migrateSchema`), a version already there never
 * applied again. A version that creates tables also puts the write-freeze guards on them, in the
 * same transaction, so a promotion's freeze covers them, and nothing in the schema stays reachable by
 * PUBLIC (promotion/placement.ts `migratePrivateSchema`). Used by the rollout runner, and by the
 * executor when it resumes a tenant's `migrate` operation after a crash.
 */
export class RolloutMigrator {
  /** Sessions on the shared data database (pool and bridge schemas), as many as a wave runs at once. */
  private readonly shared: pg.Pool;
  /** The pool's shared tables' version, once read or made (it only moves forward). */
  private poolAt: number | undefined;

  constructor(
    private readonly dp: DataPlane,
    private readonly template: TenantTemplate,
    /** Versions that create tables (the template lint says which). */
    private readonly createsTables: readonly number[],
    opts: { maxConnections?: number } = {},
  ) {
    this.shared = new pg.Pool({
      connectionString: dp.urlFor(dp.names.database),
      max: opts.maxConnections ?? 32,
      idleTimeoutMillis: 10_000,
    });
    this.shared.on('error', () => {});
  }

  /** The newest version the template has. */
  get newestVersion(): number {
    return this.template.version;
  }

  private spec(schema: string): SchemaSpec {
    return { name: schema, owner: this.dp.names.ownerRole, template: this.template };
  }

  private async onShared<T>(fn: (db: Queryable) => Promise<T>): Promise<T> {
    const c = await this.shared.connect();
    try {
      return await fn(c);
    } finally {
      c.release();
    }
  }

  /** The version the pool's shared tables are at (0 when there is no pool yet). */
  async poolVersion(): Promise<number> {
    const n = this.dp.names;
    const v = await this.onShared(async (db) => {
      await ensureMeta(db);
      return (await versionIn(db, n.poolSchema)) ?? 0;
    });
    this.poolAt = Math.max(this.poolAt ?? 0, v);
    return v;
  }

  /**
   * The platform step: the pool's shared tables to `toVersion` (its RLS, policies, grants and guards
   * converged on any new table). Returns the version found and the versions applied.
   */
  async migratePool(toVersion: number): Promise<{ fromVersion: number; applied: number[]; version: number }> {
    const n = this.dp.names;
    const fromVersion = await this.poolVersion();
    if (fromVersion >= toVersion) return { fromVersion, applied: [], version: fromVersion };
    const out = await this.onShared(async (db) => {
      const r = await migrateSchema(db, this.spec(n.poolSchema), { from: fromVersion, toVersion });
      await poolProvider.create(db, {
        schema: n.poolSchema,
        owner: n.ownerRole,
        appRole: n.poolRole,
        database: n.database,
        setting: n.tenantSetting,
        template: this.template,
      });
      return r;
    });
    this.poolAt = Math.max(this.poolAt ?? 0, out.version);
    return { fromVersion, ...out };
  }

  /** A pool tenant can be at `toVersion` only once the shared tables are (the platform step). */
  async assertPoolAt(toVersion: number): Promise<void> {
    if ((this.poolAt ?? 0) < toVersion) await this.poolVersion();
    if ((this.poolAt ?? 0) < toVersion) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the pool's shared tables are at version ${this.poolAt ?? 0}, behind ${toVersion}: the rollout's platform step migrates them first`,
        { retryable: true },
      );
    }
  }

  /**
   * One tenant to `toVersion`, from `from` (its recorded version). A pool tenant's rows are in the
   * shared tables: nothing to apply, but they must be at the version already (the platform step). A
   * bridge schema a promotion keeps for its rollback window (`retained`) moves too, first: a rollback
   * moves the tenant only between placements of the same version.
   */
  async migrateTenant(
    t: MigrationTenant,
    from: number,
    toVersion: number,
    retained: readonly RolloutTier[] = [],
  ): Promise<{ applied: number[]; version: number; observed?: number | null }> {
    if (t.tier !== 'bridge' && retained.includes('bridge'))
      await this.migrateTenant({ ...t, tier: 'bridge' }, from, toVersion);
    if (t.tier === 'pool') {
      await this.assertPoolAt(toVersion);
      return { applied: [], version: toVersion };
    }
    const place = placementOf(this.dp, t.slug, t.tier);
    const spec = this.spec(place.schema);
    const run = (db: Queryable, prepare: boolean) =>
      migratePrivateSchema(db, spec, {
        from,
        toVersion,
        andThen: (v) => this.guardsFor(v, place.schema),
        prepare,
      });
    if (t.tier === 'bridge') return this.onShared((db) => run(db, true));
    // A silo's session is its own, opened for this: the version is read back on it after the
    // commits (`observed`), which the rollout's final check takes instead of a second session.
    return this.dp.withDatabase(place.database, async (db) => {
      const out = await run(db, false);
      return { ...out, observed: await versionIn(db, place.schema) };
    });
  }

  /** The statements a version adds to each schema's transaction: the freeze guards on the tables it creates. */
  private guardsFor(version: number, schema: string): string[] {
    return this.createsTables.includes(version) ? [guardPrivateSchemaSql(schema)] : [];
  }

  /**
   * Bridge tenants, each at the version before `toVersion` and with no other placement to move, brought
   * to it in one round trip on one shared session (promotion/placement.ts `migratePrivateSchemasAtOnce`):
   * each tenant's own transaction, as migrateTenant's. Throws on any failure, after which some may be
   * at the version and the others not: the caller migrates each one with migrateTenant.
   */
  async migrateBridgesAtOnce(ts: readonly MigrationTenant[], toVersion: number): Promise<void> {
    const items = ts.map((t) => {
      if (t.tier !== 'bridge') throw new Error(`${t.slug} is not a bridge tenant`);
      const schema = placementOf(this.dp, t.slug, t.tier).schema;
      return { spec: this.spec(schema), andThen: this.guardsFor(toVersion, schema) };
    });
    await this.onShared((db) => migratePrivateSchemasAtOnce(db, items, toVersion));
  }

  /**
   * The ledger against the catalogs: each tenant's schema version as the data plane records it (one
   * read of the shared database; one short session per silo, `parallelism` at a time). The three reads
   * run at once: a silo's fresh session costs some 8 ms of CPU, the shared read tens of ms, and the
   * rollout waits for the slowest. The pool's version stands for every pool tenant.
   */
  async versionsOf(
    tenants: MigrationTenant[],
    opts: { parallelism?: number } = {},
  ): Promise<Map<string, number | null>> {
    const out = new Map<string, number | null>();
    const bridges = tenants.filter((t) => t.tier === 'bridge');
    const pools = tenants.filter((t) => t.tier === 'pool');
    const shared = async () => {
      if (bridges.length === 0) return;
      const names = bridges.map((t) => placementOf(this.dp, t.slug, t.tier).schema);
      const { rows } = await this.shared.query<{ schema_name: string; version: number }>(
        'SELECT schema_name, version FROM tenantry_meta.schema_versions WHERE schema_name = ANY($1::text[])',
        [names],
      );
      const byName = new Map(rows.map((r) => [r.schema_name, r.version]));
      bridges.forEach((t, i) => {
        out.set(t.id, byName.get(names[i] as string) ?? null);
      });
    };
    const pool = async () => {
      if (pools.length === 0) return;
      const v = await this.poolVersion();
      for (const t of pools) out.set(t.id, v);
    };
    const silos = () =>
      mapLimit(
        tenants.filter((t) => t.tier === 'silo'),
        Math.max(1, opts.parallelism ?? 8),
        async (t) => {
          const place = placementOf(this.dp, t.slug, t.tier);
          const v = await this.dp
            .withDatabase(place.database, (db) => versionIn(db, place.schema))
            .catch(() => null);
          out.set(t.id, v);
        },
      );
    await Promise.all([shared(), pool(), silos()]);
    return out;
  }

  async close(): Promise<void> {
    await this.shared.end();
  }
}
