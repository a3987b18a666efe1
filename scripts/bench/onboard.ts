/**
 * Onboarding benchmark. For each tier, onboards N tenants through the HTTP API of a real
 * control-plane process on the embedded default, and in the same run measures the raw-DDL
 * floor: the same SQL the providers run (the tenant's group role and its two logins with their
 * limits, schema from the template as its owner with the freeze guard on each table, PUBLIC
 * revokes, grants and default privileges, schema-version bookkeeping, pool membership, silo
 * database), sent directly to the same server as plain SQL strings.
 *
 *   npx tsx scripts/bench/onboard.ts [--n 500] [--silo-n 100] [--concurrency 1,8] [--tiers pool,bridge,silo] [--rounds 5] [--warmup 10] [--no-checkpoint]
 *
 * Before each tier and concurrency, both sides onboard --warmup tenants unmeasured (the floor's made in
 * its own database, which is kept for the measured chunks, as its one-time setup is): the first
 * onboardings of a process pay its code's first compilation and each new session's first statements.
 *
 * Each tier runs once per concurrency C of the list, both sides closed-loop at that same C:
 * C onboardings in flight at a time, an API onboarding counting as in flight from its POST
 * until its operation has ended (the worker may run up to the largest C at once). C=1 shows
 * the pipeline's latency; a larger C, throughput once the two cores are saturated. apiMsPerTenant and floorMsPerTenant are wall time / N;
 * p50/p99AcceptToActiveMs are over the same N onboardings, from the server's own timestamps
 * (the operation's created_at, in the accepting transaction, to its finished_at, in the
 * transaction that made the tenant active). peakRssMb is the control-plane process's VmHWM.
 * Every tier uses the same N except silo, which uses --silo-n (each silo is a whole database);
 * the JSON line says which N it ran.
 *
 * The two sides alternate in --rounds chunks of N/rounds (floor, API, floor, API, …) and each
 * side's wall times are summed: on a shared machine whose load drifts, both see the same load.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { request } from 'undici';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import { type ControlPlane, mapLimit, percentile, round, startControlPlane } from './lib.js';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '500' },
    'silo-n': { type: 'string', default: '100' },
    concurrency: { type: 'string', default: '1,8' },
    tiers: { type: 'string', default: 'pool,bridge,silo' },
    rounds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '10' },
    'no-checkpoint': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(
    'usage: npx tsx scripts/bench/onboard.ts [--n 500] [--silo-n 100] [--concurrency 1,8] [--tiers pool,bridge,silo] [--rounds 5] [--warmup 10] [--no-checkpoint]\n',
  );
  process.exit(0);
}
const N = Number(values.n);
const SILO_N = Number(values['silo-n']);
const CONCURRENCIES = values.concurrency.split(',').map(Number);
type Tier = 'pool' | 'bridge' | 'silo';
const TIERS = values.tiers.split(',') as Tier[];
const ROUNDS = Math.max(1, Number(values.rounds));
const WARMUP = Math.max(0, Number(values.warmup));
const CHECKPOINT = !values['no-checkpoint'];

// No scheduled drift sweep in the middle of the measurement.
const cp = await startControlPlane({
  TENANTRY_WORKER_CONCURRENCY: String(Math.max(...CONCURRENCIES)),
  TENANTRY_DRIFT_SCHEDULE: 'off',
});
const control = new pg.Client({ connectionString: cp.pgUrl('tenantry') });
await control.connect();
const { tenantSchema, catalog } = loadTemplates('templates');
const DDL = tenantSchema.migrations.map((m) => m.sql).join('\n');
const TEMPLATE_VERSION = Math.max(...tenantSchema.migrations.map((m) => m.version));

/**
 * Resolves each operation when it ends. The bench (not Tenantry) installs a trigger in its scratch
 * control database that notifies when an operation reaches an end state: no polling load on the
 * API or on Postgres, which would be billed to the API side.
 */
