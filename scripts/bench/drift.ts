/**
 * Drift benchmark: a fleet of 10,000 tenants across pool, bridge and silo on the embedded default,
 * provisioned directly for speed (the local engine's own steps, without the API and the queue), then
 * 100 random out-of-band changes of the kinds the drift tests cover. The control plane (`npm start`'s
 * entry point, in its own process) sweeps through `POST /v1/drift-runs`.
 *
 *   npx tsx scripts/bench/drift.ts [--tenants 10000] [--silos 100] [--bridges 3800] [--drifts 100] [--seed 7]
 *
 * In the same run, the floor: the sweep's raw catalog statements alone (shared catalogs, the shared
 * database, every silo database on a fresh session like the sweep, the key and secret store), timed
 * from this process with no parsing, diffing or recording.
 *
 * Prints JSON: full sweep time (target ≤ 2 s and ≤ 5× the floor), the sweep's peak resident memory
 * (the control-plane process's VmHWM, reset just before the sweep; target ≤ 300 MB), drifts found
 * and false positives (targets: all found, zero false), and the remediation of all of them, timed
 * and confirmed by a clean sweep after it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { loginRoleName } from '../../control-plane/src/domain/naming.js';
import {
  DATABASES_SQL,
  DEFAULT_ACLS_SQL,
  FROZEN_SQL,
  KEYS_SQL,
  POLICIES_SQL,
  POOL_MEMBERS_SQL,
  ROLES_SQL,
  SCHEMAS_SQL,
  SECRETS_SQL,
  SILO_CONCURRENCY,
  siloContentsSql,
  TABLES_SQL,
} from '../../control-plane/src/drift/catalog.js';
import { type BenchTenant, DATA, provisionFleet } from './fleet.js';
import { mapLimit, percentile, round, startControlPlane } from './lib.js';

const { values } = parseArgs({
  options: {
    tenants: { type: 'string', default: '10000' },
    // 1% of the fleet: a silo is a premium tier. Each costs the sweep a fresh session on the
    // data-plane server (docs/benchmarks.md gives 200 too); --silos sets any other share.
    silos: { type: 'string', default: '100' },
    bridges: { type: 'string', default: '3800' },
    drifts: { type: 'string', default: '100' },
    seed: { type: 'string', default: '7' },
    // Enough sweeps for V8's old generation to fill and be collected at least once, so the peak
    // memory is the steady state a scheduled sweeper reaches, not just the first sweeps'.
    repeat: { type: 'string', default: '7' },
    // Keep the fleet in this directory and reuse it on the next run (provisioning takes minutes).
    'data-dir': { type: 'string' },
  },
});
const N = Number(values.tenants);
const SILOS = Number(values.silos);
const BRIDGES = Number(values.bridges);
const POOLS = N - SILOS - BRIDGES;
const DRIFTS = Number(values.drifts);
const REPEAT = Number(values.repeat);
if (POOLS < 0 || DRIFTS < 4) throw new Error('need --tenants >= --silos + --bridges and --drifts >= 4');

/* A seeded generator: the same seed injects the same drifts. */
let seed = Number(values.seed) >>> 0;
const rand = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pickOne = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)] as T;

const log = (msg: string) => process.stderr.write(`[bench:drift] ${msg}\n`);

