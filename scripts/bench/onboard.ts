/**
 * Onboarding benchmark. For each tier, onboards N tenants through the HTTP API of a real
 * control-plane process on the embedded default, and in the same run measures the raw-DDL
 * floor: the same schema, role and grants executed directly on the same server.
 *
 *   npx tsx scripts/bench/onboard.ts [--n 500] [--silo-n 100] [--concurrency 8]
 *
 * Prints one JSON object per tier: {tier, n, apiMsPerTenant, floorMsPerTenant, ratio,
 * p50AcceptToActiveMs, p99AcceptToActiveMs, peakRssMb}, then a summary with the targets.
 * apiMsPerTenant is wall time for N onboardings submitted `concurrency` at a time, divided by N;
 * the latencies come from a second pass with one onboarding in flight at a time.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { scramVerifier } from '../../control-plane/src/providers/postgres/scram.js';
import { loadTemplates } from '../../control-plane/src/templates.js';
import { mapLimit, percentile, round, startControlPlane } from './lib.js';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '500' },
    'silo-n': { type: 'string', default: '100' },
    concurrency: { type: 'string', default: '8' },
    'latency-n': { type: 'string', default: '100' },
  },
});
const N = Number(values.n);
const SILO_N = Number(values['silo-n']);
const CONCURRENCY = Number(values.concurrency);
const LATENCY_N = Number(values['latency-n']);
type Tier = 'pool' | 'bridge' | 'silo';

const cp = await startControlPlane({ TENANTRY_WORKER_CONCURRENCY: '4' });
const control = new pg.Client({ connectionString: cp.pgUrl('tenantry') });
await control.connect();
const { tenantSchema } = loadTemplates('templates');

async function viaApi(tier: Tier, n: number) {
  const run = Math.random().toString(36).slice(2, 7);
  const slugs = Array.from({ length: n }, (_, i) => `b${run}-${tier}-${i}`);
  const t0 = performance.now();
  const ops = await mapLimit(slugs, CONCURRENCY, async (slug) => {
    const res = await fetch(`${cp.base}/v1/tenants`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cp.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ slug, name: slug, tier }),
    });
    if (res.status !== 202) throw new Error(`${slug}: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { operation: { id: string } }).operation.id;
  });
  // Completion is read from the control database (no client polling load on the API).
  for (;;) {
    const { rows } = await control.query<{ done: number; failed: number }>(
      `SELECT count(*) FILTER (WHERE status IN ('succeeded','failed'))::int AS done, count(*) FILTER (WHERE status = 'failed')::int AS failed
         FROM operations WHERE id = ANY($1)`,
      [ops],
    );
    if (rows[0]!.failed > 0) {
      const why = await control.query(
        `SELECT error, steps FROM operations WHERE id = ANY($1) AND status = 'failed' LIMIT 3`,
        [ops],
      );
      throw new Error(`${rows[0]!.failed} ${tier} onboardings failed: ${JSON.stringify(why.rows)}`);
    }
    if (rows[0]!.done === n) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const wall = performance.now() - t0;
  return { wall };
}

/**
 * Accept-to-active latency, measured with one onboarding in flight at a time, so it is the
 * latency of the pipeline (queue pickup + steps), not time spent queued behind a burst.
 * Both timestamps are the server's own: the operation's created_at (the accepting transaction)
 * and finished_at (the transaction that made the tenant active).
 */
