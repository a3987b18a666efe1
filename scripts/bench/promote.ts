/**
 * Promotion benchmark: pool tenants with 1,000,000 rows across the template's tables, next to
 * other tenants, are promoted to silo while a writer keeps writing to each. In the same run, the
 * floor: a plain `COPY (SELECT … WHERE tenant_id = …) TO STDOUT` piped into `COPY … FROM STDIN`
 * between the same two databases, in the same (binary) format, into the same kind of target.
 *
 *   npx tsx scripts/bench/promote.ts [--rows 1000000] [--small 100000]
 *
 * Cache and order: every tenant is read once before anything is timed; two large tenants of the
 * same size are used in the order floor A, promotion A, promotion B, floor B, and the best of each
 * pair is compared (all raw values are printed too).
 *
 * Prints JSON: copy throughput (rows/s) and its ratio to the floor (target ≥ 0.5), the write-freeze
 * window at the small and the large size (target ≤ 1 s for both, and not growing with size), the
 * control plane's peak resident memory during each promotion, measured apart (target ≤ 250 MB at
 * 1,000,000 rows, and flat: rows are streamed), and the cost of the freeze guard trigger on pool
 * writes.
 */
import fs from 'node:fs';
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

const cp = await startControlPlane({ TENANTRY_WORKER_CONCURRENCY: '2', TENANTRY_DRIFT_SCHEDULE: 'off' });
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
  return id;
}

/** Reads every row of a tenant once, so no measured run pays for a cold cache the other did not. */
async function warm(tenantId: string) {
  for (const t of ['users', 'documents', 'settings'])
    await data.query(
      `SELECT count(*), sum(hashtextextended(x::text, 0)) FROM pool.${t} x WHERE tenant_id = $1`,
      [tenantId],
    );
}

/**
 * The floor: plain binary COPY out of the pool, piped into binary COPY into a silo-shaped database
 * with primary keys only, in replica mode (the promotion writes its target that way too).
 */
