import fs from 'node:fs';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { observeHardening } from '../../control-plane/src/providers/postgres/index.js';
import {
  adminUrl,
  auth,
  connectionOf,
  superQuery,
  type TestStack,
  tenantClient,
  waitForOperation,
} from '../helpers/runtime.js';
import { promote } from './promotion-helpers.js';
import {
  attempt,
  hardenAsSuperuser,
  secretsOf,
  sqlstate,
  type TableDef,
  type Victim,
} from './red-team-shared.js';

/**
 * The red-team isolation suite, written once: every tenant tries, with its own credentials, to reach
 * every other tenant's data on every tier, in every table of the template at the fleet's version.
 * Each attempt must be refused or see/affect zero rows. red-team.test.ts runs it on a fleet built at
 * version 1; red-team-v2.test.ts on a fleet rolled out to version 2 through POST /v1/rollouts, with
 * tenants onboarded after the rollout beside it.
 */
export type Tier = 'pool' | 'bridge' | 'silo';
export interface RedTeamTenant extends Victim {
  tier: Tier;
  slug: string;
  conn: Awaited<ReturnType<typeof connectionOf>>;
}

/** The template at the version a fleet is at, as the suite attacks it. */
export interface RedTeamSchema {
  version: number;
  /** Every table of the template at that version (the suite checks the live set is the same). */
  tables: Record<string, TableDef>;
  /**
   * A nullable column the version added to every table, with an index on (tenant_id, column): the
   * suite writes a secret into it for every tenant and attacks through it.
   */
  added?: { column: string; index: (table: string) => string };
}

export interface RedTeamFleet {
  stack: TestStack;
  /** Seeded: one row per table per tenant (seedTenant), the added column holding the tenant's note. */
  tenants: RedTeamTenant[];
}

/**
 * What bootstrap does (engine/local.ts): the shared database and the silo template are hardened
 * before any tenant exists, so every silo is a clone of a hardened template. Call it on a fresh
 * stack, before its first onboarding.
 */
export async function hardenDataPlane(s: TestStack): Promise<void> {
  expect(await hardenAsSuperuser(s.dataDb, true)).toEqual([]);
  expect(await hardenAsSuperuser(dataPlaneNames(s.dataDb).siloTemplate, false)).toEqual([]);
}

/** An onboarded tenant with its connection and the secret values the suite seeds for it. */
export async function redTeamTenant(
  s: TestStack,
  o: { slug: string; id: string },
  tier: Tier,
): Promise<RedTeamTenant> {
  return {
    tier,
    slug: o.slug,
    id: o.id,
    conn: await connectionOf(s, o.slug),
    userId: crypto.randomUUID(),
    email: `owner@${o.slug}.example`,
    settingKey: `key-of-${o.slug}`,
    note: `note-${crypto.randomUUID()}`,
  };
}

/**
 * Seeds, as the superuser, the tenant's row in each of `tables` (every table of the schema unless
 * given); with `schema.added`, the added column of each of the tenant's rows then holds its note.
 * Tenants onboarded before a rollout are seeded with the old version's tables, the rest after it.
 */
export async function seedTenant(
  t: RedTeamTenant,
  schema: RedTeamSchema,
  tables = Object.keys(schema.tables),
): Promise<void> {
  for (const name of tables) {
    const [values, params] = schema.tables[name]!.seed(t);
    await superQuery(t.conn.database, `INSERT INTO ${t.conn.schema}.${name} ${values}`, params);
  }
  if (schema.added) {
    for (const name of Object.keys(schema.tables))
      await superQuery(
        t.conn.database,
        `UPDATE ${t.conn.schema}.${name} SET ${schema.added.column} = $2 WHERE tenant_id = $1`,
        [t.id, t.note],
      );
  }
}

/** An intruder's insert, update and delete of b's rows in every table of `schema`, in schema `where`. */
function writesOf(schema: RedTeamSchema, b: Victim, where: string): [string, unknown[]][] {
  return Object.entries(schema.tables).flatMap(([name, def]) => {
    const [values, params] = def.insert(b);
    return [
      [`INSERT INTO ${where}.${name} ${values}`, params],
      [`UPDATE ${where}.${name} SET ${def.set} WHERE tenant_id = $1`, [b.id]],
      [`DELETE FROM ${where}.${name} WHERE tenant_id = $1`, [b.id]],
    ] as [string, unknown[]][];
  });
}

/**
 * Declares the whole suite under `name`. `setupFleet` builds the stack and its tenants (two or more
 * per tier, seeded); the caller closes the stack.
 */