async function latency(tier: Tier, n: number) {
  const run = Math.random().toString(36).slice(2, 7);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const slug = `l${run}-${tier}-${i}`;
    const res = await fetch(`${cp.base}/v1/tenants`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cp.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ slug, name: slug, tier }),
    });
    const id = ((await res.json()) as { operation: { id: string } }).operation.id;
    ids.push(id);
    for (;;) {
      const { rows } = await control.query<{ status: string }>(
        'SELECT status FROM operations WHERE id = $1',
        [id],
      );
      if (rows[0]?.status === 'succeeded') break;
      if (rows[0]?.status === 'failed') throw new Error(`${slug} failed`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  const { rows } = await control.query<{ ms: number }>(
    `SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms FROM operations WHERE id = ANY($1)`,
    [ids],
  );
  const lat = rows.map((r) => Number(r.ms));
  return { p50: percentile(lat, 50), p99: percentile(lat, 99) };
}

/** The floor: the same Postgres work done directly, one tenant after another, with no control plane. */
async function floor(tier: Tier, n: number): Promise<number> {
  const admin = new pg.Client({ connectionString: cp.pgUrl('postgres') });
  await admin.connect();
  const scratch = `floor_${tier}_${Math.random().toString(36).slice(2, 7)}`;
  await admin.query(`CREATE DATABASE ${scratch}`);
  await admin.query(
    `DO $$ BEGIN CREATE ROLE floor_owner NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
  );
  const db = new pg.Client({ connectionString: cp.pgUrl(scratch) });
  await db.connect();
  const ddl = tenantSchema.migrations.map((m) => m.sql).join('\n');
  let template = '';
  if (tier === 'pool') {
    await db.query(
      `CREATE SCHEMA pool; SET search_path TO pool; ${ddl}; CREATE TABLE members (tenant_id uuid PRIMARY KEY, slug text UNIQUE)`,
    );
  }
  if (tier === 'silo') {
    template = `${scratch}_tpl`;
    await admin.query(`CREATE DATABASE ${template}`);
    const t = new pg.Client({ connectionString: cp.pgUrl(template) });
    await t.connect();
    await t.query(`CREATE SCHEMA app AUTHORIZATION floor_owner; SET search_path TO app; ${ddl}`);
    await t.end();
  }
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const name = `${scratch}_t${i}`;
    if (tier === 'pool') {
      await db.query('INSERT INTO pool.members VALUES (gen_random_uuid(), $1)', [name]);
    } else if (tier === 'bridge') {
      const v = scramVerifier(`pw-${i}`);
      await db.query(
        `CREATE ROLE ${name} LOGIN PASSWORD '${v}' CONNECTION LIMIT 20;
         ALTER ROLE ${name} SET statement_timeout = 30000; ALTER ROLE ${name} SET search_path = ${name};
         CREATE SCHEMA ${name} AUTHORIZATION floor_owner; SET search_path TO ${name}; ${ddl};
         GRANT USAGE ON SCHEMA ${name} TO ${name};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${name} TO ${name};
         GRANT CONNECT ON DATABASE ${scratch} TO ${name}; RESET search_path`,
      );
    } else {
      const v = scramVerifier(`pw-${i}`);
      await admin.query(`CREATE ROLE ${name} LOGIN PASSWORD '${v}' CONNECTION LIMIT 50`);
      await admin.query(`CREATE DATABASE ${name} OWNER floor_owner TEMPLATE ${template}`);
      await admin.query(
        `REVOKE CONNECT ON DATABASE ${name} FROM PUBLIC; GRANT CONNECT ON DATABASE ${name} TO ${name}`,
      );
      const s = new pg.Client({ connectionString: cp.pgUrl(name) });
      await s.connect();
      await s.query(
        `GRANT USAGE ON SCHEMA app TO ${name}; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA app TO ${name}`,
      );
      await s.end();
    }
  }
  const ms = performance.now() - t0;
  await db.end();
  await admin.end();
  return ms / n;
}

const results = [];
for (const tier of ['pool', 'bridge', 'silo'] as const) {
  const n = tier === 'silo' ? SILO_N : N;
  const floorMs = await floor(tier, n);
  const api = await viaApi(tier, n);
  const apiMs = api.wall / n;
  const lat = await latency(tier, Math.min(n, LATENCY_N));
  const r = {
    tier,
    n,
    apiMsPerTenant: round(apiMs),
    floorMsPerTenant: round(floorMs),
    ratio: round(apiMs / floorMs),
    p50AcceptToActiveMs: round(lat.p50),
    p99AcceptToActiveMs: round(lat.p99),
    latencySamples: Math.min(n, LATENCY_N),
    concurrency: CONCURRENCY,
    peakRssMb: cp.peakRssMb(),
  };
  results.push(r);
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
const bridge = results.find((r) => r.tier === 'bridge')!;
const pool = results.find((r) => r.tier === 'pool')!;
const peak = Math.max(...results.map((r) => r.peakRssMb));
process.stdout.write(
  `${JSON.stringify({
    summary: true,
    targets: {
      bridgeRatioAtN500: { value: bridge.ratio, target: 2.0, met: bridge.ratio <= 2.0, n: bridge.n },
      poolP50AcceptToActiveMs: {
        value: pool.p50AcceptToActiveMs,
        target: 50,
        met: pool.p50AcceptToActiveMs <= 50,
      },
      controlPlanePeakRssMb: { value: peak, target: 250, met: peak <= 250 },
    },
  })}\n`,
);
await control.end();
await cp.stop();