async function floor(tenantId: string, target: string): Promise<{ ms: number; rows: number }> {
  const admin = new pg.Client({ connectionString: cp.pgUrl('postgres') });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${target}`);
  await admin.query(`CREATE DATABASE ${target} TEMPLATE tenantry_data_silo_template`);
  await admin.end();
  const tgt = new pg.Client({ connectionString: cp.pgUrl(target) });
  const src = new pg.Client({ connectionString: cp.pgUrl('tenantry_data') });
  await Promise.all([tgt.connect(), src.connect()]);
  await tgt.query(`ALTER TABLE app.documents DROP CONSTRAINT IF EXISTS documents_tenant_id_owner_id_fkey;
    DROP INDEX IF EXISTS app.documents_owner_idx; ALTER TABLE app.users DROP CONSTRAINT IF EXISTS users_tenant_id_email_key;
    SET session_replication_role = replica`);
  const t0 = performance.now();
  let rows = 0;
  for (const table of ['documents', 'settings', 'users']) {
    const out = src.query(
      copyTo(`COPY (SELECT * FROM pool.${table} WHERE tenant_id = '${tenantId}') TO STDOUT (FORMAT binary)`),
    );
    const inp = tgt.query(copyFrom(`COPY app.${table} FROM STDIN (FORMAT binary)`));
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

/** Resets the control plane's peak-RSS counter (VmHWM), so each promotion's peak is its own. */
function resetPeakRss() {
  try {
    fs.writeFileSync(`/proc/${cp.proc.pid}/clear_refs`, '5');
  } catch {
    // not permitted here: the peak then covers the whole run so far
  }
}

async function promote(slug: string, tenantId: string) {
  const w = writer(slug, tenantId);
  await new Promise((r) => setTimeout(r, 300));
  resetPeakRss();
  const res = await api(`/v1/tenants/${slug}/promotions`, { targetTier: 'silo' });
  const op = await waitOp(res.operation.id);
  const peakRssMb = cp.peakRssMb();
  const writes = await w.finish();
  const copied = Object.values(op.progress.rowsCopied as Record<string, number>).reduce((a, b) => a + b, 0);
  return {
    op,
    writes,
    copyMs: Number(op.progress.copyMs),
    verifyFullMs: op.progress.verifyFullMs as number,
    copied,
    freezeMs: op.progress.writeFreezeMs as number,
    changedKeysInFreeze: op.progress.verification?.changedKeys as number,
    peakRssMb,
  };
}

/**
 * The freeze guard's cost on pool writes: the same inserts with the trigger enabled and disabled
 * (twice each, alternating; best of each), in bulk (one statement, a row-level trigger call per
 * row) and one row per transaction through the pool's own role.
 */
async function guardCost(tenantId: string) {
  const d = await api('/v1/tenants/bench-guard/connection');
  const app = new pg.Client({
    host: d.host,
    port: d.port,
    database: d.database,
    user: d.user,
    password: d.password,
  });
  await app.connect();
  const BULK = 200_000;
  const SINGLE = 3_000;
  let n = 0;
  const bulk = async () => {
    const t0 = performance.now();
    await data.query(
      `INSERT INTO pool.settings (tenant_id, key, value) SELECT $1, 'g' || $2 || '-' || g, '{}' FROM generate_series(1, ${BULK}) g`,
      [tenantId, ++n],
    );
    return performance.now() - t0;
  };
  const single = async () => {
    const tag = ++n;
    const t0 = performance.now();
    for (let i = 0; i < SINGLE; i++) {
      await app.query('BEGIN');
      await app.query('SELECT set_config($1, $2, true)', [d.tenantSetting, tenantId]);
      await app.query(`INSERT INTO settings (tenant_id, key, value) VALUES ($1, $2, '{}')`, [
        tenantId,
        `s${tag}-${i}`,
      ]);
      await app.query('COMMIT');
    }
    return performance.now() - t0;
  };
  const runs: Record<'on' | 'off', { bulk: number[]; single: number[] }> = {
    on: { bulk: [], single: [] },
    off: { bulk: [], single: [] },
  };
  for (const mode of ['off', 'on', 'off', 'on'] as const) {
    await data.query(`ALTER TABLE pool.settings ${mode === 'on' ? 'ENABLE' : 'DISABLE'} TRIGGER USER`);
    runs[mode].bulk.push(await bulk());
    runs[mode].single.push(await single());
  }
  await data.query('ALTER TABLE pool.settings ENABLE TRIGGER USER');
  await app.end();
  const best = (xs: number[]) => Math.min(...xs);
  const b = { on: best(runs.on.bulk), off: best(runs.off.bulk) };
  const s = { on: best(runs.on.single), off: best(runs.off.single) };
  return {
    bulkInsert: {
      rows: BULK,
      msWithGuard: round(b.on),
      msWithout: round(b.off),
      overheadPct: round(((b.on - b.off) / b.off) * 100, 1),
      usPerRow: round(((b.on - b.off) * 1000) / BULK, 2),
    },
    singleRowTransactions: {
      transactions: SINGLE,
      msWithGuard: round(s.on),
      msWithout: round(s.off),
      overheadPct: round(((s.on - s.off) / s.off) * 100, 1),
    },
  };
}

await tenant('bench-neighbour-a', 100_000);
await tenant('bench-neighbour-b', 100_000);
const guardId = await tenant('bench-guard', 0);
const smallId = await tenant('bench-small', SMALL);
const largeA = await tenant('bench-large-a', LARGE);
const largeB = await tenant('bench-large-b', LARGE);
await data.query('VACUUM ANALYZE pool.users, pool.documents, pool.settings');
for (const id of [smallId, largeA, largeB]) await warm(id);

const small = await promote('bench-small', smallId);
const floorA = await floor(largeA, 'floor_a');
const oursA = await promote('bench-large-a', largeA);
const oursB = await promote('bench-large-b', largeB);
const floorB = await floor(largeB, 'floor_b');
const guard = await guardCost(guardId);

const rate = (rows: number, ms: number) => rows / (ms / 1000);
const ours = [oursA, oursB].map((o) => rate(o.copied, o.copyMs));
const floors = [floorA, floorB].map((f) => rate(f.rows, f.ms));
const bestOurs = Math.max(...ours);
const bestFloor = Math.max(...floors);
const out = {
  rows: LARGE,
  copy: {
    rowsCopied: oursA.copied,
    rowsPerSec: Math.round(bestOurs),
    floorRowsPerSec: Math.round(bestFloor),
    ratioToFloor: round(bestOurs / bestFloor),
    target: '>= 0.5',
    format: 'binary COPY on both sides; order floor A, ours A, ours B, floor B; best of each',
    runs: {
      oursMs: [round(oursA.copyMs), round(oursB.copyMs)],
      floorMs: [round(floorA.ms), round(floorB.ms)],
      oursRowsPerSec: ours.map(Math.round),
      floorRowsPerSec: floors.map(Math.round),
    },
  },
  writeFreezeMs: {
    [SMALL]: small.freezeMs,
    [LARGE]: [oursA.freezeMs, oursB.freezeMs],
    target: '<= 1000 at both sizes, not growing with size',
  },
  changedKeysVerifiedInFreeze: {
    [SMALL]: small.changedKeysInFreeze,
    [LARGE]: [oursA.changedKeysInFreeze, oursB.changedKeysInFreeze],
  },
  fullVerificationOutsideFreezeMs: {
    [SMALL]: small.verifyFullMs,
    [LARGE]: [oursA.verifyFullMs, oursB.verifyFullMs],
  },
  controlPlanePeakRssMb: {
    [SMALL]: small.peakRssMb,
    [LARGE]: [oursA.peakRssMb, oursB.peakRssMb],
    target: '<= 250 MB, flat',
  },
  writesDuringPromotion: { small: small.writes, large: [oursA.writes, oursB.writes] },
  stepsMs: Object.fromEntries(
    oursA.op.steps.map((s: { name: string; startedAt: string; finishedAt: string }) => [
      s.name,
      Date.parse(s.finishedAt) - Date.parse(s.startedAt),
    ]),
  ),
  freezeGuardCost: guard,
};
process.stdout.write(`${JSON.stringify(out)}\n`);
await Promise.all([control.end(), data.end()]);
await cp.stop();