async function completionWatcher(db: pg.Client) {
  await db.query(`
    CREATE OR REPLACE FUNCTION bench_operation_ended() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_notify('bench_operation_ended', NEW.id || ' ' || NEW.status); RETURN NULL; END $$;
    CREATE OR REPLACE TRIGGER bench_operation_ended AFTER UPDATE OF status ON operations FOR EACH ROW
      WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
      EXECUTE FUNCTION bench_operation_ended();
    LISTEN bench_operation_ended`);
  const ended = new Map<string, string>();
  const waiting = new Map<string, (status: string) => void>();
  db.on('notification', (m) => {
    const [id, status] = (m.payload ?? '').split(' ') as [string, string];
    const w = waiting.get(id);
    if (w) {
      waiting.delete(id);
      w(status);
    } else ended.set(id, status); // it ended before its POST returned
  });
  return async (id: string): Promise<void> => {
    const status = ended.get(id) ?? (await new Promise<string>((r) => waiting.set(id, r)));
    ended.delete(id);
    if (status !== 'succeeded') {
      const { rows } = await db.query('SELECT error FROM operations WHERE id = $1', [id]);
      throw new Error(`operation ${id} ${status}: ${rows[0]?.error}`);
    }
  };
}

const ended = await completionWatcher(control);

/** The next transaction id (without taking one): its growth counts the transactions that wrote. */
const nextXid = async () =>
  Number((await control.query('SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS x')).rows[0].x);

async function viaApi(tier: Tier, n: number, C: number, cp: ControlPlane) {
  const run = randomBytes(3).toString('hex');
  const slugs = Array.from({ length: n }, (_, i) => `b${run}-${tier}-${i}`);
  const t0 = performance.now();
  const ops = await mapLimit(slugs, C, async (slug) => {
    // undici's request, not fetch: fetch's own overhead (about 0.4 ms of wall time per call here,
    // measured against the same server) would be billed to the API at C=1.
    const res = await request(`${cp.base}/v1/tenants`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cp.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ slug, name: slug, tier }),
    });
    if (res.statusCode !== 202) throw new Error(`${slug}: ${res.statusCode} ${await res.body.text()}`);
    const id = ((await res.body.json()) as { operation: { id: string } }).operation.id;
    await ended(id);
    return id;
  });
  const wall = performance.now() - t0;
  const { rows } = await control.query<{ ms: number }>(
    `SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms FROM operations WHERE id = ANY($1)`,
    [ops],
  );
  if (rows.length !== n) throw new Error(`expected ${n} operations, found ${rows.length}`);
  return { wall, latencies: rows.map((r) => Number(r.ms)) };
}

/** Plain SQL, as a DBA would write it: nothing from control-plane/src/providers. */
const q = (name: string) => `"${name}"`;
const DML = 'SELECT, INSERT, UPDATE, DELETE';

/**
 * The tenant's roles as Tenantry's design has them (docs/credentials.md): a NOLOGIN group holding
 * the grants, and two logins in it for rotation, the current one able to log in with a password; each
 * with the tier's limits and search path. (This floor created one LOGIN role until 2026-12-03, from
 * before the second login; docs/benchmarks.md.)
 */
function roleSql(group: string, tier: Tier, searchPath: string): string {
  const l = catalog.tiers[tier].role;
  const attrs = `NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT ${l.connectionLimit}`;
  const settings = (r: string) => [
    `ALTER ROLE ${r} SET statement_timeout = ${l.statementTimeoutMs}`,
    `ALTER ROLE ${r} SET idle_in_transaction_session_timeout = ${l.idleInTransactionSessionTimeoutMs}`,
    `ALTER ROLE ${r} SET search_path = ${q(searchPath)}`,
  ];
  const [a, b] = [q(`login_a_${group}`), q(`login_b_${group}`)];
  // The password is hashed server-side (password_encryption = scram-sha-256, 4096 iterations),
  // the same PBKDF2 work the providers do client-side.
  return [
    `CREATE ROLE ${q(group)} NOLOGIN ${attrs}`,
    ...settings(q(group)),
    `CREATE ROLE ${a} LOGIN ${attrs} PASSWORD '${randomBytes(24).toString('base64url')}' IN ROLE ${q(group)}`,
    ...settings(a),
    `CREATE ROLE ${b} NOLOGIN ${attrs} IN ROLE ${q(group)}`,
    ...settings(b),
  ].join(';\n');
}

