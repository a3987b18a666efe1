import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectionOf,
  onboard,
  startStack,
  superQuery,
  type TestStack,
  tenantClient,
} from '../helpers/runtime.js';

/**
 * The red-team isolation suite: every tenant tries, with its own credentials, to reach every
 * other tenant's data on every tier. Each attempt must be refused or see/affect zero rows.
 */
type Tier = 'pool' | 'bridge' | 'silo';
interface T {
  tier: Tier;
  slug: string;
  id: string;
  conn: Awaited<ReturnType<typeof connectionOf>>;
  userId: string;
  email: string;
}

let s: TestStack;
const tenants: T[] = [];

/** Where a tenant's users table lives, as seen from a session on `database`. */
const usersTable = (t: T) => `${t.conn.schema}.users`;

async function seed(t: T) {
  const sql = `INSERT INTO ${usersTable(t)} (tenant_id, id, email, name) VALUES ($1, gen_random_uuid(), $2, 'owner') RETURNING id`;
  const rows = await superQuery<{ id: string }>(t.conn.database, sql, [t.id, t.email]);
  t.userId = rows[0]!.id;
}

async function snapshot(t: T) {
  return superQuery(
    t.conn.database,
    `SELECT id, email, name FROM ${usersTable(t)} WHERE tenant_id = $1 ORDER BY id`,
    [t.id],
  );
}

beforeAll(async () => {
  s = await startStack();
  for (const tier of ['pool', 'pool', 'bridge', 'bridge', 'silo', 'silo'] as const) {
    const o = await onboard(s, tier);
    const conn = await connectionOf(s, o.slug);
    tenants.push({ tier, slug: o.slug, id: o.id, conn, userId: '', email: `owner@${o.slug}.example` });
  }
  for (const t of tenants) await seed(t);
}, 120_000);

afterAll(async () => {
  await s?.close();
});

/** Runs `sql` as `a` (in a's own database unless `database` says otherwise); returns rows or the refusal. */
async function as(a: T, sql: string, params: unknown[] = [], database = a.conn.database) {
  let c: pg.Client;
  try {
    c = await tenantClient({ ...a.conn, database });
  } catch (e) {
    return { refused: (e as Error).message, rows: 0 };
  }
  try {
    await c.query('BEGIN');
    if (a.conn.tenantSetting) await c.query('SELECT set_config($1, $2, true)', [a.conn.tenantSetting, a.id]);
    const r = await c.query(sql, params);
    await c.query('COMMIT');
    return { refused: null, rows: r.rowCount ?? 0 };
  } catch (e) {
    return { refused: (e as Error).message, rows: 0 };
  } finally {
    await c.end();
  }
}

const pairs = () => {
  const out: [T, T][] = [];
  for (const a of tenants) for (const b of tenants) if (a !== b) out.push([a, b]);
  return out;
};

