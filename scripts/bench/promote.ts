/**
 * Promotion benchmark: a pool tenant with 1,000,000 rows across the template's tables, next to
 * other tenants, is promoted to silo while a writer keeps writing to it. In the same run, the
 * floor: a plain `COPY (SELECT … WHERE tenant_id = …) TO STDOUT` piped into `COPY … FROM STDIN`
 * between the same two databases.
 *
 *   npx tsx scripts/bench/promote.ts [--rows 1000000] [--small 100000]
 *
 * Prints JSON: copy throughput (rows/s) and its ratio to the floor (target ≥ 0.5), the
 * write-freeze window at the small and the large size (target ≤ 1 s for both), and the control
 * plane's peak resident memory (target ≤ 250 MB at 1,000,000 rows; rows are streamed).
 */
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { round, startControlPlane } from './lib.js';

const { values } = parseArgs({
  options: { rows: { type: 'string', default: '1000000' }, small: { type: 'string', default: '100000' } },
});
const LARGE = Number(values.rows);
const SMALL = Number(values.small);

const cp = await startControlPlane({ TENANTRY_WORKER_CONCURRENCY: '2' });
const control = new pg.Client({ connectionString: cp.pgUrl('tenantry') });
const data = new pg.Client({ connectionString: cp.pgUrl('tenantry_data') });
await Promise.all([control.connect(), data.connect()]);