/** USAGE and DML on the schema's tables and sequences, now and by default, PUBLIC revoked. */
function grantsSql(schema: string, role: string, owner: string): string {
  const s = q(schema);
  const r = q(role);
  return [
    `REVOKE ALL ON SCHEMA ${s} FROM PUBLIC`,
    `REVOKE CREATE ON SCHEMA ${s} FROM ${r}`,
    `GRANT USAGE ON SCHEMA ${s} TO ${r}`,
    `REVOKE ALL ON ALL TABLES IN SCHEMA ${s} FROM PUBLIC`,
    `GRANT ${DML} ON ALL TABLES IN SCHEMA ${s} TO ${r}`,
    `GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ${s} TO ${r}`,
    `ALTER DEFAULT PRIVILEGES FOR ROLE ${q(owner)} IN SCHEMA ${s} GRANT ${DML} ON TABLES TO ${r}`,
    `ALTER DEFAULT PRIVILEGES FOR ROLE ${q(owner)} IN SCHEMA ${s} GRANT USAGE, SELECT ON SEQUENCES TO ${r}`,
  ].join(';\n');
}

/** A schema built from the template by its NOLOGIN owner, with its version recorded. */
function schemaSql(schema: string, owner: string): string {
  return [
    `CREATE SCHEMA ${q(schema)} AUTHORIZATION ${q(owner)}`,
    `REVOKE ALL ON SCHEMA ${q(schema)} FROM PUBLIC`,
    `SET LOCAL ROLE ${q(owner)}`,
    `SET LOCAL search_path TO ${q(schema)}`,
    DDL,
    'RESET ROLE',
    // The freeze guard on each table (Tenantry's promotions and suspensions rely on it).
    ...TABLES.map(
      (t) =>
        `CREATE TRIGGER tenantry_freeze_guard BEFORE INSERT OR UPDATE OR DELETE ON ${q(schema)}.${q(t)} FOR EACH STATEMENT EXECUTE FUNCTION tenantry_meta.freeze_guard()`,
    ),
    `INSERT INTO tenantry_meta.schema_versions (schema_name, version) VALUES ('${schema}', ${TEMPLATE_VERSION})`,
  ].join(';\n');
}

/** The template's tables, in order. */
const TABLES = [...DDL.matchAll(/CREATE TABLE (\w+)/g)].map((m) => m[1] as string);

const META = `CREATE SCHEMA tenantry_meta;
  CREATE FUNCTION tenantry_meta.freeze_guard() RETURNS trigger LANGUAGE plpgsql AS $g$ BEGIN RETURN NULL; END $g$;
  CREATE TABLE tenantry_meta.schema_versions (schema_name text PRIMARY KEY, version integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE tenantry_meta.pool_members (tenant_id uuid PRIMARY KEY, slug text NOT NULL UNIQUE, created_at timestamptz NOT NULL DEFAULT now())`;

/**
 * The floor: the same Postgres work for N tenants, C at a time, on the same server, in as few
 * round trips as the work allows. Concurrent changes to one database's ACL (GRANT CONNECT on
 * the shared database) must be serialized, as the providers do, or Postgres reports "tuple
 * concurrently updated"; the lock is taken last, so it is held only for that grant.
 */
interface FloorPlacement {
  scratch: string;
  owner: string;
  template: string;
  maint: pg.Pool;
  data: pg.Pool;
  /** Tenants made so far, for unique names across chunks. */
  made: number;
}
const floorPlacements = new Map<string, FloorPlacement>();

/**
 * The floor's database for one tier and concurrency, made on its first chunk and kept for the rest,
 * with its sessions: as the API's placement is, so the floor's catalog grows with its tenants chunk
 * after chunk and no chunk starts on a cold database (each chunk made its own until 2026-12-03, which
 * made the floor's cost depend on the chunk size: docs/benchmarks.md).
 */