export function describeRedTeam(
  name: string,
  schema: RedTeamSchema,
  setupFleet: () => Promise<RedTeamFleet>,
  setupTimeoutMs = 180_000,
): void {
  describe(name, () => {
    let s: TestStack;
    const tenants: RedTeamTenant[] = [];
    type T = RedTeamTenant;
    const { tables } = schema;
    const names = Object.keys(tables);

    beforeAll(async () => {
      const fleet = await setupFleet();
      s = fleet.stack;
      tenants.push(...fleet.tenants);
    }, setupTimeoutMs);

    /** Where a tenant's table lives, as seen from a session on its database. */
    const table = (t: T, name: string) => `${t.conn.schema}.${name}`;

    /** Every row of the tenant in every table, read as the superuser. */
    async function snapshot(t: T) {
      const out: Record<string, unknown[]> = {};
      for (const name of names) {
        out[name] = await superQuery(
          t.conn.database,
          `SELECT row_to_json(x)::text AS r FROM ${table(t, name)} x WHERE tenant_id = $1 ORDER BY 1`,
          [t.id],
        );
      }
      return out;
    }

    /** Runs each statement as tenant `a` (on `database`, a's own unless given); see attempt(). */
    const as = (
      a: T,
      statements: [string, unknown[]][],
      database = a.conn.database,
      settings: Record<string, string> = {},
    ) => attempt(a, statements, database, settings);

    const asOne = async (a: T, sql: string, params: unknown[] = [], database = a.conn.database) =>
      (await as(a, [[sql, params]], database))[0]!;

    const pairs = () => {
      const out: [T, T][] = [];
      for (const a of tenants) for (const b of tenants) if (a !== b) out.push([a, b]);
      return out;
    };

    describe('cross-tenant access, every pair of tiers, every table', () => {
      it('covers every ordered pair of tiers', () => {
        const seen = new Set(pairs().map(([a, b]) => `${a.tier}->${b.tier}`));
        expect(seen.size).toBe(9);
      });

      it('attacks every table of the template', async () => {
        const live = await superQuery<{ relname: string }>(
          s.dataDb,
          `SELECT relname FROM pg_class WHERE relnamespace = 'pool'::regnamespace AND relkind = 'r' ORDER BY 1`,
        );
        expect(live.map((r) => r.relname)).toEqual([...names].sort());
        // The seed is real: every tenant has one row in every table.
        for (const t of tenants) {
          for (const [name, rows] of Object.entries(await snapshot(t)))
            expect(rows, `${t.slug}.${name}`).toHaveLength(1);
        }
      });

      it(`every tenant is at version ${schema.version}: its record, its placement's catalog and its tables`, async () => {
        const placements = new Map<string, { database: string; schema: string }>();
        for (const t of tenants) {
          const res = await s.app.inject({
            method: 'GET',
            url: `/v1/tenants/${t.slug}`,
            headers: auth(s.tokens.sre),
          });
          expect({ slug: t.slug, version: res.json().templateVersion }).toEqual({
            slug: t.slug,
            version: schema.version,
          });
          const [row] = await superQuery<{ version: number }>(
            t.conn.database,
            'SELECT version FROM tenantry_meta.schema_versions WHERE schema_name = $1',
            [t.conn.schema],
          );
          expect({ slug: t.slug, catalog: row?.version }).toEqual({ slug: t.slug, catalog: schema.version });
          placements.set(`${t.conn.database}.${t.conn.schema}`, {
            database: t.conn.database,
            schema: t.conn.schema!,
          });
        }
        for (const [where, p] of placements) {
          const live = await superQuery<{ table: string; columns: string[] }>(
            p.database,
            `SELECT c.relname AS table, array_agg(a.attname::text ORDER BY a.attnum) AS columns
             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r' GROUP BY 1 ORDER BY 1`,
            [p.schema],
          );
          expect(
            live.map((r) => r.table),
            where,
          ).toEqual([...names].sort());
          if (schema.added)
            for (const r of live) expect(r.columns, `${where}.${r.table}`).toContain(schema.added.column);
        }
      });

      it("no tenant can read another tenant's rows in any table", async () => {
        for (const [a, b] of pairs()) {
          const results = await as(
            a,
            names.map((name) => [`SELECT * FROM ${table(b, name)} WHERE tenant_id = $1`, [b.id]]),
            b.conn.database,
          );
          results.forEach((r, i) => {
            const where = `${a.tier}:${a.slug} -> ${b.tier}:${b.slug}.${names[i]}`;
            expect(r.rows, where).toBe(0);
            for (const secret of secretsOf(b)) expect(r.refused ?? '', where).not.toContain(secret);
          });
        }
      });

      it("no tenant can insert, update or delete another tenant's rows in any table", async () => {
        for (const [a, b] of pairs()) {
          const before = await snapshot(b);
          const statements = writesOf(schema, b, b.conn.schema!);
          const results = await as(a, statements, b.conn.database);
          results.forEach((r, i) => {
            const where = `${a.tier}:${a.slug} -> ${b.tier}:${b.slug}: ${statements[i]![0]}`;
            expect(r.refused !== null || r.rows === 0, where).toBe(true);
            for (const secret of secretsOf(b)) expect(r.refused ?? '', where).not.toContain(secret);
          });
          expect(await snapshot(b), `${a.slug} -> ${b.slug}`).toEqual(before);
        }
      });

      if (schema.added) {
        const { column, index } = schema.added;
        /** Lookups by the victim's note, through the index wherever the planner can use one. */
        const lookups = (b: T): [string, unknown[]][] =>
          names.flatMap((name) => [
            [`SELECT * FROM ${table(b, name)} WHERE ${column} = $1`, [b.note]],
            [`SELECT * FROM ${table(b, name)} WHERE tenant_id = $1 AND ${column} = $2`, [b.id, b.note]],
          ]);
        const viaIndex = { enable_seqscan: 'off' };

        it(`each tenant finds its own rows by ${column}, through the index the version added`, async () => {
          for (const b of tenants) {
            const own = await as(b, lookups(b), b.conn.database, viaIndex);
            expect(
              own.map((r) => r.rows),
              b.slug,
            ).toEqual(own.map(() => 1));
            const c = await tenantClient(b.conn);
            try {
              await c.query('BEGIN');
              if (b.conn.tenantSetting)
                await c.query('SELECT set_config($1, $2, true)', [b.conn.tenantSetting, b.id]);
              await c.query(`SELECT set_config('enable_seqscan', 'off', true)`);
              for (const name of names) {
                const plan = await c.query(
                  `EXPLAIN (COSTS OFF) SELECT * FROM ${table(b, name)} WHERE tenant_id = $1 AND ${column} = $2`,
                  [b.id, b.note],
                );
                expect(plan.rows.map((r) => r['QUERY PLAN']).join('\n'), `${b.slug}.${name}`).toContain(
                  index(name),
                );
              }
              await c.query('ROLLBACK');
            } finally {
              await c.end();
            }
          }
        });

        it(`no tenant can find, change or delete another tenant's rows through ${column} or its index`, async () => {
          for (const [a, b] of pairs()) {
            const before = await snapshot(b);
            const attacks: [string, unknown[]][] = [
              ...lookups(b),
              ...names.flatMap(
                (name) =>
                  [
                    [`UPDATE ${table(b, name)} SET ${column} = 'pwned' WHERE ${column} = $1`, [b.note]],
                    [
                      `UPDATE ${table(b, name)} SET ${column} = 'pwned' WHERE tenant_id = $1 AND ${column} = $2`,
                      [b.id, b.note],
                    ],
                    [`DELETE FROM ${table(b, name)} WHERE ${column} = $1`, [b.note]],
                  ] as [string, unknown[]][],
              ),
            ];
            const results = await as(a, attacks, b.conn.database, viaIndex);
            results.forEach((r, i) => {
              const where = `${a.tier}:${a.slug} -> ${b.tier}:${b.slug}: ${attacks[i]![0]}`;
              expect(r.rows, where).toBe(0);
              for (const secret of secretsOf(b)) expect(r.refused ?? '', where).not.toContain(secret);
            });
            expect(await snapshot(b), `${a.slug} -> ${b.slug}`).toEqual(before);
          }
        });
      }

      it("bridge and silo roles cannot even connect to another tenant's silo, the control plane, or maintenance databases", async () => {
        for (const a of tenants.filter((t) => t.tier !== 'pool')) {
          for (const db of [
            s.controlDb,
            'postgres',
            'template1',
            ...tenants.filter((t) => t.tier === 'silo' && t !== a).map((t) => t.conn.database),
          ]) {
            const r = await asOne(a, 'SELECT 1', [], db);
            expect(r.refused, `${a.slug} -> ${db}`).toMatch(
              /permission denied for database|does not have CONNECT privilege/,
            );
          }
        }
        const pool = tenants.find((t) => t.tier === 'pool')!;
        for (const db of [s.controlDb, 'postgres', 'template1']) {
          expect((await asOne(pool, 'SELECT 1', [], db)).refused).toMatch(
            /permission denied|CONNECT privilege/,
          );
        }
      });
    });

    describe('pool row-level security', () => {
      const poolTenants = () => tenants.filter((t) => t.tier === 'pool');

      async function raw(t: T, fn: (c: pg.Client) => Promise<void>) {
        const c = await tenantClient(t.conn);
        try {
          await fn(c);
        } finally {
          await c.end();
        }
      }

      it('has exactly one policy per table, of the documented shape, with no OR', async () => {
        const expr = `(tenant_id = ( SELECT (NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid AS "nullif"))`;
        const rows = await superQuery<{
          relname: string;
          n: number;
          cmd: string[];
          permissive: boolean[];
          roles: string[];
          quals: string[];
          checks: string[];
        }>(
          s.dataDb,
          `SELECT c.relname, count(p.oid)::int AS n, array_agg(p.polcmd::text) AS cmd,
                array_agg(p.polpermissive) AS permissive, array_agg(p.polroles::text) AS roles,
                array_agg(pg_get_expr(p.polqual, p.polrelid)) AS quals,
                array_agg(pg_get_expr(p.polwithcheck, p.polrelid)) AS checks
           FROM pg_class c LEFT JOIN pg_policy p ON p.polrelid = c.oid
          WHERE c.relnamespace = 'pool'::regnamespace AND c.relkind = 'r'
          GROUP BY c.relname ORDER BY c.relname`,
        );
        expect(rows.map((r) => r.relname)).toEqual([...names].sort());
        for (const r of rows) {
          expect(r, r.relname).toEqual({
            relname: r.relname,
            n: 1,
            cmd: ['*'], // FOR ALL
            permissive: [true],
            roles: ['{0}'], // PUBLIC
            quals: [expr],
            checks: [expr],
          });
          expect(r.quals[0]).not.toMatch(/\bOR\b/i);
        }
      });

      it('sees zero rows in every table with no tenant set', async () => {
        await raw(poolTenants()[0]!, async (c) => {
          for (const name of names) expect((await c.query(`SELECT * FROM pool.${name}`)).rowCount).toBe(0);
        });
      });

      it('sees zero rows with an empty setting, and a malformed one errors without revealing data', async () => {
        const [a, b] = poolTenants();
        await raw(a!, async (c) => {
          await c.query('BEGIN');
          await c.query(`SELECT set_config('app.tenant_id', '', true)`);
          for (const name of names) expect((await c.query(`SELECT * FROM pool.${name}`)).rowCount).toBe(0);
          await c.query('COMMIT');
          for (const bad of ['garbage', "' OR 1=1 --", `${b!.id} OR true`]) {
            for (const name of names) {
              await c.query('BEGIN');
              await c.query(`SELECT set_config('app.tenant_id', $1, true)`, [bad]);
              const err = await c.query(`SELECT * FROM pool.${name}`).then(
                (r) => ({ rows: r.rowCount, message: '' }),
                (e: Error) => ({ rows: 0, message: e.message }),
              );
              await c.query('ROLLBACK');
              expect(err.rows).toBe(0);
              for (const t of tenants)
                for (const secret of secretsOf(t)) expect(err.message).not.toContain(secret);
            }
          }
        });
      });

      it("refuses (WITH CHECK) writing a row that carries another tenant's id, in every table", async () => {
        const [a, b] = poolTenants();
        await raw(a!, async (c) => {
          for (const name of names) {
            const [values, params] = tables[name]!.insert(b!);
            for (const [sql, p] of [
              [`INSERT INTO pool.${name} ${values}`, params],
              [`UPDATE pool.${name} SET tenant_id = $1`, [b!.id]],
            ] as [string, unknown[]][]) {
              await c.query('BEGIN');
              await c.query('SELECT set_config($1, $2, true)', [a!.conn.tenantSetting, a!.id]);
              await expect(c.query(sql, p), sql).rejects.toThrow(/row-level security/);
              await c.query('ROLLBACK');
            }
          }
        });
      });

      it('does not leak across a pooled connection reused for another tenant after commit', async () => {
        const [a, b] = poolTenants();
        const pool = new pg.Pool({ ...a!.conn, max: 1 });
        try {
          // Each client goes back to the pool even when an expectation fails, or pool.end() would wait.
          const c1 = await pool.connect();
          try {
            await c1.query('BEGIN');
            await c1.query('SELECT set_config($1, $2, true)', ['app.tenant_id', a!.id]);
            expect((await c1.query('SELECT email FROM pool.users')).rows).toEqual([{ email: a!.email }]);
            await c1.query('COMMIT');
          } finally {
            c1.release();
          }
          const c2 = await pool.connect();
          try {
            for (const name of names) expect((await c2.query(`SELECT * FROM pool.${name}`)).rowCount).toBe(0);
            await c2.query('BEGIN');
            await c2.query('SELECT set_config($1, $2, true)', ['app.tenant_id', b!.id]);
            expect((await c2.query('SELECT email FROM pool.users')).rows).toEqual([{ email: b!.email }]);
            await c2.query('COMMIT');
          } finally {
            c2.release(true);
          }
        } finally {
          await pool.end();
        }
      });

      it("does not leak another tenant's values through unique-constraint errors (every unique key leads with tenant_id)", async () => {
        const [a, b] = poolTenants();
        await raw(a!, async (c) => {
          await c.query('BEGIN');
          await c.query('SELECT set_config($1, $2, true)', ['app.tenant_id', a!.id]);
          // b's email, user id and setting key collide with nothing in a's key space.
          const u = await c.query(`INSERT INTO pool.users (tenant_id, id, email) VALUES ($1, $2, $3)`, [
            a!.id,
            b!.userId,
            b!.email,
          ]);
          const k = await c.query(`INSERT INTO pool.settings (tenant_id, key) VALUES ($1, $2)`, [
            a!.id,
            b!.settingKey,
          ]);
          expect([u.rowCount, k.rowCount]).toEqual([1, 1]);
          await c.query('ROLLBACK');
          // Every table: b's own row, with a's tenant id, collides with nothing of b's.
          await c.query('BEGIN');
          await c.query('SELECT set_config($1, $2, true)', ['app.tenant_id', a!.id]);
          for (const name of names) {
            const [values, params] = tables[name]!.seed({ ...b!, id: a!.id });
            expect((await c.query(`INSERT INTO pool.${name} ${values}`, params)).rowCount, name).toBe(1);
          }
          await c.query('ROLLBACK');
        });
      });

      it('the pool login role owns nothing, lacks BYPASSRLS, and cannot read Tenantry bookkeeping', async () => {
        const a = poolTenants()[0]!;
        const role = await superQuery<{ rolbypassrls: boolean; rolsuper: boolean; owned: number }>(
          s.dataDb,
          `SELECT rolbypassrls, rolsuper, (SELECT count(*)::int FROM pg_class WHERE relowner = r.oid) AS owned FROM pg_roles r WHERE rolname = $1`,
          [a.conn.user],
        );
        expect(role).toEqual([{ rolbypassrls: false, rolsuper: false, owned: 0 }]);
        const r = await asOne(a, 'SELECT * FROM tenantry_meta.pool_members');
        expect(r.refused).toMatch(/permission denied/);
        const flags = await superQuery<{
          relname: string;
          relrowsecurity: boolean;
          relforcerowsecurity: boolean;
        }>(
          s.dataDb,
          `SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relnamespace = 'pool'::regnamespace AND relkind = 'r' ORDER BY 1`,
        );
        expect(flags.map((f) => f.relname)).toEqual([...names].sort());
        for (const f of flags) expect(f).toMatchObject({ relrowsecurity: true, relforcerowsecurity: true });
      });
    });

    describe('the template in every placement', () => {
      it('leads every primary key, unique constraint and index with tenant_id (the pool schema, every bridge schema, every silo database)', async () => {
        const placements = [
          { where: 'pool', database: s.dataDb, schema: 'pool' },
          ...tenants
            .filter((t) => t.tier !== 'pool')
            .map((t) => ({
              where: `${t.tier} ${t.slug}`,
              database: t.conn.database,
              schema: t.conn.schema!,
            })),
        ];
        const shapes: string[][] = [];
        for (const p of placements) {
          const rows = await superQuery<{ index: string; kind: string; first: string | null }>(
            p.database,
            `SELECT ic.relname AS index,
                  CASE WHEN i.indisprimary THEN 'primary' WHEN i.indisunique THEN 'unique' ELSE 'index' END AS kind,
                  a.attname AS first
             FROM pg_index i
             JOIN pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_class tc ON tc.oid = i.indrelid
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE tc.relnamespace = $1::regnamespace
            ORDER BY 1`,
            [p.schema],
          );
          // One primary key per table, the users email key, the documents owner index.
          expect(
            rows.filter((r) => r.kind === 'primary'),
            p.where,
          ).toHaveLength(names.length);
          expect(rows.filter((r) => r.kind === 'unique').length, p.where).toBeGreaterThanOrEqual(1);
          expect(rows.filter((r) => r.kind === 'index').length, p.where).toBeGreaterThanOrEqual(1);
          for (const r of rows)
            expect({ where: p.where, ...r }).toEqual({ where: p.where, ...r, first: 'tenant_id' });
          // Unique constraints are backed by those indexes; none exists without one.
          const constraints = await superQuery<{ n: number }>(
            p.database,
            `SELECT count(*)::int AS n FROM pg_constraint WHERE connamespace = $1::regnamespace AND contype IN ('p', 'u') AND conindid = 0`,
            [p.schema],
          );
          expect(constraints[0]!.n).toBe(0);
          shapes.push(rows.map((r) => `${r.index}:${r.kind}`));
        }
        // The same template everywhere: promotion is a straight copy.
        expect(placements.map((p) => p.where.split(' ')[0])).toEqual(
          expect.arrayContaining(['pool', 'bridge', 'silo']),
        );
        for (const [i, shape] of shapes.entries()) expect(shape, placements[i]!.where).toEqual(shapes[0]);
        // The index the version added, on every table, in every placement.
        if (schema.added)
          for (const name of names) expect(shapes[0]).toContain(`${schema.added.index(name)}:index`);
      });
    });

    describe('login roles', () => {
      const tiers = JSON.parse(fs.readFileSync('templates/tiers.json', 'utf8')) as {
        tiers: Record<
          Tier,
          {
            role: {
              connectionLimit: number;
              statementTimeoutMs: number;
              idleInTransactionSessionTimeoutMs: number;
            };
          }
        >;
      };

      it.each(['pool', 'bridge', 'silo'] as const)(
        'a %s role carries the role limits of templates/tiers.json',
        async (tier) => {
          const t = tenants.find((x) => x.tier === tier)!;
          const limits = tiers.tiers[tier].role;
          const rows = await superQuery<{ rolconnlimit: number; setconfig: string[] }>(
            'postgres',
            `SELECT r.rolconnlimit, s.setconfig FROM pg_roles r JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0 WHERE r.rolname = $1`,
            [t.conn.user],
          );
          expect(rows).toHaveLength(1);
          expect(rows[0]!.rolconnlimit).toBe(limits.connectionLimit);
          expect(rows[0]!.setconfig).toEqual(
            expect.arrayContaining([
              `statement_timeout=${limits.statementTimeoutMs}`,
              `idle_in_transaction_session_timeout=${limits.idleInTransactionSessionTimeoutMs}`,
            ]),
          );
          // What a session of the role actually starts with (pg_settings reports milliseconds).
          const c = await tenantClient(t.conn);
          try {
            const { rows: got } = await c.query<{ name: string; setting: string }>(
              `SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout', 'idle_in_transaction_session_timeout') ORDER BY 1`,
            );
            expect(got).toEqual([
              {
                name: 'idle_in_transaction_session_timeout',
                setting: String(limits.idleInTransactionSessionTimeoutMs),
              },
              { name: 'statement_timeout', setting: String(limits.statementTimeoutMs) },
            ]);
          } finally {
            await c.end();
          }
        },
      );

      it('CONNECTION LIMIT is enforced by the server; the timeouts are only defaults a session may change (documented limitation)', async () => {
        const b = tenants.find((t) => t.tier === 'bridge')!;
        const limit = tiers.tiers.bridge.role.connectionLimit;
        // Backends of earlier tests' sessions exit shortly after their clients disconnect.
        for (let i = 0; ; i++) {
          const [row] = await superQuery<{ n: number }>(
            'postgres',
            'SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1',
            [b.conn.user],
          );
          if (row!.n === 0) break;
          if (i > 200) throw new Error(`${row!.n} sessions of ${b.conn.user} never ended`);
          await new Promise((r) => setTimeout(r, 25));
        }
        const open: pg.Client[] = [];
        try {
          for (let i = 0; i < limit; i++) open.push(await tenantClient(b.conn));
          await expect(tenantClient(b.conn)).rejects.toThrow(/too many connections for role/);
          const c = open[0]!;
          const timeout = async () =>
            (await c.query(`SELECT setting FROM pg_settings WHERE name = 'statement_timeout'`)).rows[0]
              .setting;
          expect(await timeout()).toBe(String(tiers.tiers.bridge.role.statementTimeoutMs));
          // Postgres has no way to pin a USERSET setting for a role: a tenant can lift its own timeout.
          await c.query('SET statement_timeout = 0');
          expect(await timeout()).toBe('0');
        } finally {
          await Promise.all(open.map((c) => c.end()));
        }
      });
    });

    describe('bridge and silo roles', () => {
      it('cannot create objects, escalate, or touch the pool', async () => {
        for (const a of tenants.filter((t) => t.tier !== 'pool')) {
          const [inOwn, inPublic, role, pool, own, viaPath] = await as(a, [
            [`CREATE TABLE ${a.conn.schema}.evil (x int)`, []],
            ['CREATE TABLE public.evil (x int)', []],
            ['CREATE ROLE evil', []],
            ['SELECT * FROM pool.users', []],
            [`SELECT * FROM ${a.conn.schema}.users`, []],
            ['SELECT * FROM users', []], // search_path is set
          ]);
          expect(inOwn!.refused).toMatch(/permission denied/);
          expect(inPublic!.refused).toMatch(/permission denied/);
          expect(role!.refused).toMatch(/permission denied/);
          // A bridge role may not use the pool schema; a silo database has none.
          expect(pool!.refused).toMatch(a.tier === 'bridge' ? /permission denied/ : /does not exist/);
          // Its own data is fully usable.
          expect(own!.rows).toBe(1);
          expect(viaPath!.rows).toBe(1);
          const everyTable = await as(
            a,
            names.map((name) => [`SELECT * FROM ${name} WHERE tenant_id = $1`, [a.id]]),
          );
          expect(
            everyTable.map((r) => r.refused ?? r.rows),
            a.slug,
          ).toEqual(names.map(() => 1));
        }
      });

      it('a silo role does not own its database, and PUBLIC has no CONNECT on it', async () => {
        for (const silo of tenants.filter((t) => t.tier === 'silo')) {
          const rows = await superQuery<{ owner: string; public_connect: boolean }>(
            'postgres',
            `SELECT pg_get_userbyid(datdba) AS owner,
                  EXISTS (SELECT 1 FROM aclexplode(coalesce(datacl, acldefault('d', datdba))) a
                           WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT') AS public_connect
             FROM pg_database WHERE datname = $1`,
            [silo.conn.database],
          );
          expect(rows[0]!.owner).not.toBe(silo.conn.user);
          expect(rows[0]!.public_connect).toBe(false);
        }
      });
    });

    describe('what a tenant sees of, or sends to, the others (hardened databases)', () => {
      /** Runs `fn` on a session of tenant `t` in its own database, each probe in a transaction rolled back. */
      async function session<R>(
        t: T,
        fn: (probe: (sql: string, params?: unknown[]) => Promise<string | null>, c: pg.Client) => Promise<R>,
      ) {
        const c = await tenantClient(t.conn);
        try {
          const probe = async (sql: string, params: unknown[] = []) => {
            await c.query('BEGIN');
            if (t.conn.tenantSetting)
              await c.query('SELECT set_config($1, $2, true)', [t.conn.tenantSetting, t.id]);
            const code = await sqlstate(c, sql, params);
            await c.query('ROLLBACK');
            return code;
          };
          return await fn(probe, c);
        } finally {
          await c.end();
        }
      }

      /** Oids of another bridge tenant's table and another silo's database: what a probe would aim at. */
      async function targetsFor(a: T) {
        const bridge = tenants.find((t) => t.tier === 'bridge' && t !== a)!;
        const silo = tenants.find((t) => t.tier === 'silo' && t !== a)!;
        const [table] = await superQuery<{ oid: number }>(s.dataDb, `SELECT $1::regclass::oid::int AS oid`, [
          `${bridge.conn.schema}.users`,
        ]);
        const [db] = await superQuery<{ oid: number }>(
          'postgres',
          'SELECT oid::int AS oid FROM pg_database WHERE datname = $1',
          [silo.conn.database],
        );
        return { bridge, silo, tableOid: table!.oid, siloDbOid: db!.oid };
      }

      /** Reads that show other databases, other sessions or other roles: refused on every tier. */
      const clusterProbes = (v: Awaited<ReturnType<typeof targetsFor>>): [string, unknown[]][] => [
        ['SELECT * FROM pg_stat_activity', []],
        ['SELECT * FROM pg_stat_get_activity(NULL)', []],
        ['SELECT * FROM pg_stat_database', []],
        ['SELECT * FROM pg_stat_database_conflicts', []],
        ['SELECT pg_stat_get_db_xact_commit($1::oid)', [v.siloDbOid]],
        ['SELECT pg_stat_get_db_numbackends($1::oid)', [v.siloDbOid]],
        ['SELECT * FROM pg_stat_ssl', []],
        ['SELECT * FROM pg_stat_progress_copy', []],
        ['SELECT * FROM pg_stat_io', []],
        ['SELECT * FROM pg_locks', []],
        ['SELECT * FROM pg_replication_slots', []],
        ['SELECT * FROM pg_db_role_setting', []],
        ['SELECT rolconfig FROM pg_roles WHERE rolname = $1', [v.bridge.conn.user]],
        ['SELECT * FROM pg_roles', []],
        ['SELECT useconfig FROM pg_user', []],
      ];

      /** Reads and calls that show or reach the other tenants of the same database: refused where it is shared. */
      const databaseProbes = (v: Awaited<ReturnType<typeof targetsFor>>): [string, unknown[]][] => [
        ['SELECT * FROM pg_stat_user_tables', []],
        ['SELECT * FROM pg_stat_all_tables', []],
        ['SELECT * FROM pg_stat_xact_user_tables', []],
        ['SELECT * FROM pg_statio_user_tables', []],
        ['SELECT * FROM pg_stat_user_indexes', []],
        ['SELECT * FROM pg_statio_all_indexes', []],
        ['SELECT pg_stat_get_live_tuples($1::oid)', [v.tableOid]],
        ['SELECT pg_stat_get_numscans($1::oid)', [v.tableOid]],
        ['SELECT * FROM pg_largeobject_metadata', []],
        ['SELECT lo_create(0)', []],
        ["SELECT lo_from_bytea(0, 'x')", []],
        ["SELECT pg_notify('tenantry_rt', 'x')", []],
      ];

      it('leaves PUBLIC nothing of the hardened set in the shared database and in every silo cloned from the template', async () => {
        for (const [database, shared] of [
          [s.dataDb, true],
          ...tenants.filter((t) => t.tier === 'silo').map((t) => [t.conn.database, false] as const),
        ] as const) {
          const c = new pg.Client({ connectionString: adminUrl(database) });
          await c.connect();
          try {
            const state = await observeHardening(c, { shared });
            expect(state.targets.length, database).toBeGreaterThan(50);
            expect(state.reachable, database).toEqual([]);
          } finally {
            await c.end();
          }
        }
      });

      it.each(['pool', 'bridge', 'silo'] as const)(
        'a %s tenant is refused (42501) the statistics, activity, locks, slots and role settings of the cluster',
        async (tier) => {
          const a = tenants.find((t) => t.tier === tier)!;
          const v = await targetsFor(a);
          await session(a, async (probe) => {
            for (const [sql, params] of clusterProbes(v))
              expect({ sql, code: await probe(sql, params) }).toEqual({ sql, code: '42501' });
          });
        },
      );

      it.each(['pool', 'bridge'] as const)(
        "a %s tenant is refused (42501) the shared database's table statistics, large objects and pg_notify",
        async (tier) => {
          const a = tenants.find((t) => t.tier === tier)!;
          const v = await targetsFor(a);
          await session(a, async (probe) => {
            for (const [sql, params] of databaseProbes(v))
              expect({ sql, code: await probe(sql, params) }).toEqual({ sql, code: '42501' });
          });
        },
      );

      it('a silo tenant, alone in its database, keeps its own table statistics, large objects and pg_notify', async () => {
        const a = tenants.find((t) => t.tier === 'silo')!;
        await session(a, async (probe, c) => {
          const { rows } = await c.query<{ schemaname: string }>(
            'SELECT DISTINCT schemaname FROM pg_stat_user_tables',
          );
          // Its own tables, and Tenantry's bookkeeping of its database (freeze state): nobody else's.
          expect(rows.map((r) => r.schemaname).sort()).toEqual([a.conn.schema, 'tenantry_meta']);
          for (const sql of [
            'SELECT * FROM pg_stat_user_indexes',
            'SELECT * FROM pg_statio_user_tables',
            'SELECT lo_create(0)',
            "SELECT pg_notify('tenantry_rt', 'x')",
          ])
            expect({ sql, code: await probe(sql) }).toEqual({ sql, code: null });
        });
      });

      it.each(['pool', 'bridge', 'silo'] as const)(
        "a %s tenant's ordinary work still works: its tables, psql's \\d and \\du, pg_dump's reads, version and settings",
        async (tier) => {
          const a = tenants.find((t) => t.tier === tier)!;
          const users = `${a.conn.schema}.users`;
          await session(a, async (probe, c) => {
            const statements: [string, unknown[]][] = [
              [`INSERT INTO ${users} (tenant_id, email) VALUES ($1, 'new@x')`, [a.id]],
              [`SELECT * FROM ${users} WHERE tenant_id = $1`, [a.id]],
              [`UPDATE ${users} SET name = 'renamed' WHERE tenant_id = $1`, [a.id]],
              [`DELETE FROM ${users} WHERE tenant_id = $1 AND email = 'new@x'`, [a.id]],
              ...((schema.added
                ? [
                    [`UPDATE ${users} SET ${schema.added.column} = 'mine' WHERE tenant_id = $1`, [a.id]],
                    [
                      `SELECT * FROM ${users} WHERE tenant_id = $1 AND ${schema.added.column} IS NOT NULL`,
                      [a.id],
                    ],
                  ]
                : []) as [string, unknown[]][]),
              ['SELECT version()', []],
              ["SELECT current_setting('statement_timeout'), current_setting('search_path')", []],
              ["SELECT setting FROM pg_settings WHERE name = 'statement_timeout'", []],
              ['SELECT pg_advisory_xact_lock(42)', []],
              // psql \d <table> (its first reads) and \dt on the tenant's schema.
              [
                `SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c
                 LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relname OPERATOR(pg_catalog.~) '^(users)$' AND n.nspname OPERATOR(pg_catalog.~) $1`,
                [`^(${a.conn.schema})$`],
              ],
              [
                `SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                      (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d
                        WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef), a.attnotnull
                 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
                [users],
              ],
              [
                `SELECT c2.relname, i.indisprimary, pg_catalog.pg_get_indexdef(i.indexrelid, 0, true)
                 FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i
                WHERE c.oid = $1::regclass AND c.oid = i.indrelid AND i.indexrelid = c2.oid`,
                [users],
              ],
              [
                `SELECT pubname FROM pg_catalog.pg_publication p JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid
                WHERE pr.prrelid = $1::regclass`,
                [users],
              ],
              [
                `SELECT n.nspname, c.relname, pg_catalog.pg_get_userbyid(c.relowner), pg_catalog.pg_table_size(c.oid)
                 FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND n.nspname = $1`,
                [a.conn.schema],
              ],
              // psql \du (no rolconfig) and pg_dump's role names.
              [
                `SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolconnlimit,
                      r.rolvaliduntil, r.rolreplication, r.rolbypassrls,
                      ARRAY(SELECT b.rolname FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles b ON m.roleid = b.oid
                             WHERE m.member = r.oid) AS memberof
                 FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`,
                [],
              ],
              ['SELECT oid, rolname FROM pg_catalog.pg_roles ORDER BY 1', []],
              ['SELECT tableoid, oid, prpubid, prrelid FROM pg_catalog.pg_publication_rel', []],
            ];
            for (const [sql, params] of statements)
              expect({ sql, code: await probe(sql, params) }).toEqual({ sql, code: null });
            // The role's own settings still apply at login, though the tenant cannot read them in the catalog.
            const limits = JSON.parse(fs.readFileSync('templates/tiers.json', 'utf8')).tiers[tier].role;
            const { rows } = await c.query<{ t: string }>(
              "SELECT setting AS t FROM pg_settings WHERE name = 'statement_timeout'",
            );
            expect(rows[0]!.t).toBe(String(limits.statementTimeoutMs));
          });
        },
      );

      it('NOTIFY in the shared database: pg_notify is refused, the NOTIFY statement still reaches every listener (documented); a silo notification stays in the silo', async () => {
        const [a, b] = tenants.filter((t) => t.tier === 'bridge');
        const pool = tenants.find((t) => t.tier === 'pool')!;
        const silo = tenants.find((t) => t.tier === 'silo')!;
        const channel = `tenantry_rt_${a!.slug.replaceAll('-', '_')}`;
        const listener = await tenantClient(a!.conn);
        const heard: string[] = [];
        try {
          const fromB = new Promise<void>((resolve) => {
            listener.on('notification', (n) => {
              heard.push(n.payload ?? '');
              if (n.payload === 'from b') resolve();
            });
          });
          await listener.query(`LISTEN ${channel}`);
          await session(b!, async (probe) => {
            expect(await probe('SELECT pg_notify($1, $2)', [channel, 'via pg_notify'])).toBe('42501');
          });
          await session(pool, async (probe) => {
            expect(await probe('SELECT pg_notify($1, $2)', [channel, 'via pg_notify'])).toBe('42501');
          });
          // A silo's notification is committed first: had it crossed databases, it would be heard first.
          const s1 = await tenantClient(silo.conn);
          await s1.query('SELECT pg_notify($1, $2)', [channel, 'from silo']).finally(() => s1.end());
          // The statement cannot be revoked: any session of the shared database reaches any channel.
          const b1 = await tenantClient(b!.conn);
          await b1.query(`NOTIFY ${channel}, 'from b'`).finally(() => b1.end());
          await fromB;
          expect(heard).toEqual(['from b']);
        } finally {
          await listener.end();
        }
      });
    });
  });
}

/** Where a tenant's rows live: its database and schema. */
export interface Placement {
  database: string;
  schema: string;
}

/** A tenant of the promoted suite: `left` is the placement a promotion left, kept for its rollback window. */
export interface PromotedTenant extends RedTeamTenant {
  label: string;
  left?: Placement;
}

const here = (t: RedTeamTenant): Placement => ({ database: t.conn.database, schema: t.conn.schema! });

/** Promotes a tenant through the API and returns it at its new placement, the one it left noted. */
export async function promoteTenant(s: TestStack, t: PromotedTenant, to: Tier): Promise<PromotedTenant> {
  const res = await promote(s, t.slug, to);
  const op = await waitForOperation(s, res.json().operation.id, 60_000);
  if (op.status !== 'succeeded') throw new Error(`promotion of ${t.label} failed: ${op.error}`);
  return { ...t, left: here(t), tier: to, conn: await connectionOf(s, t.slug) };
}

/**
 * The red-team attempts for promoted tenants (pool → bridge, pool → silo, bridge → silo) during
 * their rollback window, written once: each promoted tenant, with its new credentials, against the
 * other tenants and the other promoted ones; and every tenant against the promoted tenants' new
 * placements and the placements they left. Every read sees nothing, every write is refused or
 * touches nothing, nothing leaks in an error. `setupFleet` returns the three promoted tenants
 * (labelled by their move, in that order) beside unpromoted ones of every tier, seeded before
 * their promotion; the stack needs a rollback window longer than the file.
 */
export function describeRedTeamPromoted(
  name: string,
  schema: RedTeamSchema,
  setupFleet: () => Promise<{ stack: TestStack; tenants: PromotedTenant[] }>,
  setupTimeoutMs = 180_000,
): void {
  type T = PromotedTenant;
  let s: TestStack;
  const tenants: T[] = [];
  const { tables } = schema;
  const names = Object.keys(tables);

  async function snapshot(t: T, p: Placement) {
    const out: Record<string, unknown[]> = {};
    for (const name of names) {
      out[name] = await superQuery(
        p.database,
        `SELECT row_to_json(x)::text AS r FROM ${p.schema}.${name} x WHERE tenant_id = $1 ORDER BY 1`,
        [t.id],
      );
    }
    return out;
  }

  const as = attempt;
  const promoted = () => tenants.filter((t) => t.left);

  /** Every (attacker, victim, placement) where the attacker or the victim was promoted. */
  function attacks(): { a: T; b: T; p: Placement; where: string }[] {
    const out: { a: T; b: T; p: Placement; where: string }[] = [];
    for (const a of tenants)
      for (const b of tenants) {
        if (a === b || (!a.left && !b.left)) continue;
        out.push({ a, b, p: here(b), where: `${a.label} -> ${b.label}` });
        if (b.left) out.push({ a, b, p: b.left, where: `${a.label} -> ${b.label} (the placement it left)` });
      }
    return out;
  }

  describe(name, () => {
    beforeAll(async () => {
      const fleet = await setupFleet();
      s = fleet.stack;
      tenants.push(...fleet.tenants);
    }, setupTimeoutMs);

    it('each promoted tenant moved with all its rows, and left a frozen copy behind', async () => {
      expect(promoted().map((t) => t.label)).toEqual(['pool→bridge', 'pool→silo', 'bridge→silo']);
      for (const t of promoted()) {
        expect(t.conn.tier).toBe(t.tier);
        for (const p of [here(t), t.left!])
          for (const [name, rows] of Object.entries(await snapshot(t, p)))
            expect(rows, `${t.label} ${p.schema}.${name}`).toHaveLength(1);
      }
    });

    it("no tenant reads another's rows, at either placement of a promoted tenant", async () => {
      for (const { a, b, p, where } of attacks()) {
        const results = await as(
          a,
          names.map((name) => [`SELECT * FROM ${p.schema}.${name} WHERE tenant_id = $1`, [b.id]]),
          p.database,
        );
        results.forEach((r, i) => {
          expect(r.rows, `${where}.${names[i]}`).toBe(0);
          for (const secret of secretsOf(b)) expect(r.refused ?? '', where).not.toContain(secret);
        });
      }
    });

    it("no tenant inserts, updates or deletes another's rows, at either placement of a promoted tenant", async () => {
      for (const { a, b, p, where } of attacks()) {
        const before = await snapshot(b, p);
        const statements = writesOf(schema, b, p.schema);
        const results = await as(a, statements, p.database);
        results.forEach((r, i) => {
          const what = `${where}: ${statements[i]![0]}`;
          expect(r.refused !== null || r.rows === 0, what).toBe(true);
          for (const secret of secretsOf(b)) expect(r.refused ?? '', what).not.toContain(secret);
        });
        expect(await snapshot(b, p), where).toEqual(before);
      }
    });

    it('a promoted tenant cannot write the placement it left, and reaches no database but its own', async () => {
      for (const t of promoted()) {
        const insert = tables.users!.insert(t);
        const [r] = await as(
          t,
          [[`INSERT INTO ${t.left!.schema}.users ${insert[0]}`, insert[1]]],
          t.left!.database,
        );
        // Its new role has no access there at all.
        expect(r!.refused, t.label).toMatch(/permission denied/);
        // Nor to any table there, nor to write what it holds there.
        const writes = writesOf(schema, t, t.left!.schema);
        for (const [i, w] of (await as(t, writes, t.left!.database)).entries())
          expect(w.refused, `${t.label}: ${writes[i]![0]}`).toMatch(/permission denied/);
        if (t.left!.schema === 'pool') {
          // The shared pool role still reaches the pool: the tenant's rows there are frozen.
          const pool = tenants.find((o) => o.tier === 'pool')!;
          const asShared = { ...pool, id: t.id };
          const [w] = await as(asShared, [[`INSERT INTO pool.users ${insert[0]}`, insert[1]]], s.dataDb);
          expect(w!.refused, t.label).toMatch(/read-only while it moves to another tier/);
          // In every table of the version, inserts, updates and deletes alike.
          const frozen = await as(asShared, writes, s.dataDb);
          for (const [i, f] of frozen.entries())
            expect(f.refused, `${t.label}: ${writes[i]![0]}`).toMatch(
              /read-only while it moves to another tier/,
            );
        }
        const others = [
          s.controlDb,
          'postgres',
          'template1',
          ...(t.tier === 'silo' ? [s.dataDb] : []),
          ...tenants.filter((o) => o !== t && o.tier === 'silo').map((o) => o.conn.database),
        ];
        for (const db of others) {
          const [c] = await as(t, [['SELECT 1', []]], db);
          expect(c!.refused, `${t.label} -> ${db}`).toMatch(
            /permission denied for database|does not have CONNECT privilege/,
          );
        }
      }
    });
  });
}
