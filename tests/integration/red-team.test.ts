import fs from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { observeHardening } from '../../control-plane/src/providers/postgres/index.js';
import {
  adminUrl,
  connectionOf,
  onboard,
  startStack,
  superQuery,
  type TestStack,
  tenantClient,
} from '../helpers/runtime.js';
import { attempt, hardenAsSuperuser, secretsOf, sqlstate, TABLE_NAMES, TABLES } from './red-team-shared.js';

/**
 * The red-team isolation suite: every tenant tries, with its own credentials, to reach every
 * other tenant's data on every tier, in every table of the template. Each attempt must be
 * refused or see/affect zero rows.
 */
type Tier = 'pool' | 'bridge' | 'silo';
interface T {
  tier: Tier;
  slug: string;
  id: string;
  conn: Awaited<ReturnType<typeof connectionOf>>;
  userId: string;
  email: string;
  settingKey: string;
}

let s: TestStack;
const tenants: T[] = [];

/** Where a tenant's table lives, as seen from a session on its database. */
const table = (t: T, name: string) => `${t.conn.schema}.${name}`;

async function seed(t: T) {
  for (const name of TABLE_NAMES) {
    const [values, params] = TABLES[name]!.seed(t);
    await superQuery(t.conn.database, `INSERT INTO ${table(t, name)} ${values}`, params);
  }
}

/** Every row of the tenant in every table, read as the superuser. */
async function snapshot(t: T) {
  const out: Record<string, unknown[]> = {};
  for (const name of TABLE_NAMES) {
    out[name] = await superQuery(
      t.conn.database,
      `SELECT row_to_json(x)::text AS r FROM ${table(t, name)} x WHERE tenant_id = $1 ORDER BY 1`,
      [t.id],
    );
  }
  return out;
}

beforeAll(async () => {
  s = await startStack();
  // What bootstrap does (engine/local.ts): the shared database and the silo template are hardened
  // before any tenant exists, so every silo below is a clone of a hardened template.
  expect(await hardenAsSuperuser(s.dataDb, true)).toEqual([]);
  expect(await hardenAsSuperuser(dataPlaneNames(s.dataDb).siloTemplate, false)).toEqual([]);
  for (const tier of ['pool', 'pool', 'bridge', 'bridge', 'silo', 'silo'] as const) {
    const o = await onboard(s, tier);
    const conn = await connectionOf(s, o.slug);
    tenants.push({
      tier,
      slug: o.slug,
      id: o.id,
      conn,
      userId: crypto.randomUUID(),
      email: `owner@${o.slug}.example`,
      settingKey: `key-of-${o.slug}`,
    });
  }
  for (const t of tenants) await seed(t);
}, 120_000);

afterAll(async () => {
  await s?.close();
});