const keep = values['data-dir'] ? path.resolve(values['data-dir']) : undefined;
if (keep) fs.mkdirSync(keep, { recursive: true, mode: 0o755 });
const cp = await startControlPlane({
  TENANTRY_DRIFT_SCHEDULE: 'off',
  TENANTRY_WORKER_CONCURRENCY: '4',
  ...(keep ? { TENANTRY_DATA_DIR: keep } : {}),
});
// If this script dies, the control plane (and its Postgres) must not outlive it.
process.on('exit', () => {
  if (cp.proc.exitCode === null) cp.proc.kill('SIGTERM');
});
const {
  fleet,
  reused: reuse,
  provisionMs,
  control,
  dp,
} = await provisionFleet(cp, {
  tenants: N,
  silos: SILOS,
  bridges: BRIDGES,
  log,
});
const api = async (method: string, url: string, body?: unknown) => {
  const res = await fetch(`${cp.base}${url}`, {
    method,
    headers: {
      authorization: `Bearer ${cp.token}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  if (res.status >= 300) throw new Error(`${method} ${url}: ${res.status} ${await res.text()}`);
  // biome-ignore lint/suspicious/noExplicitAny: JSON from our own API, in a benchmark script
  return (await res.json()) as Record<string, any>;
};

/* ---------------------------------------------------------------- the fleet */

const obj = (slug: string) => `tenant_${slug.replaceAll('-', '_')}`;

/* ---------------------------------------------------------------- sweeps and the floor */

interface Run {
  id: string;
  status: string;
  durationMs: number;
  tenantsChecked: number;
  summary: { findings: number; repaired: number; unrepaired: number; open: number };
  timings: Record<string, number>;
  findings: {
    tenantId: string | null;
    resource: string;
    name: string;
    kind: string;
    field: string;
    resolution: string;
  }[];
  findingsTruncated: boolean;
}

function resetPeakRss(): void {
  fs.writeFileSync(`/proc/${cp.proc.pid}/clear_refs`, '5');
}

async function sweep(): Promise<Run & { peakRssMb: number }> {
  resetPeakRss();
  const { id } = await api('POST', '/v1/drift-runs');
  for (;;) {
    const run = (await api('GET', `/v1/drift-runs/${id}`)) as Run;
    if (run.status === 'succeeded') return { ...run, peakRssMb: cp.peakRssMb() };
    if (run.status === 'failed') throw new Error(`drift run failed: ${JSON.stringify(run)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The sweep's catalog statements alone, on the same kinds of sessions and with the same overlap:
 * pools for the shared reads; for each silo a fresh session running the silo pass's one query.
 */
async function floor(): Promise<number> {
  const maint = new pg.Pool({ connectionString: cp.pgUrl('postgres'), max: 8 });
  const data = new pg.Pool({ connectionString: cp.pgUrl(DATA), max: 8 });
  const ctl = new pg.Pool({ connectionString: cp.pgUrl('tenantry'), max: 8 });
  await Promise.all([maint.query('SELECT 1'), data.query('SELECT 1'), ctl.query('SELECT 1')]);
  const started = performance.now();
  const platform = [`${DATA}_pool`, `${DATA}_owner`];
  const shared = Promise.all([
    maint.query(ROLES_SQL, [platform]),
    data.query(SCHEMAS_SQL, [['pool']]),
    data.query(TABLES_SQL, [['pool'], [`${DATA}_pool`]]),
    data.query(POLICIES_SQL, [['pool']]),
    data.query(DEFAULT_ACLS_SQL, [['pool']]),
    data.query(POOL_MEMBERS_SQL),
    data.query(FROZEN_SQL),
    ctl.query(SECRETS_SQL),
    ctl.query(KEYS_SQL),
  ]);
  const dbs = await maint.query<{ name: string }>(DATABASES_SQL);
  const silos = dbs.rows.map((r) => r.name).filter((n) => /^tenant_[a-z][a-z0-9_]{2,39}$/.test(n));
  const siloSql = siloContentsSql();
  await Promise.all([
    shared,
    mapLimit(silos, SILO_CONCURRENCY, async (name) => {
      const c = new pg.Client({ connectionString: cp.pgUrl(name) });
      await c.connect();
      try {
        await c.query(siloSql);
      } finally {
        await c.end();
      }
    }),
  ]);
  const ms = performance.now() - started;
  await Promise.all([maint.end(), data.end(), ctl.end()]);
  return ms;
}

const median = (xs: number[]) => percentile(xs, 50);
const superSql = async (db: string, sql: string, params: unknown[] = []) => {
  const c = new pg.Client({ connectionString: cp.pgUrl(db) });
  await c.connect();
  try {
    return (await c.query(sql, params)).rows;
  } finally {
    await c.end();
  }
};

const clean = await sweep();
if (clean.summary.findings !== 0)
  throw new Error(`a clean fleet has findings: ${JSON.stringify(clean.findings.slice(0, 5))}`);
log(`clean sweep: ${clean.durationMs} ms, 0 findings`);

/* ---------------------------------------------------------------- 100 random drifts */

interface Drift {
  kind: string;
  tenant: BenchTenant | null;
  expect: { resource: string; name: string; field: string; kind: string };
  inject(): Promise<unknown>;
}
const drifts: Drift[] = [];
const platform: Drift[] = [
  {
    kind: 'rls-disabled',
    tenant: null,
    expect: { resource: 'table', name: `${DATA}.pool.users`, field: 'rlsEnabled', kind: 'changed' },
    inject: () => superSql(DATA, 'ALTER TABLE pool.users DISABLE ROW LEVEL SECURITY'),
  },
  {
    kind: 'rls-not-forced',
    tenant: null,
    expect: { resource: 'table', name: `${DATA}.pool.documents`, field: 'rlsForced', kind: 'changed' },
    inject: () => superSql(DATA, 'ALTER TABLE pool.documents NO FORCE ROW LEVEL SECURITY'),
  },
  {
    kind: 'loosened-policy',
    tenant: null,
    expect: {
      resource: 'policy',
      name: `${DATA}.pool.settings.tenant_isolation`,
      field: 'using',
      kind: 'changed',
    },
    inject: () =>
      superSql(
        DATA,
        `ALTER POLICY tenant_isolation ON pool.settings
           USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid) OR true)`,
      ),
  },
];
drifts.push(...platform);
const chosen = new Set<string>();
const tenantKinds = [
  'dropped-schema',
  'public-grant',
  'dropped-role',
  'role-limit',
  'deleted-secret',
] as const;
while (drifts.length < DRIFTS) {
  const kind = pickOne([...tenantKinds]);
  const tiers: BenchTenant['tier'][] =
    kind === 'dropped-schema'
      ? ['bridge']
      : kind === 'deleted-secret'
        ? ['pool', 'bridge', 'silo']
        : ['bridge', 'silo'];
  const t = pickOne(fleet.filter((x) => tiers.includes(x.tier)));
  if (chosen.has(t.id)) continue;
  chosen.add(t.id);
  const o = obj(t.slug);
  const dbOf = t.tier === 'silo' ? o : DATA;
  const schemaName = t.tier === 'silo' ? `${o}.app` : `${DATA}.${o}`;
  switch (kind) {
    case 'dropped-schema':
      drifts.push({
        kind,
        tenant: t,
        expect: { resource: 'schema', name: schemaName, field: 'exists', kind: 'missing' },
        inject: () => superSql(DATA, `DROP SCHEMA ${o} CASCADE`),
      });
      break;
    case 'public-grant': {
      const table = pickOne(['users', 'documents', 'settings']);
      const schema = t.tier === 'silo' ? 'app' : o;
      drifts.push({
        kind,
        tenant: t,
        expect: {
          resource: 'table',
          name: `${schemaName}.${table}`,
          field: 'privileges:PUBLIC',
          kind: 'unexpected',
        },
        inject: () => superSql(dbOf, `GRANT SELECT ON ${schema}.${table} TO PUBLIC`),
      });
      break;
    }
    case 'dropped-role':
      drifts.push({
        kind,
        tenant: t,
        expect: { resource: 'role', name: o, field: 'exists', kind: 'missing' },
        inject: async () => {
          await superSql(dbOf, `DROP OWNED BY ${o}`);
          await superSql('postgres', `DROP ROLE ${o}`);
        },
      });
      break;
    case 'role-limit': {
      // On the login the tenant's sessions use (onboarding's first, slot a: docs/credentials.md);
      // its group is NOLOGIN, where a connection limit has no effect and drift expects none.
      const login = loginRoleName(o, 'a');
      drifts.push({
        kind,
        tenant: t,
        expect: { resource: 'role', name: login, field: 'connectionLimit', kind: 'changed' },
        inject: () => superSql('postgres', `ALTER ROLE ${login} CONNECTION LIMIT 3`),
      });
      break;
    }
    case 'deleted-secret':
      drifts.push({
        kind,
        tenant: t,
        expect: {
          resource: 'secret',
          name: `tenantry/${t.slug}/connection`,
          field: 'exists',
          kind: 'missing',
        },
        inject: () =>
          superSql('tenantry', 'DELETE FROM local_secrets WHERE name = $1', [
            `tenantry/${t.slug}/connection`,
          ]),
      });
      break;
  }
}
for (const d of drifts) await d.inject();
log(`injected ${drifts.length} drifts`);

/* Report-mode sweeps (the default policy) interleaved with floors, so both see the same machine. */
const sweeps: (Run & { peakRssMb: number })[] = [];
const floors: number[] = [];
for (let i = 0; i < REPEAT; i++) {
  floors.push(await floor());
  sweeps.push(await sweep());
}
const report = sweeps.at(-1) as Run & { peakRssMb: number };
if (report.findingsTruncated) throw new Error('the run truncated its findings; raise the bench limit');

const driftedTenants = new Set(drifts.filter((d) => d.tenant).map((d) => d.tenant?.id));
const platformNames = new Set(platform.map((d) => d.expect.name));
const found = drifts.filter((d) =>
  report.findings.some(
    (f) =>
      f.tenantId === (d.tenant?.id ?? null) &&
      f.resource === d.expect.resource &&
      f.name === d.expect.name &&
      f.field === d.expect.field &&
      f.kind === d.expect.kind,
  ),
);
const falsePositives = report.findings.filter((f) =>
  f.tenantId ? !driftedTenants.has(f.tenantId) : !platformNames.has(f.name),
);
const missed = drifts.filter((d) => !found.includes(d)).map((d) => ({ drift: d.kind, ...d.expect }));

/* Remediation of all of them, then a sweep to confirm nothing is left. */
await api('PUT', '/v1/drift-policies', { mode: 'remediate', ignoreFields: [] });
const fixed = await sweep();
await api('PUT', '/v1/drift-policies', { mode: 'report', ignoreFields: [] });
const confirm = await sweep();

const sweepMs = median(sweeps.map((s) => s.durationMs));
const floorMs = median(floors);
const out = {
  tenants: {
    total: N,
    pool: fleet.filter((t) => t.tier === 'pool').length,
    bridge: fleet.filter((t) => t.tier === 'bridge').length,
    silo: fleet.filter((t) => t.tier === 'silo').length,
    provisionedInS: reuse ? null : round(provisionMs / 1000, 1),
  },
  sweep: {
    ms: sweepMs,
    runsMs: sweeps.map((s) => s.durationMs),
    phasesMs: report.timings,
    tenantsChecked: report.tenantsChecked,
    target: '<= 2000 ms',
  },
  floor: { ms: round(floorMs, 1), runsMs: floors.map((f) => round(f, 1)) },
  ratioToFloor: round(sweepMs / floorMs),
  ratioTarget: '<= 5',
  sweepPeakRssMb: Math.max(...sweeps.map((s) => s.peakRssMb)),
  sweepPeakRssMbPerRun: sweeps.map((s) => s.peakRssMb),
  memoryTarget: '<= 300 MB',
  drifts: {
    injected: drifts.length,
    byKind: drifts.reduce<Record<string, number>>((a, d) => {
      a[d.kind] = (a[d.kind] ?? 0) + 1;
      return a;
    }, {}),
    found: found.length,
    findings: report.summary.findings,
    falsePositives: falsePositives.length,
    missed,
  },
  remediation: {
    sweepMs: fixed.durationMs,
    remediationMs: fixed.timings.remediationMs,
    findings: fixed.summary.findings,
    repaired: fixed.summary.repaired,
    unrepaired: fixed.summary.unrepaired,
    peakRssMb: fixed.peakRssMb,
    findingsAfter: confirm.summary.findings,
  },
};
process.stdout.write(`${JSON.stringify(out)}\n`);
await dp.close();
await control.close();
await cp.stop();