async function floorPlacement(tier: Tier, C: number): Promise<FloorPlacement> {
  const key = `${tier}:${C}`;
  const known = floorPlacements.get(key);
  if (known) return known;
  const run = randomBytes(3).toString('hex');
  const scratch = `floor_${tier}_${run}`;
  const owner = `floor_owner_${run}`;
  const admin = new pg.Client({ connectionString: cp.pgUrl('postgres') });
  await admin.connect();
  await admin.query(`CREATE ROLE ${q(owner)} NOLOGIN`);
  await admin.query(`CREATE DATABASE ${q(scratch)}`); // never inside a transaction block
  const setup = new pg.Client({ connectionString: cp.pgUrl(scratch) });
  await setup.connect();
  await setup.query(META);
  let template = '';
  if (tier === 'pool') {
    await setup.query(schemaSql('pool', owner));
  } else if (tier === 'silo') {
    template = `${scratch}_tpl`;
    await admin.query(`CREATE DATABASE ${q(template)} OWNER ${q(owner)}`);
    const t = new pg.Client({ connectionString: cp.pgUrl(template) });
    await t.connect();
    await t.query(`${META}; BEGIN; ${schemaSql('app', owner)}; COMMIT`);
    await t.end();
  }
  await setup.end();
  await admin.end();
  const maint = new pg.Pool({ connectionString: cp.pgUrl('postgres'), max: C });
  const data = new pg.Pool({ connectionString: cp.pgUrl(scratch), max: C });
  await Promise.all([maint, data].flatMap((p) => Array.from({ length: C }, () => p.query('SELECT 1'))));
  const placement = { scratch, owner, template, maint, data, made: 0 };
  floorPlacements.set(key, placement);
  return placement;
}

async function floor(tier: Tier, n: number, C: number): Promise<number> {
  const f = await floorPlacement(tier, C);
  const { scratch, owner, template, maint, data } = f;
  const first = f.made;
  f.made += n;
  const t0 = performance.now();
  await mapLimit(
    Array.from({ length: n }, (_, i) => `${scratch}_t${first + i}`),
    C,
    async (name) => {
      if (tier === 'pool') {
        await data.query(
          `INSERT INTO tenantry_meta.pool_members (tenant_id, slug) VALUES (gen_random_uuid(), $1)
           ON CONFLICT (tenant_id) DO UPDATE SET slug = excluded.slug`,
          [name],
        );
      } else if (tier === 'bridge') {
        await maint.query(
          `${roleSql(name, tier, name)};
           SELECT pg_advisory_xact_lock(hashtext('floor.acl.${scratch}'));
           GRANT CONNECT ON DATABASE ${q(scratch)} TO ${q(name)}`,
        );
        await data.query(`${schemaSql(name, owner)};\n${grantsSql(name, name, owner)}`);
      } else {
        await maint.query(roleSql(name, tier, 'app'));
        await maint.query(`CREATE DATABASE ${q(name)} OWNER ${q(owner)} TEMPLATE ${q(template)}`);
        await maint.query(
          `ALTER DATABASE ${q(name)} OWNER TO ${q(owner)};
           REVOKE CONNECT, TEMPORARY ON DATABASE ${q(name)} FROM PUBLIC;
           GRANT CONNECT ON DATABASE ${q(name)} TO ${q(name)}`,
        );
        const s = new pg.Client({ connectionString: cp.pgUrl(name) });
        await s.connect();
        await s.query(grantsSql('app', name, owner));
        await s.end();
      }
    },
  );
  return performance.now() - t0;
}

interface Result {
  tier: Tier;
  n: number;
  apiMsPerTenant: number;
  floorMsPerTenant: number;
  ratio: number;
  p50AcceptToActiveMs: number;
  p99AcceptToActiveMs: number;
  peakRssMb: number;
  concurrency: number;
  cpuMsPerTenant: Record<'api' | 'floor', { controlPlane: number; postgres: number }>;
  writeTransactionsPerTenant: Record<'api' | 'floor', number>;
  rounds: number;
  chunkRatios: number[];
  note?: string;
}