/** Runs each statement as tenant `a` (on `database`, a's own unless given); see attempt(). */
const as = (a: T, statements: [string, unknown[]][], database = a.conn.database) =>
  attempt(a, statements, database);

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
    expect(live.map((r) => r.relname)).toEqual([...TABLE_NAMES].sort());
    // The seed is real: every tenant has one row in every table.
    for (const t of tenants) {
      for (const [name, rows] of Object.entries(await snapshot(t)))
        expect(rows, `${t.slug}.${name}`).toHaveLength(1);
    }
  });

  it("no tenant can read another tenant's rows in any table", async () => {
    for (const [a, b] of pairs()) {
      const results = await as(
        a,
        TABLE_NAMES.map((name) => [`SELECT * FROM ${table(b, name)} WHERE tenant_id = $1`, [b.id]]),
        b.conn.database,
      );
      results.forEach((r, i) => {
        const where = `${a.tier}:${a.slug} -> ${b.tier}:${b.slug}.${TABLE_NAMES[i]}`;
        expect(r.rows, where).toBe(0);
        for (const secret of secretsOf(b)) expect(r.refused ?? '', where).not.toContain(secret);
      });
    }
  });

  it("no tenant can insert, update or delete another tenant's rows in any table", async () => {
    for (const [a, b] of pairs()) {
      const before = await snapshot(b);
      const statements: [string, unknown[]][] = TABLE_NAMES.flatMap((name) => {
        const [values, params] = TABLES[name]!.insert(b);
        return [
          [`INSERT INTO ${table(b, name)} ${values}`, params],
          [`UPDATE ${table(b, name)} SET ${TABLES[name]!.set} WHERE tenant_id = $1`, [b.id]],
          [`DELETE FROM ${table(b, name)} WHERE tenant_id = $1`, [b.id]],
        ] as [string, unknown[]][];
      });
      const results = await as(a, statements, b.conn.database);
      results.forEach((r, i) => {
        const where = `${a.tier}:${a.slug} -> ${b.tier}:${b.slug}: ${statements[i]![0]}`;
        expect(r.refused !== null || r.rows === 0, where).toBe(true);
        for (const secret of secretsOf(b)) expect(r.refused ?? '', where).not.toContain(secret);
      });
      expect(await snapshot(b), `${a.slug} -> ${b.slug}`).toEqual(before);
    }
  });

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
      expect((await asOne(pool, 'SELECT 1', [], db)).refused).toMatch(/permission denied|CONNECT privilege/);
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
    expect(rows.map((r) => r.relname)).toEqual([...TABLE_NAMES].sort());
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
      for (const name of TABLE_NAMES) expect((await c.query(`SELECT * FROM pool.${name}`)).rowCount).toBe(0);
    });
  });

  it('sees zero rows with an empty setting, and a malformed one errors without revealing data', async () => {
    const [a, b] = poolTenants();
    await raw(a!, async (c) => {
      await c.query('BEGIN');
      await c.query(`SELECT set_config('app.tenant_id', '', true)`);
      for (const name of TABLE_NAMES) expect((await c.query(`SELECT * FROM pool.${name}`)).rowCount).toBe(0);
      await c.query('COMMIT');
      for (const bad of ['garbage', "' OR 1=1 --", `${b!.id} OR true`]) {
        for (const name of TABLE_NAMES) {
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
      for (const name of TABLE_NAMES) {
        const [values, params] = TABLES[name]!.insert(b!);
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
      const c1 = await pool.connect();
      await c1.query('BEGIN');
      await c1.query('SELECT set_config($1, $2, true)', ['app.tenant_id', a!.id]);
      expect((await c1.query('SELECT email FROM pool.users')).rows).toEqual([{ email: a!.email }]);
      await c1.query('COMMIT');
      c1.release();
      const c2 = await pool.connect();
      for (const name of TABLE_NAMES) expect((await c2.query(`SELECT * FROM pool.${name}`)).rowCount).toBe(0);
      await c2.query('BEGIN');
      await c2.query('SELECT set_config($1, $2, true)', ['app.tenant_id', b!.id]);
      expect((await c2.query('SELECT email FROM pool.users')).rows).toEqual([{ email: b!.email }]);
      await c2.query('COMMIT');
      c2.release();
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
    expect(flags.map((f) => f.relname)).toEqual([...TABLE_NAMES].sort());
    for (const f of flags) expect(f).toMatchObject({ relrowsecurity: true, relforcerowsecurity: true });
  });
});

describe('the template in every placement', () => {
  it('leads every primary key, unique constraint and index with tenant_id (pool schema, a bridge schema, a silo database)', async () => {
    const bridge = tenants.find((t) => t.tier === 'bridge')!;
    const silo = tenants.find((t) => t.tier === 'silo')!;
    const placements = [
      { where: 'pool', database: s.dataDb, schema: 'pool' },
      { where: 'bridge', database: s.dataDb, schema: bridge.conn.schema! },
      { where: 'silo', database: silo.conn.database, schema: silo.conn.schema! },
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
      ).toHaveLength(TABLE_NAMES.length);
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
    expect(shapes[1]).toEqual(shapes[0]);
    expect(shapes[2]).toEqual(shapes[0]);
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
        (await c.query(`SELECT setting FROM pg_settings WHERE name = 'statement_timeout'`)).rows[0].setting;
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
