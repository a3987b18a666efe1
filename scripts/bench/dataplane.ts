/**
 * Data-plane client benchmark (control-plane/src/client): what `withTenant` costs per transaction, and
 * the longest an application waits while the control plane rotates credentials or promotes a tenant.
 *
 *   npx tsx scripts/bench/dataplane.ts [--tx 8000] [--workers 16]
 *
 * 1. Overhead: 16 workers run the same transaction on pool tenants (BEGIN, set_config('app.tenant_id',
 *    …, true), one INSERT, COMMIT), through the client and, as the floor, through a plain pg.Pool on the
 *    same placement doing exactly those statements. Order raw, client, client, raw; the best of each
 *    pair is compared (target: client ≤ 1.2× raw per transaction).
 * 2. Rotation: the same workers through the client on a pool, a bridge and a silo tenant while each is
 *    rotated twice (the second rotation retires the first one's old login): failed transactions, the
 *    longest transaction, beside the longest of a quiet run just before (the floor).
 * 3. Promotion: the workers on a pool tenant while it is promoted to silo: failed transactions, the
 *    longest transaction (the freeze and the re-routing included), the write freeze the promotion
 *    reports, and the quiet floor.
 *
 * Prints JSON.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import {
  type ConnectionDescriptor,
  createTenantryClient,
  httpDescriptorSource,
  placementKey,
  type TenantryClient,
} from '../../control-plane/src/client/index.js';
import { round, startControlPlane } from './lib.js';

const { values } = parseArgs({
  options: { tx: { type: 'string', default: '8000' }, workers: { type: 'string', default: '16' } },
});
const TX = Number(values.tx);
const WORKERS = Number(values.workers);

const cp = await startControlPlane({
  TENANTRY_DRIFT_SCHEDULE: 'off',
  TENANTRY_ROTATION_SCHEDULE: 'off',
  TENANTRY_WORKER_CONCURRENCY: '2',
});
const control = new pg.Client({ connectionString: cp.pgUrl('tenantry') });
await control.connect();

const api = async (path: string, body?: unknown) => {
  const res = await fetch(`${cp.base}${path}`, {
    method: body ? 'POST' : 'GET',
    headers: { authorization: `Bearer ${cp.token}`, 'content-type': 'application/json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  // biome-ignore lint/suspicious/noExplicitAny: JSON from our own API, in a benchmark script
  return (await res.json()) as Record<string, any>;
};

async function waitOp(id: string): Promise<Record<string, unknown>> {
  for (;;) {
    const { rows } = await control.query('SELECT status, progress, error FROM operations WHERE id = $1', [
      id,
    ]);
    const op = rows[0];
    if (op.status === 'succeeded') return op.progress;
    if (op.status === 'failed') throw new Error(`operation ${id} failed: ${op.error}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function onboard(slug: string, tier: string): Promise<string> {
  const created = await api('/v1/tenants', { slug, name: slug, tier });
  await waitOp(created.operation.id);
  return created.tenant.id;
}

const descriptor = async (slug: string) =>
  (await api(`/v1/tenants/${slug}/connection`)) as ConnectionDescriptor;

const pools = ['bench-pool-a', 'bench-pool-b', 'bench-pool-c', 'bench-pool-d'];
for (const slug of pools) await onboard(slug, 'pool');
await onboard('bench-bridge', 'bridge');
await onboard('bench-silo', 'silo');
const poolIds = await Promise.all(pools.map(async (slug) => (await descriptor(slug)).tenantId));

const newClient = (ttlMs = 60_000) =>
  createTenantryClient({
    descriptors: httpDescriptorSource({ url: cp.base, token: cp.token }),
    descriptorTtlMs: ttlMs,
    pool: { max: WORKERS },
  });

let seq = 0;
const email = () => `b${seq++}@bench`;

/** Runs `n` transactions on `workers` loops; returns the wall time. */
async function run(n: number, one: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      for (let i = next++; i < n; i = next++) await one(i);
    }),
  );
  return performance.now() - t0;
}

/* ---------------- 1. overhead per transaction, against raw pg doing the same transaction */
const d0 = await descriptor(pools[0] as string);
const raw = new pg.Pool({
  host: d0.host,
  port: d0.port,
  database: d0.database,
  user: d0.user,
  password: d0.password,
  max: WORKERS,
});
const rawTx = async (i: number) => {
  const tenantId = poolIds[i % poolIds.length] as string;
  const c = await raw.connect();
  try {
    await c.query('BEGIN');
    await c.query('SELECT set_config($1, $2, true)', ['app.tenant_id', tenantId]);
    await c.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [tenantId, email()]);
    await c.query('COMMIT');
  } finally {
    c.release();
  }
};
const client = newClient();
const clientTx = (i: number) =>
  client.withTenant(pools[i % pools.length] as string, async (db) => {
    await db.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [db.tenantId, email()]);
  });
// Warm both: connections open, descriptors cached, plans cached.
await run(WORKERS * 20, rawTx);
await run(WORKERS * 20, clientTx);
const rawA = await run(TX, rawTx);
const clientA = await run(TX, clientTx);
const clientB = await run(TX, clientTx);
const rawB = await run(TX, rawTx);
const rawMs = Math.min(rawA, rawB);
const clientMs = Math.min(clientA, clientB);
await raw.end();
await client.close();