// Whatever fails, the control plane (and its embedded Postgres) is stopped.
try {
  const results: Result[] = [];
  for (const [tier, C] of TIERS.flatMap((t) => CONCURRENCIES.map((c) => [t, c] as const))) {
    const n = tier === 'silo' ? SILO_N : N;
    // Alternating chunks; CPU and transactions are summed per side over the rounds.
    const sides = {
      floor: { wall: 0, cpu: { controlPlane: 0, postgres: 0 }, xids: 0 },
      api: { wall: 0, cpu: { controlPlane: 0, postgres: 0 }, xids: 0, latencies: [] as number[] },
    };
    const chunks = Array.from(
      { length: ROUNDS },
      (_, i) => Math.floor((n * (i + 1)) / ROUNDS) - Math.floor((n * i) / ROUNDS),
    ).filter((k) => k > 0);
    const measure = async (side: typeof sides.floor, work: () => Promise<number>) => {
      // Each chunk starts right after a checkpoint, so neither side inherits the other's share of
      // first-touch full-page images in the WAL (the same DDL writes far more WAL, and costs more
      // Postgres CPU, just after one: docs/benchmarks.md, Rollouts). --no-checkpoint turns it off.
      if (CHECKPOINT) await control.query('CHECKPOINT');
      const [cpu0, xid0] = [cp.cpuMs(), await nextXid()];
      side.wall += await work();
      const [cpu1, xid1] = [cp.cpuMs(), await nextXid()];
      side.cpu.controlPlane += cpu1.controlPlane - cpu0.controlPlane;
      side.cpu.postgres += cpu1.postgres - cpu0.postgres;
      side.xids += xid1 - xid0;
    };
    // Unmeasured, both sides alike (see the header).
    if (WARMUP > 0) {
      await floor(tier, WARMUP, C);
      await viaApi(tier, WARMUP, C, cp);
    }
    // Each chunk's own ratio (API wall over the floor's just before it), to show the spread.
    const chunkRatios: number[] = [];
    for (const k of chunks) {
      const [f0, a0] = [sides.floor.wall, sides.api.wall];
      await measure(sides.floor, () => floor(tier, k, C));
      await measure(sides.api, async () => {
        const api = await viaApi(tier, k, C, cp);
        sides.api.latencies.push(...api.latencies);
        return api.wall;
      });
      chunkRatios.push(round((sides.api.wall - a0) / (sides.floor.wall - f0)));
    }
    const perTenant = (total: number) => round(total / n);
    const apiMs = sides.api.wall / n;
    const floorMs = sides.floor.wall / n;
    const r: Result = {
      tier,
      n,
      apiMsPerTenant: round(apiMs),
      floorMsPerTenant: round(floorMs),
      ratio: round(apiMs / floorMs),
      p50AcceptToActiveMs: round(percentile(sides.api.latencies, 50)),
      p99AcceptToActiveMs: round(percentile(sides.api.latencies, 99)),
      peakRssMb: cp.peakRssMb(),
      concurrency: C,
      // Where the time goes: CPU ms per tenant of the control-plane process and of Postgres.
      cpuMsPerTenant: {
        api: {
          controlPlane: perTenant(sides.api.cpu.controlPlane),
          postgres: perTenant(sides.api.cpu.postgres),
        },
        floor: {
          controlPlane: perTenant(sides.floor.cpu.controlPlane),
          postgres: perTenant(sides.floor.cpu.postgres),
        },
      },
      // Transactions that wrote (each a durable commit, a WAL flush unless grouped with others).
      writeTransactionsPerTenant: { api: perTenant(sides.api.xids), floor: perTenant(sides.floor.xids) },
      rounds: chunks.length,
      chunkRatios,
      ...(tier === 'silo' && n !== N ? { note: `silo ran n=${n} (--silo-n), not ${N}` } : {}),
    };
    results.push(r);
    process.stdout.write(`${JSON.stringify(r)}\n`);
  }
  const peak = Math.max(...results.map((r) => r.peakRssMb));
  const at = (tier: Tier, pick: (r: Result) => number) =>
    Object.fromEntries(results.filter((r) => r.tier === tier).map((r) => [`c${r.concurrency}`, pick(r)]));
  process.stdout.write(
    `${JSON.stringify({
      summary: true,
      targets: {
        bridgeRatio: {
          target: 2.0,
          n: results.find((r) => r.tier === 'bridge')?.n,
          ...at('bridge', (r) => r.ratio),
        },
        poolP50AcceptToActiveMs: { target: 50, ...at('pool', (r) => r.p50AcceptToActiveMs) },
        controlPlanePeakRssMb: { value: peak, target: 250, met: peak <= 250 },
      },
    })}\n`,
  );
} finally {
  for (const f of floorPlacements.values()) await Promise.all([f.maint.end(), f.data.end()]);
  await control.end();
  await cp.stop();
}