describe('cross-tenant access, every pair of tiers', () => {
  it('covers every ordered pair of tiers', () => {
    const seen = new Set(pairs().map(([a, b]) => `${a.tier}->${b.tier}`));
    expect(seen.size).toBe(9);
  });

  it("no tenant can read another tenant's rows", async () => {
    for (const [a, b] of pairs()) {
      const r = await as(a, `SELECT * FROM ${usersTable(b)} WHERE tenant_id = $1`, [b.id], b.conn.database);
      expect({ pair: `${a.slug}->${b.slug}`, rows: r.rows }).toEqual({
        pair: `${a.slug}->${b.slug}`,
        rows: 0,
      });
      if (r.refused) expect(r.refused).not.toContain(b.email);
    }
  });

  it("no tenant can insert, update or delete another tenant's rows", async () => {
    for (const [a, b] of pairs()) {
      const before = await snapshot(b);
      const ins = await as(
        a,
        `INSERT INTO ${usersTable(b)} (tenant_id, email) VALUES ($1, 'intruder@x')`,
        [b.id],
        b.conn.database,
      );
      const upd = await as(
        a,
        `UPDATE ${usersTable(b)} SET name = 'pwned' WHERE tenant_id = $1`,
        [b.id],
        b.conn.database,
      );
      const del = await as(a, `DELETE FROM ${usersTable(b)} WHERE tenant_id = $1`, [b.id], b.conn.database);
      for (const r of [ins, upd, del])
        expect(r.refused !== null || r.rows === 0, `${a.slug}->${b.slug}`).toBe(true);
      expect(await snapshot(b)).toEqual(before);
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
        const r = await as(a, 'SELECT 1', [], db);
        expect(r.refused, `${a.slug} -> ${db}`).toMatch(
          /permission denied for database|does not have CONNECT privilege/,
        );
      }
    }
    const pool = tenants.find((t) => t.tier === 'pool')!;
    for (const db of [s.controlDb, 'postgres', 'template1']) {
      expect((await as(pool, 'SELECT 1', [], db)).refused).toMatch(/permission denied|CONNECT privilege/);
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

  it('sees zero rows with no tenant set', async () => {
    await raw(poolTenants()[0]!, async (c) => {
      expect((await c.query('SELECT * FROM pool.users')).rowCount).toBe(0);
      expect((await c.query('SELECT * FROM pool.settings')).rowCount).toBe(0);
    });
  });

  it('sees zero rows with an empty setting, and a malformed one errors without revealing data', async () => {
    const [a, b] = poolTenants();
    await raw(a!, async (c) => {
      await c.query('BEGIN');
      await c.query(`SELECT set_config('app.tenant_id', '', true)`);
      expect((await c.query('SELECT * FROM pool.users')).rowCount).toBe(0);
      await c.query('COMMIT');
      for (const bad of ['garbage', "' OR 1=1 --", `${b!.id} OR true`]) {
        await c.query('BEGIN');
        await c.query(`SELECT set_config('app.tenant_id', $1, true)`, [bad]);
        const err = await c.query('SELECT * FROM pool.users').then(
          (r) => ({ rows: r.rowCount, message: '' }),
          (e: Error) => ({ rows: 0, message: e.message }),
        );
        await c.query('ROLLBACK');
        expect(err.rows).toBe(0);
        for (const t of tenants) {
          expect(err.message).not.toContain(t.email);
          expect(err.message).not.toContain(t.userId);
        }
      }
    });
  });

  it("refuses (WITH CHECK) writing a row that carries another tenant's id", async () => {
    const [a, b] = poolTenants();
    await raw(a!, async (c) => {
      await c.query('BEGIN');
      await c.query('SELECT set_config($1, $2, true)', [a!.conn.tenantSetting, a!.id]);
      await expect(
        c.query(`INSERT INTO pool.users (tenant_id, email) VALUES ($1, 'x@y')`, [b!.id]),
      ).rejects.toThrow(/row-level security/);
      await c.query('ROLLBACK');
      await c.query('BEGIN');
      await c.query('SELECT set_config($1, $2, true)', [a!.conn.tenantSetting, a!.id]);
      await expect(c.query('UPDATE pool.users SET tenant_id = $1', [b!.id])).rejects.toThrow(
        /row-level security/,
      );
      await c.query('ROLLBACK');
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
      expect((await c2.query('SELECT * FROM pool.users')).rowCount).toBe(0);
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
      // b's email and b's user id collide with nothing in a's key space.
      const r = await c.query(`INSERT INTO pool.users (tenant_id, id, email) VALUES ($1, $2, $3)`, [
        a!.id,
        b!.userId,
        b!.email,
      ]);
      expect(r.rowCount).toBe(1);
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
    const r = await as(a, 'SELECT * FROM tenantry_meta.pool_members');
    expect(r.refused).toMatch(/permission denied/);
    const flags = await superQuery<{
      relname: string;
      relrowsecurity: boolean;
      relforcerowsecurity: boolean;
    }>(
      s.dataDb,
      `SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relnamespace = 'pool'::regnamespace AND relkind = 'r' ORDER BY 1`,
    );
    expect(flags.length).toBe(3);
    for (const f of flags) expect(f).toMatchObject({ relrowsecurity: true, relforcerowsecurity: true });
  });
});

describe('bridge and silo roles', () => {
  it('cannot create objects, escalate, or touch the pool', async () => {
    for (const a of tenants.filter((t) => t.tier !== 'pool')) {
      expect((await as(a, `CREATE TABLE ${a.conn.schema}.evil (x int)`)).refused).toMatch(
        /permission denied/,
      );
      expect((await as(a, 'CREATE TABLE public.evil (x int)')).refused).toMatch(/permission denied/);
      expect((await as(a, 'CREATE ROLE evil')).refused).toMatch(/permission denied/);
      if (a.tier === 'bridge')
        expect((await as(a, 'SELECT * FROM pool.users')).refused).toMatch(/permission denied/);
      // Its own data is fully usable.
      expect((await as(a, `SELECT * FROM ${a.conn.schema}.users`)).rows).toBe(1);
      expect((await as(a, 'SELECT * FROM users')).rows).toBe(1); // search_path is set
    }
  });

  it('carry the tier role limits', async () => {
    const b = tenants.find((t) => t.tier === 'bridge')!;
    const rows = await superQuery<{ rolconnlimit: number; setconfig: string[] }>(
      'postgres',
      `SELECT r.rolconnlimit, s.setconfig FROM pg_roles r JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0 WHERE r.rolname = $1`,
      [b.conn.user],
    );
    expect(rows[0]!.rolconnlimit).toBe(20);
    expect(rows[0]!.setconfig).toEqual(
      expect.arrayContaining(['statement_timeout=30000', 'idle_in_transaction_session_timeout=60000']),
    );
  });

  it('a silo role does not own its database, and PUBLIC has no CONNECT on it', async () => {
    const silo = tenants.find((t) => t.tier === 'silo')!;
    const rows = await superQuery<{ owner: string; public_connect: boolean }>(
      'postgres',
      `SELECT pg_get_userbyid(datdba) AS owner,
              EXISTS (SELECT 1 FROM aclexplode(datacl) a WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT') AS public_connect
         FROM pg_database WHERE datname = $1`,
      [silo.conn.database],
    );
    expect(rows[0]!.owner).not.toBe(silo.conn.user);
    expect(rows[0]!.public_connect).toBe(false);
  });
});
