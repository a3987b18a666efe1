import { ensureFreezeTriggers, type FreezeReason, freezeTenant, withFreezeLifted } from './freeze.js';
import { ensureMeta } from './meta.js';
import { schemaProvider, templateUpTo } from './schema.js';
import { ident, inTransaction, literal, lockDatabaseAcl, type Queryable } from './sql.js';
import type { Provider, TenantTemplate } from './types.js';

export const POLICY_NAME = 'tenant_isolation';

/**
 * The only policy shape Tenantry writes: one equality, no OR, the setting read once per
 * query through a scalar subquery, and '' (what a finished SET LOCAL leaves) meaning "no tenant".
 */
export function policyExpression(setting: string): string {
  if (!/^[a-z_]+\.[a-z_]+$/.test(setting)) throw new Error(`invalid tenant setting name: ${setting}`);
  return `tenant_id = (SELECT nullif(current_setting(${literal(setting)}, true), '')::uuid)`;
}

export interface PoolSpec {
  schema: string;
  owner: string;
  /** The shared login role of the pool: owns nothing, has no BYPASSRLS. */
  appRole: string;
  database: string;
  setting: string;
  template: TenantTemplate;
}

export interface PoolTableState {
  table: string;
  rlsEnabled: boolean;
  rlsForced: boolean;
  owner: string;
  policies: {
    name: string;
    command: string;
    using: string | null;
    withCheck: string | null;
    permissive: boolean;
  }[];
}

export interface PoolState {
  schema: string;
  templateVersion: number;
  tables: PoolTableState[];
}

export async function observePoolTables(db: Queryable, schema: string): Promise<PoolTableState[]> {
  const { rows } = await db.query<{
    relname: string;
    relrowsecurity: boolean;
    relforcerowsecurity: boolean;
    owner: string;
    policies: PoolTableState['policies'] | null;
  }>(
    `SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) AS owner,
            (SELECT jsonb_agg(jsonb_build_object(
                      'name', p.polname, 'command', p.polcmd::text, 'permissive', p.polpermissive,
                      'using', pg_get_expr(p.polqual, p.polrelid),
                      'withCheck', pg_get_expr(p.polwithcheck, p.polrelid)) ORDER BY p.polname)
               FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
      ORDER BY c.relname`,
    [schema],
  );
  return rows.map((r) => ({
    table: r.relname,
    rlsEnabled: r.relrowsecurity,
    rlsForced: r.relforcerowsecurity,
    owner: r.owner,
    policies: r.policies ?? [],
  }));
}

/** The shared pool: template tables, RLS enabled and forced, one policy per table, DML for the app role. */
export const poolProvider: Provider<PoolSpec, PoolState> = {
  kind: 'pool',

  /**
   * A new pool is built at the template's newest version; an existing one is converged (RLS, policies,
   * grants, guards) at the version it is at. A newer version reaches the shared tables only as a
   * rollout's platform step (docs/rollouts.md), before any pool tenant is moved to it, never as a side
   * effect of a start or a repair.
   */
  async create(db, spec) {
    const existing = await schemaProvider.observe(db, {
      name: spec.schema,
      owner: spec.owner,
      template: spec.template,
    });
    if (!existing) {
      await schemaProvider.create(db, { name: spec.schema, owner: spec.owner, template: spec.template });
      return this.update(db, spec);
    }
    return this.update(db, { ...spec, template: templateUpTo(spec.template, existing.templateVersion) });
  },

  async observe(db, spec) {
    const schema = await schemaProvider.observe(db, {
      name: spec.schema,
      owner: spec.owner,
      template: spec.template,
    });
    if (!schema) return null;
    return {
      schema: spec.schema,
      templateVersion: schema.templateVersion,
      tables: await observePoolTables(db, spec.schema),
    };
  },

  async update(db, spec) {
    await schemaProvider.update(db, { name: spec.schema, owner: spec.owner, template: spec.template });
    const s = ident(spec.schema);
    const expr = policyExpression(spec.setting);
    const tables = await observePoolTables(db, spec.schema);
    await inTransaction(db, async () => {
      for (const t of tables) {
        const qt = `${s}.${ident(t.table)}`;
        await db.query(`ALTER TABLE ${qt} ENABLE ROW LEVEL SECURITY`);
        await db.query(`ALTER TABLE ${qt} FORCE ROW LEVEL SECURITY`);
        // Replace every policy: a stray permissive policy would OR itself into ours.
        for (const p of t.policies) await db.query(`DROP POLICY ${ident(p.name)} ON ${qt}`);
        await db.query(
          `CREATE POLICY ${ident(POLICY_NAME)} ON ${qt} AS PERMISSIVE FOR ALL TO PUBLIC USING (${expr}) WITH CHECK (${expr})`,
        );
      }
      const role = ident(spec.appRole);
      await db.query(`REVOKE ALL ON SCHEMA ${s} FROM PUBLIC`);
      await db.query(`GRANT USAGE ON SCHEMA ${s} TO ${role}`);
      await db.query(`REVOKE ALL ON ALL TABLES IN SCHEMA ${s} FROM PUBLIC`);
      await db.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${s} TO ${role}`);
      // A template table with a serial key needs its (shared) sequence.
      await db.query(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ${s} TO ${role}`);
      await lockDatabaseAcl(db);
      await db.query(`GRANT CONNECT ON DATABASE ${ident(spec.database)} TO ${role}`);
    });
    // The per-tenant write freeze's guard: created once, so freezing a tenant never takes a lock on these tables.
    await ensureFreezeTriggers(db, spec.schema, { owner: spec.owner });
    const state = await this.observe(db, spec);
    if (!state) throw new Error(`pool schema ${spec.schema} vanished during update`);
    return state;
  },

  async delete(db, spec) {
    await schemaProvider.delete(db, { name: spec.schema, owner: spec.owner, template: spec.template });
  },
};