const api = async (path: string, body?: unknown) => {
  const res = await fetch(`${cp.base}${path}`, {
    method: body ? 'POST' : 'GET',
    headers: { authorization: `Bearer ${cp.token}`, 'content-type': 'application/json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  // biome-ignore lint/suspicious/noExplicitAny: JSON from our own API, in a benchmark script
  return (await res.json()) as Record<string, any>;
};

async function waitOp(id: string) {
  for (;;) {
    const { rows } = await control.query(
      'SELECT status, steps, progress, error FROM operations WHERE id = $1',
      [id],
    );
    const op = rows[0];
    if (op.status === 'succeeded') return op;
    if (op.status === 'failed') throw new Error(`operation ${id} failed: ${op.error}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function tenant(slug: string, rows: number): Promise<string> {
  const created = await api('/v1/tenants', { slug, name: slug, tier: 'pool' });
  await waitOp(created.operation.id);
  const id: string = created.tenant.id;
  // 40% users, 40% documents, 20% settings.
  const users = Math.floor(rows * 0.4);
  const docs = Math.floor(rows * 0.4);
  const settings = rows - users - docs;
  await data.query(
    `INSERT INTO pool.users (tenant_id, email, name) SELECT $1, 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, $2) g`,
    [id, users],
  );
  await data.query(
    `INSERT INTO pool.documents (tenant_id, owner_id, title, body)
     SELECT $1, u.id, 'Document', repeat('lorem ipsum ', 8) FROM (SELECT id FROM pool.users WHERE tenant_id = $1 LIMIT $2) u`,
    [id, docs],
  );
  await data.query(
    `INSERT INTO pool.settings (tenant_id, key, value) SELECT $1, 'k' || g, jsonb_build_object('v', g) FROM generate_series(1, $2) g`,
    [id, settings],
  );
  await data.query('VACUUM ANALYZE pool.users, pool.documents, pool.settings');
  return id;
}

/** The floor: plain COPY out of the pool, piped into COPY into a silo-shaped database. */
async function floor(tenantId: string): Promise<{ ms: number; rows: number }> {
  const admin = new pg.Client({ connectionString: cp.pgUrl('postgres') });
  await admin.connect();
  await admin.query('CREATE DATABASE floor_target TEMPLATE tenantry_data_silo_template');
  await admin.end();
  const tgt = new pg.Client({ connectionString: cp.pgUrl('floor_target') });
  const src = new pg.Client({ connectionString: cp.pgUrl('tenantry_data') });
  await Promise.all([tgt.connect(), src.connect()]);
  // Same shape as the promotion's target during its copy: primary keys only.
  await tgt.query(`ALTER TABLE app.documents DROP CONSTRAINT IF EXISTS documents_tenant_id_owner_id_fkey;
    DROP INDEX IF EXISTS app.documents_owner_idx; ALTER TABLE app.users DROP CONSTRAINT IF EXISTS users_tenant_id_email_key`);
  const t0 = performance.now();
  let rows = 0;
  for (const table of ['users', 'documents', 'settings']) {
    const out = src.query(
      copyTo(`COPY (SELECT * FROM pool.${table} WHERE tenant_id = '${tenantId}') TO STDOUT`),
    );
    const inp = tgt.query(copyFrom(`COPY app.${table} FROM STDIN`));
    await pipeline(out, inp);
    rows += Number(inp.rowCount ?? 0);
  }
  const ms = performance.now() - t0;
  await Promise.all([tgt.end(), src.end()]);
  return { ms, rows };
}

/** A writer that keeps writing to the promoted tenant through its descriptor, following the cutover. */
function writer(slug: string, tenantId: string) {
  let stop = false;
  let ok = 0;
  let refused = 0;
  const done = (async () => {
    while (!stop) {
      const d = await api(`/v1/tenants/${slug}/connection`);
      const c = new pg.Client({
        host: d.host,
        port: d.port,
        database: d.database,
        user: d.user,
        password: d.password,
      });
      await c.connect();
      try {
        for (let i = 0; !stop; i++) {
          try {
            await c.query('BEGIN');
            if (d.tenantSetting)
              await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, tenantId]);
            await c.query(
              `INSERT INTO settings (tenant_id, key, value) VALUES ($1, $2, '{}') ON CONFLICT DO NOTHING`,
              [tenantId, `w-${Date.now()}-${i}`],
            );
            await c.query('COMMIT');
            ok++;
          } catch {
            await c.query('ROLLBACK').catch(() => undefined);
            refused++;
            break; // frozen or moved: re-read the descriptor
          }
          await new Promise((r) => setTimeout(r, 5));
        }
      } finally {
        await c.end().catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    async finish() {
      stop = true;
      await done;
      return { ok, refused };
    },
  };
}

async function promote(slug: string, tenantId: string) {
  const w = writer(slug, tenantId);
  await new Promise((r) => setTimeout(r, 300));
  const res = await api(`/v1/tenants/${slug}/promotions`, { targetTier: 'silo' });
  const op = await waitOp(res.operation.id);
  const writes = await w.finish();
  const step = (name: string) => {
    const s = op.steps.find((x: { name: string }) => x.name === name);
    return Date.parse(s.finishedAt) - Date.parse(s.startedAt);
  };
  const copied = Object.values(op.progress.rowsCopied as Record<string, number>).reduce((a, b) => a + b, 0);
  // The copy itself; the bulk verification that follows it in the same step is reported apart.
  return {
    op,
    writes,
    copyMs: Number(op.progress.copyMs ?? step('copy')),
    bulkVerifyMs: op.progress.bulkVerifyMs as number,
    copied,
    freezeMs: op.progress.writeFreezeMs as number,
  };
}

await tenant('bench-neighbour-a', 100_000);
await tenant('bench-neighbour-b', 100_000);
const smallId = await tenant('bench-small', SMALL);
const largeId = await tenant('bench-large', LARGE);

const fl = await floor(largeId);
const small = await promote('bench-small', smallId);
const large = await promote('bench-large', largeId);
const ourRate = large.copied / (large.copyMs / 1000);
const floorRate = fl.rows / (fl.ms / 1000);
const peak = cp.peakRssMb();
const out = {
  rows: LARGE,
  copy: {
    rowsCopied: large.copied,
    ms: round(large.copyMs),
    rowsPerSec: Math.round(ourRate),
    floorMs: round(fl.ms),
    floorRowsPerSec: Math.round(floorRate),
    ratioToFloor: round(ourRate / floorRate),
    target: '>= 0.5',
    bulkVerifyMs: large.bulkVerifyMs,
  },
  writeFreezeMs: { [SMALL]: small.freezeMs, [LARGE]: large.freezeMs, target: '<= 1000 at both sizes' },
  writesDuringPromotion: { small: small.writes, large: large.writes },
  stepsMs: Object.fromEntries(
    large.op.steps.map((s: { name: string; startedAt: string; finishedAt: string }) => [
      s.name,
      Date.parse(s.finishedAt) - Date.parse(s.startedAt),
    ]),
  ),
  controlPlanePeakRssMb: peak,
  memoryTarget: '<= 250 MB',
};
process.stdout.write(`${JSON.stringify(out)}\n`);
await Promise.all([control.end(), data.end()]);
await cp.stop();
