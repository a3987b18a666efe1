import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryText } from '../../control-plane/src/db/text-rows.js';
import { adminUrl, rand } from '../helpers/runtime.js';

/**
 * db/text-rows.ts reads rows as the server's text through pg's own Query (prepare once, bind,
 * execute), on a real Postgres: through a pool (which answers with a promise and must get its
 * connection back) and through a client (a transaction's, which answers with the query itself).
 */
let pool: pg.Pool;
const NAMED = {
  name: `text_rows_${rand()}`,
  text: `SELECT $1::int AS n, NULL::text AS gap, 'a"b'::text AS q, now() AS t`,
};

beforeAll(() => {
  pool = new pg.Pool({ connectionString: adminUrl(), max: 2 });
});
afterAll(async () => {
  await pool.end();
});

describe('queryText', () => {
  it('returns each row as the server text of its columns, NULL as null, through a pool', async () => {
    const rows = await queryText(pool, NAMED, [7]);
    expect(rows).toHaveLength(1);
    const [n, gap, q, t] = rows[0] ?? [];
    expect([n, gap, q]).toEqual(['7', null, 'a"b']);
    // The timestamp as the server writes it (DateStyle ISO), not a Date.
    expect(t).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?[+-]\d\d/);
  });

  it('prepares a named statement once per connection, and runs it again by name', async () => {
    const c = await pool.connect();
    try {
      for (const v of [1, 2, 3])
        expect(await queryText(c, NAMED, [v])).toEqual([[String(v), null, 'a"b', expect.any(String)]]);
      const { rows } = await c.query<{ n: string }>(
        'SELECT count(*) AS n FROM pg_prepared_statements WHERE name = $1',
        [NAMED.name],
      );
      expect(rows[0]?.n).toBe('1');
    } finally {
      c.release();
    }
  });

  it('reads many rows, and none, through a client inside a transaction', async () => {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const many = await queryText(
        c,
        { name: '', text: 'SELECT g::text, g % 2 = 0 FROM generate_series(1, $1::int) g' },
        [500],
      );
      expect(many).toHaveLength(500);
      expect(many[499]).toEqual(['500', 't']);
      expect(await queryText(c, { name: '', text: 'SELECT 1 WHERE false' }, [])).toEqual([]);
      await c.query('COMMIT');
    } finally {
      c.release();
    }
  });

  it("rejects with the server's error, and the pool gets its connection back", async () => {
    const bad = { name: '', text: 'SELECT 1 / $1::int' };
    await expect(queryText(pool, bad, [0])).rejects.toMatchObject({ code: '22012' });
    const c = await pool.connect();
    await expect(queryText(c, bad, [0])).rejects.toMatchObject({ code: '22012' });
    // The client is usable after its error.
    expect(await queryText(c, { name: '', text: 'SELECT $1::text' }, ['ok'])).toEqual([['ok']]);
    c.release();
    // Both connections are idle again: nothing was leaked by the failures.
    expect(pool.totalCount - pool.idleCount).toBe(0);
    await Promise.all([
      queryText(pool, NAMED, [1]),
      queryText(pool, NAMED, [2]),
      queryText(pool, NAMED, [3]),
    ]);
  });
});
