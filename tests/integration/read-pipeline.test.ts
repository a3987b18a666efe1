import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ReadPipeline } from '../../control-plane/src/db/read-pipeline.js';
import { queryText } from '../../control-plane/src/db/text-rows.js';
import type { Queryable } from '../../control-plane/src/domain/queryable.js';
import { adminUrl, rand } from '../helpers/runtime.js';

/**
 * db/read-pipeline.ts on a real Postgres: reads of one turn of the event loop share a connection and
 * still answer one by one; an error, a timeout or a broken connection stays with its own reads; past
 * its cap, and once closed, reads go to the fallback.
 */
let pool: pg.Pool;
/** The fallback, counting what it is asked. */
let fallbackCalls = 0;
const fallback: Queryable = {
  query: (text, params) => {
    fallbackCalls++;
    return pool.query(text as never, params) as never;
  },
};
const open: ReadPipeline[] = [];
const pipeline = (size: number, opts: ConstructorParameters<typeof ReadPipeline>[3] = {}) => {
  const p = new ReadPipeline(adminUrl(), size, fallback, opts);
  open.push(p);
  return p;
};
const pid = async (q: Queryable) =>
  (await q.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
const turn = () => new Promise((r) => setImmediate(r));

beforeAll(() => {
  pool = new pg.Pool({ connectionString: adminUrl(), max: 4 });
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((p) => p.close()));
  fallbackCalls = 0;
});
afterAll(async () => {
  await pool.end();
});

describe('ReadPipeline', () => {
  it('sends the reads of one turn over one connection, the next turn over the next, each answered as its own', async () => {
    const p = pipeline(2);
    const first = await Promise.all(Array.from({ length: 10 }, () => pid(p)));
    expect(new Set(first).size).toBe(1);
    await turn();
    const second = await Promise.all(Array.from({ length: 10 }, () => pid(p)));
    expect(new Set(second).size).toBe(1);
    expect(second[0]).not.toBe(first[0]);
    // Values and text rows come back to the read that asked for them.
    const named = { name: `pipeline_${rand()}`, text: 'SELECT $1::int * 2, $2::text' };
    const answers = await Promise.all(
      Array.from({ length: 50 }, (_, i) => queryText(p, named, [i, `r${i}`])),
    );
    expect(answers).toEqual(Array.from({ length: 50 }, (_, i) => [[String(i * 2), `r${i}`]]));
    expect(fallbackCalls).toBe(0);
    expect(p.pending).toBe(0);
  });

  it('keeps an error to its own read: the reads beside it in the batch are answered', async () => {
    const p = pipeline(1);
    const results = await Promise.allSettled([
      p.query('SELECT 1 AS n'),
      p.query('SELECT 1 / 0 AS n'),
      queryText(p, { name: '', text: 'SELECT $1::int / 0' }, [1]),
      p.query('SELECT 3 AS n'),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    expect(results[1]).toMatchObject({ reason: { code: '22012' } });
    expect(results[2]).toMatchObject({ reason: { code: '22012' } });
    expect(results[3]).toMatchObject({ value: { rows: [{ n: 3 }] } });
  });

  it('refuses a write: its sessions are read-only', async () => {
    const p = pipeline(1);
    await expect(p.query('CREATE TEMP TABLE pipeline_write (x int)')).rejects.toMatchObject({
      code: '25006',
    });
  });

  it('cuts off a slow read at its statement timeout, and the read queued behind it is answered', async () => {
    const p = pipeline(1, { statementTimeoutMs: 200 });
    const [slow, behind] = await Promise.allSettled([
      p.query('SELECT pg_sleep(5)'),
      p.query('SELECT 2 AS n'),
    ]);
    expect(slow).toMatchObject({ status: 'rejected', reason: { code: '57014' } });
    expect(behind).toMatchObject({ status: 'fulfilled', value: { rows: [{ n: 2 }] } });
  });

  it('fails the reads of a connection that breaks, and the next turn reads on a new one', async () => {
    const p = pipeline(1, { reopenAfterMs: 0 });
    const before = await pid(p);
    await turn();
    const caught = Promise.allSettled([p.query('SELECT pg_sleep(1)'), p.query('SELECT 1')]);
    await pool.query('SELECT pg_terminate_backend($1)', [before]);
    const settled = await caught;
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected']);
    await turn();
    const after = await pid(p);
    expect(after).toEqual(expect.any(Number));
    expect(after).not.toBe(before);
    expect(p.pending).toBe(0);
  });

  it('after a break, sends reads to the fallback until it may reopen; a server that refuses is not asked every turn', async () => {
    const p = pipeline(1, { reopenAfterMs: 300 });
    const before = await pid(p);
    await turn();
    const lost = p.query('SELECT pg_sleep(1)');
    await pool.query('SELECT pg_terminate_backend($1)', [before]);
    await expect(lost).rejects.toThrow();
    await turn();
    // Inside the window: answered, by the pool.
    expect(await pid(p)).toEqual(expect.any(Number));
    expect(fallbackCalls).toBe(1);
    await new Promise((r) => setTimeout(r, 350));
    const reopened = await pid(p);
    expect(fallbackCalls).toBe(1);
    const { rows } = await pool.query('SELECT application_name FROM pg_stat_activity WHERE pid = $1', [
      reopened,
    ]);
    expect(rows[0]?.application_name).toBe('tenantry-read-pipeline');
  });

  it('fails the reads of a connection that cannot be opened', async () => {
    // A port nothing listens on: the connection is refused.
    const p = new ReadPipeline('postgres://nobody@127.0.0.1:1/none', 1, fallback, { reopenAfterMs: 0 });
    open.push(p);
    await expect(p.query('SELECT 1')).rejects.toThrow();
    expect(p.pending).toBe(0);
  });

  it('replaces a connection past its lifetime once its reads are answered', async () => {
    const p = pipeline(1, { maxLifetimeMs: 50 });
    const first = await pid(p);
    await new Promise((r) => setTimeout(r, 80));
    const second = await pid(p);
    expect(second).not.toBe(first);
    // The old session ends.
    for (let i = 0; ; i++) {
      const { rows } = await pool.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [first]);
      if (rows.length === 0) break;
      if (i > 200) throw new Error('the retired session never ended');
      await new Promise((r) => setTimeout(r, 10));
    }
  });

  it('sends reads past its cap to the fallback, and every read once closed', async () => {
    const p = pipeline(1, { maxInFlight: 3 });
    const pids = await Promise.all(Array.from({ length: 5 }, () => pid(p)));
    expect(fallbackCalls).toBe(2);
    // The first three on the one pipelined connection; the other two on pooled ones.
    expect(new Set(pids.slice(0, 3)).size).toBe(1);
    expect(pids.slice(3)).not.toContain(pids[0]);
    await p.close();
    expect(await pid(p)).toEqual(expect.any(Number));
    expect(fallbackCalls).toBe(3);
  });
});