export interface PoolMembershipSpec {
  schema: string;
  tenantId: string;
  slug: string;
  setting: string;
  /** Rows deleted per statement on removal, so offboarding never holds long locks. */
  deleteBatchSize?: number;
  /**
   * Login roles that can write the pool (its shared role): on removal the tenant is frozen first and
   * the freeze waits for their older transactions, so no row lands behind the deletion.
   */
  writers?: string[];
  /** What the tenant's frozen marker, kept after removal, says to a late writer. Default `offboarded`. */
  freezeReason?: Extract<FreezeReason, 'offboarded' | 'moved'>;
  freezeWaitMs?: number;
  /** Called after each deleted batch (progress, fault injection in crash tests). */
  afterBatch?: () => Promise<void>;
}

export interface PoolMembershipState {
  tenantId: string;
  slug: string;
  /** Rows per table still carrying the tenant's id. Only computed when asked (it scans). */
  rows?: Record<string, number>;
}

/** Tables of a schema ordered so that referencing tables come before the tables they reference. */
export async function deletionOrder(db: Queryable, schema: string): Promise<string[]> {
  const { rows } = await db.query<{ t: string; refs: string[] }>(
    `SELECT c.relname AS t,
            coalesce(array(SELECT DISTINCT rc.relname::text FROM pg_constraint k JOIN pg_class rc ON rc.oid = k.confrelid
                            WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid <> c.oid), '{}') AS refs
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname`,
    [schema],
  );
  const refs = new Map(rows.map((r) => [r.t, new Set(r.refs)]));
  const order: string[] = [];
  const placed = new Set<string>();
  // Repeatedly take the tables no remaining table references.
  while (placed.size < refs.size) {
    const ready = [...refs.keys()].filter(
      (t) => !placed.has(t) && ![...refs.entries()].some(([o, r]) => !placed.has(o) && o !== t && r.has(t)),
    );
    const next = ready.length > 0 ? ready : [...refs.keys()].filter((t) => !placed.has(t)).slice(0, 1);
    for (const t of next) {
      placed.add(t);
      order.push(t);
    }
  }
  return order;
}

export const poolMembershipProvider: Provider<PoolMembershipSpec, PoolMembershipState> = {
  kind: 'pool-membership',

  async create(db, spec) {
    const insert = () =>
      db.query(
        `INSERT INTO tenantry_meta.pool_members (tenant_id, slug) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET slug = excluded.slug`,
        [spec.tenantId, spec.slug],
      );
    await insert().catch(async (e: { code?: string }) => {
      if (e.code !== '42P01' && e.code !== '3F000') throw e; // bookkeeping not there yet
      await ensureMeta(db);
      await insert();
    });
    return { tenantId: spec.tenantId, slug: spec.slug };
  },

  async observe(db, spec) {
    await ensureMeta(db);
    const { rows } = await db.query<{ slug: string }>(
      'SELECT slug FROM tenantry_meta.pool_members WHERE tenant_id = $1',
      [spec.tenantId],
    );
    return rows[0] ? { tenantId: spec.tenantId, slug: rows[0].slug } : null;
  },

  update(db, spec) {
    return this.create(db, spec);
  },

  /**
   * Freezes the tenant, then removes every row of it from the shared tables in batches, then the
   * membership. Shared credentials stay valid for every other tenant, so the freeze stays behind
   * as a marker: a late write carrying this tenant's id is refused, and nothing is left behind.
   */
  async delete(db, spec) {
    await ensureMeta(db);
    await freezeTenant(
      db,
      {
        schema: spec.schema,
        tenantId: spec.tenantId,
        reason: spec.freezeReason ?? 'offboarded',
        ...(spec.writers ? { writers: spec.writers } : {}),
        ...(spec.freezeWaitMs ? { waitMs: spec.freezeWaitMs } : {}),
      },
      { keepOnTimeout: true },
    );
    const batch = Math.max(1, Math.trunc(spec.deleteBatchSize ?? 10_000));
    const s = ident(spec.schema);
    for (const table of await deletionOrder(db, spec.schema)) {
      for (;;) {
        // Only this session writes past the freeze, one batch per transaction.
        const n = await withFreezeLifted(db, spec.schema, spec.tenantId, async () => {
          // The tenant context makes this work under FORCE RLS for a non-superuser admin too.
          await db.query('SELECT set_config($1, $2, true)', [spec.setting, spec.tenantId]);
          const res = await db.query(
            `DELETE FROM ${s}.${ident(table)} WHERE ctid = ANY (ARRAY(
               SELECT ctid FROM ${s}.${ident(table)} WHERE tenant_id = $1 LIMIT ${batch}))`,
            [spec.tenantId],
          );
          return res.rowCount ?? 0;
        });
        await spec.afterBatch?.();
        if (n < batch) break;
      }
    }
    await db.query('DELETE FROM tenantry_meta.pool_members WHERE tenant_id = $1', [spec.tenantId]);
  },
};