/* ---------------- 2 and 3: the longest transaction the application sees */
interface Sample {
  at: number;
  ms: number;
}
class Load {
  samples: Sample[] = [];
  failures: string[] = [];
  private stopped = false;
  private done: Promise<void> = Promise.resolve();
  constructor(
    private readonly c: TenantryClient,
    private readonly slugs: string[],
  ) {}
  start(): this {
    this.done = Promise.all(
      Array.from({ length: WORKERS }, async (_, w) => {
        for (let k = 0; !this.stopped; k++) {
          const slug = this.slugs[(w + k) % this.slugs.length] as string;
          const t0 = performance.now();
          try {
            await this.c.withTenant(slug, (db) =>
              db.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [db.tenantId, email()]),
            );
            this.samples.push({ at: t0, ms: performance.now() - t0 });
          } catch (e) {
            this.failures.push((e as Error).message);
          }
        }
      }),
    ).then(() => undefined);
    return this;
  }
  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
  longest(from: number, to = Number.POSITIVE_INFINITY): number {
    return round(Math.max(0, ...this.samples.filter((s) => s.at >= from && s.at < to).map((s) => s.ms)));
  }
  count(from: number, to = Number.POSITIVE_INFINITY): number {
    return this.samples.filter((s) => s.at >= from && s.at < to).length;
  }
}
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const retries = async (c: TenantryClient) =>
  (await c.metrics.registry.getSingleMetric('tenantry_client_retries_total')?.get())?.values.map((v) => ({
    reason: v.labels.reason,
    n: v.value,
  })) ?? [];

// Rotation: a pool, a bridge and a silo tenant, each rotated twice.
const rotated = ['bench-pool-a', 'bench-bridge', 'bench-silo'];
const rc = newClient(500);
const rload = new Load(rc, rotated).start();
const quietFrom = performance.now();
await pause(3000);
const rotationFrom = performance.now();
const GRACE_S = 3;
for (let round2 = 0; round2 < 2; round2++) {
  const old = await Promise.all(rotated.map(descriptor));
  for (const slug of rotated) {
    const r = await api(`/v1/tenants/${slug}/credential-rotations`, { graceSeconds: GRACE_S });
    if (!r.operation) throw new Error(`rotation of ${slug} refused: ${JSON.stringify(r)}`);
    await waitOp(r.operation.id);
  }
  // The workers move to the new logins within the descriptor TTL; the grace period then ends.
  const keys = old.map(placementKey);
  while (rc.placements().some((k) => keys.includes(k))) await pause(100);
  await pause(GRACE_S * 1000);
}
// The second rotation's first step retired the first one's old logins; retire the second's too.
for (const slug of rotated) {
  const r = await api(`/v1/tenants/${slug}/credential-rotations`, { graceSeconds: GRACE_S });
  await waitOp(r.operation.id);
}
const rotationTo = performance.now();
await pause(1000);
await rload.stop();
const rotationRetries = await retries(rc);
await rc.close();

// Promotion: a pool tenant moved to silo under the same load.
const moved = 'bench-pool-b';
const pc = newClient(500);
const pload = new Load(pc, [moved]).start();
const pQuietFrom = performance.now();
await pause(3000);
const promotionFrom = performance.now();
const promo = await api(`/v1/tenants/${moved}/promotions`, { targetTier: 'silo' });
const progress = await waitOp(promo.operation.id);
const promotionTo = performance.now();
await pause(1000);
await pload.stop();
const promotionRetries = await retries(pc);
await pc.close();

const out = {
  workers: WORKERS,
  transactionsPerRun: TX,
  overhead: {
    rawMsPerTx: round(rawMs / TX, 4),
    clientMsPerTx: round(clientMs / TX, 4),
    rawTxPerSec: round((TX / rawMs) * 1000, 0),
    clientTxPerSec: round((TX / clientMs) * 1000, 0),
    ratio: round(clientMs / rawMs, 3),
    target: '≤ 1.2',
    runsMs: { rawA: round(rawA), clientA: round(clientA), clientB: round(clientB), rawB: round(rawB) },
  },
  rotation: {
    tenants: rotated,
    rotations: 9,
    graceSeconds: GRACE_S,
    failedTransactions: rload.failures.length,
    failures: [...new Set(rload.failures)].slice(0, 5),
    transactions: rload.count(rotationFrom, rotationTo),
    longestMs: rload.longest(rotationFrom, rotationTo),
    floorLongestQuietMs: rload.longest(quietFrom, rotationFrom),
    clientRetries: rotationRetries,
  },
  promotion: {
    from: 'pool',
    to: 'silo',
    failedTransactions: pload.failures.length,
    failures: [...new Set(pload.failures)].slice(0, 5),
    transactions: pload.count(promotionFrom, promotionTo),
    longestMs: pload.longest(promotionFrom, promotionTo),
    floorLongestQuietMs: pload.longest(pQuietFrom, promotionFrom),
    writeFreezeMs: progress.writeFreezeMs ?? null,
    clientRetries: promotionRetries,
  },
};
await control.end();
await cp.stop();
process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
