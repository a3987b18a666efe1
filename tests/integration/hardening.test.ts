import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hardenDatabase, observeHardening } from '../../control-plane/src/providers/postgres/index.js';
import { adminUrl, rand, superQuery } from '../helpers/runtime.js';

/**
 * hardenDatabase on bare databases of the shared cluster: where a revoke holds (shared catalogs
 * included), that a second or concurrent run is harmless, who keeps the statistics, and what a run
 * without the catalogs' ownership does. What tenants see after it is in red-team.test.ts.
 */
const id = rand(4);
const hardened = `hx_${id}_a`;
const other = `hx_${id}_b`;
const reader = `hx_${id}_reader`;
const monitor = `hx_${id}_monitor`;
const password = `pw-${rand(8)}`;

async function asSuper<R>(database: string, fn: (c: pg.Client) => Promise<R>): Promise<R> {
  const c = new pg.Client({ connectionString: adminUrl(database) });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function asRole<R>(role: string, database: string, fn: (c: pg.Client) => Promise<R>): Promise<R> {
  const u = new URL(adminUrl(database));
  const c = new pg.Client({ host: u.hostname, port: Number(u.port), database, user: role, password });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const code = (c: pg.Client, sql: string) =>
  c.query(sql).then(
    () => null,
    (e: { code?: string }) => e.code ?? 'no code',
  );

beforeAll(async () => {
  for (const db of [hardened, other]) await superQuery('postgres', `CREATE DATABASE ${db}`);
  await superQuery('postgres', `CREATE ROLE ${reader} LOGIN PASSWORD '${password}'`);
  await superQuery('postgres', `CREATE ROLE ${monitor} LOGIN PASSWORD '${password}' IN ROLE pg_monitor`);
  await superQuery('postgres', `ALTER ROLE ${reader} SET statement_timeout = 12345`);
  expect((await asSuper(hardened, (c) => hardenDatabase(c, { shared: true }))).reachable).toEqual([]);
});

afterAll(async () => {
  for (const db of [hardened, other])
    await superQuery('postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  for (const role of [reader, monitor]) await superQuery('postgres', `DROP ROLE IF EXISTS ${role}`);
});

describe('hardenDatabase', () => {
  it('holds only in the database it ran in, shared catalogs (pg_db_role_setting) included', async () => {
    const probes = [
      'SELECT * FROM pg_db_role_setting',
      'SELECT * FROM pg_stat_activity',
      'SELECT rolconfig FROM pg_roles',
      "SELECT pg_notify('c', 'p')",
    ];
    const refused = await asRole(reader, hardened, async (c) => {
      const out: (string | null)[] = [];
      for (const sql of probes) out.push(await code(c, sql));
      return out;
    });
    expect(refused).toEqual(probes.map(() => '42501'));
    // The same cluster-wide rows, read from a database that was not hardened.
    const open = await asRole(reader, other, async (c) => {
      const out: (string | null)[] = [];
      for (const sql of probes) out.push(await code(c, sql));
      return out;
    });
    expect(open).toEqual(probes.map(() => null));
    // The role's settings still apply where the tenant can no longer read them.
    const timeout = await asRole(
      reader,
      hardened,
      async (c) => (await c.query('SHOW statement_timeout')).rows[0],
    );
    expect(timeout).toEqual({ statement_timeout: '12345ms' });
  });

  it('keeps the statistics for pg_read_all_stats (pg_monitor) members', async () => {
    const results = await asRole(monitor, hardened, async (c) => {
      const out: (string | null)[] = [];
      for (const sql of [
        'SELECT * FROM pg_stat_activity',
        'SELECT * FROM pg_stat_database',
        'SELECT * FROM pg_stat_user_tables',
        'SELECT * FROM pg_locks',
        'SELECT * FROM pg_replication_slots',
      ])
        out.push(await code(c, sql));
      return out;
    });
    expect(results).toEqual([null, null, null, null, null]);
  });

  it('a second run writes nothing, and concurrent runs converge', async () => {
    const rowVersions = () =>
      superQuery<{ xmin: string }>(
        hardened,
        `SELECT xmin::text FROM pg_class WHERE oid = 'pg_catalog.pg_stat_activity'::regclass
         UNION ALL SELECT xmin::text FROM pg_proc WHERE oid = 'pg_catalog.pg_notify(text, text)'::regprocedure`,
      );
    const before = await rowVersions();
    expect((await asSuper(hardened, (c) => hardenDatabase(c, { shared: true }))).reachable).toEqual([]);
    expect(await rowVersions()).toEqual(before);
    const fresh = `hx_${id}_c`;
    await superQuery('postgres', `CREATE DATABASE ${fresh}`);
    try {
      const runs = await Promise.all(
        [1, 2, 3].map(() => asSuper(fresh, (c) => hardenDatabase(c, { shared: true }))),
      );
      for (const r of runs) expect(r.reachable).toEqual([]);
    } finally {
      await superQuery('postgres', `DROP DATABASE IF EXISTS ${fresh} WITH (FORCE)`);
    }
  });

  it('a silo placement keeps what only shows the database itself', async () => {
    const silo = `hx_${id}_d`;
    await superQuery('postgres', `CREATE DATABASE ${silo}`);
    try {
      const state = await asSuper(silo, (c) => hardenDatabase(c, { shared: false }));
      expect(state.reachable).toEqual([]);
      const kept = await asSuper(silo, (c) => observeHardening(c, { shared: true }));
      expect(kept.reachable).toEqual(
        expect.arrayContaining(['pg_stat_user_tables', 'pg_largeobject_metadata', 'pg_notify(text, text)']),
      );
      expect(kept.reachable).not.toContain('pg_stat_activity');
    } finally {
      await superQuery('postgres', `DROP DATABASE IF EXISTS ${silo} WITH (FORCE)`);
    }
  });

  it("run without the catalogs' ownership, revokes nothing and says so instead of failing", async () => {
    const before = await asSuper(other, (c) => observeHardening(c, { shared: true }));
    const state = await asRole(reader, other, (c) => hardenDatabase(c, { shared: true }));
    expect(state.reachable).toEqual(expect.arrayContaining(['pg_stat_activity', 'pg_db_role_setting']));
    expect(state.reachable).toEqual(before.reachable);
  });
});
