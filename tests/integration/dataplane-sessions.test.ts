import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../control-plane/src/dataplane/dataplane.js';
import type { Queryable } from '../../control-plane/src/domain/queryable.js';
import { controlDatabaseOnDataPlane } from '../../control-plane/src/runtime.js';
import { adminUrl, rand, superQuery } from '../helpers/runtime.js';

/**
 * Provisioning commits relaxed (synchronous_commit = off) only where the data plane shares the
 * control database's cluster, whose durable completion commit later in the same WAL covers it; a
 * pooled session goes back to the pool as it came.
 */
const DATA = `dp_sessions_${rand()}`;
const SILO = `dp_sessions_silo_${rand()}`;
let dp: DataPlane;

const commitMode = async (db: Queryable) =>
  (await db.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0]?.synchronous_commit;

beforeAll(async () => {
  await superQuery('postgres', `CREATE DATABASE ${DATA}`);
  await superQuery('postgres', `CREATE DATABASE ${SILO}`);
  // One connection per pool: the session that comes back is the one the next caller gets. The test
  // cluster commits relaxed by default (it is disposable): these sessions start durable, as in production.
  const url = new URL(adminUrl(DATA));
  url.searchParams.set('options', '-c synchronous_commit=on');
  dp = new DataPlane(url.toString(), { maxConnections: 1 });
});

afterAll(async () => {
  await dp?.close();
  await superQuery('postgres', `DROP DATABASE IF EXISTS ${DATA} WITH (FORCE)`);
  await superQuery('postgres', `DROP DATABASE IF EXISTS ${SILO} WITH (FORCE)`);
});

describe('data-plane sessions: relaxed provisioning commits', () => {
  it('commit durably unless the runtime allowed relaxed commits', async () => {
    expect(await dp.withData(commitMode, { relaxed: true })).toBe('on');
    expect(await dp.withMaintenance(commitMode, { relaxed: true })).toBe('on');
    expect(await dp.withDatabase(SILO, commitMode, { relaxed: true })).toBe('on');
  });

  it('once allowed, relax only the uses that ask: a durable use of a session a relaxed one left gets it durable', async () => {
    dp.allowRelaxedCommits(true);
    try {
      const pid = async (db: Queryable) =>
        (await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
      const first = await dp.withData(async (db) => [await pid(db), await commitMode(db)] as const, {
        relaxed: true,
      });
      expect(first[1]).toBe('off');
      const next = await dp.withData(async (db) => [await pid(db), await commitMode(db)] as const);
      expect(next).toEqual([first[0], 'on']); // the same session, reset by the use that wanted it durable
      expect(await dp.withMaintenance(commitMode, { relaxed: true })).toBe('off');
      expect(await dp.withMaintenance(commitMode)).toBe('on');
      expect(await dp.withDatabase(SILO, commitMode, { relaxed: true })).toBe('off');
      expect(await dp.withDatabase(SILO, commitMode)).toBe('on');
    } finally {
      dp.allowRelaxedCommits(false);
    }
  });

  it('discard a relaxed session left in a failed transaction instead of returning it relaxed', async () => {
    dp.allowRelaxedCommits(true);
    try {
      const before = await dp.withData(
        async (db) => (await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid,
      );
      await expect(
        dp.withData(
          async (db) => {
            await db.query('BEGIN');
            await db.query('SELECT 1/0');
          },
          { relaxed: true },
        ),
      ).rejects.toMatchObject({ code: '22012' });
      const after = await dp.withData(
        async (db) =>
          [
            (await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid,
            await commitMode(db),
          ] as const,
      );
      expect(after[1]).toBe('on');
      expect(after[0]).not.toBe(before);
    } finally {
      dp.allowRelaxedCommits(false);
    }
  });

  it('the runtime allows them on the control database’s own cluster', async () => {
    const control = new pg.Client({ connectionString: adminUrl('postgres') });
    await control.connect();
    try {
      expect(await controlDatabaseOnDataPlane(control, adminUrl(DATA))).toEqual({
        sameCluster: true,
        controlDb: 'postgres',
      });
    } finally {
      await control.end();
    }
  });
});
