/**
 * API read benchmark. A real control plane (`npm start`'s entry point, on the embedded default, in a
 * scratch data directory, no scheduled drift sweep) with 10,000 tenants in its registry, loaded on
 * loopback with wrk (Debian's package: `apt-get install -y wrk`) where it is installed, else with
 * autocannon (`--load wrk|autocannon` chooses). The load generator shares the machine's two cores with
 * the control plane and Postgres: autocannon spends about 0.11 ms of CPU per list request parsing
 * the answer, wrk 0.02, and autocannon's own event loop adds its delays to the p99 it reports
 * (docs/benchmarks.md has the same code measured with both). Routes:
 * - GET /v1/tenants?limit=50 (the first page);
 * - GET /v1/tenants/{slug} (a random tenant each request: the tenant, its operation in flight, its
 *   latest promotion);
 * - GET /v1/tenants/{slug}/connection (a random one of the real onboarded pool tenants: the secret is
 *   read and decrypted, and every read is an audited write).
 *
 *   npx tsx scripts/bench/api.ts [--tenants 10000] [--real 100] [--connections 10] [--duration 10] [--rounds 5] [--load wrk|autocannon] [--log-level warn|info]
 *
 * The 10,000 tenants (each with its succeeded onboarding operation) are written straight into the
 * control database: real rows the API serves, but onboarding 10,000 through the queue would take
 * most of an hour. The connection route needs real secrets, so `--real` pool tenants are onboarded
 * through the API and that route is loaded over them only.
 *
 * The floor, in the same run, at the same concurrency (closed loop, N in flight): the same SQL sent
 * through `pg` from this process, by the control plane's own statement functions (db/repo.ts):
 * listTenants; findTenantDetail; for the connection, findTenantBySlug, the rows of the tenant's secret
 * and the pool's login (one statement), then findTenantAndAuditRead (the tenant re-read FOR SHARE and
 * the audit record, one statement). The floor does no HTTP, no auth, no decryption and no JSON
 * serialization (except the tenants' JSON, which listTenants and findTenantDetail themselves render
 * from the columns' text, so the floor renders it too): what the API adds on top is the ratio.
 *
 * The pipelined floor, for the list and the one-tenant routes (informational: no target names it):
 * the same reads through a ReadPipeline of the control plane's default size, the way the API sends
 * them (db/read-pipeline.ts); `pipelinedRatio` is the API's rate over its rate. The target's floor
 * stays the issue's: the same SQL through pg over a pool, one connection per read in flight.
 *
 * The HTTP floor, for the list and the one-tenant routes (informational: no target names it): a bare
 * node:http server (scripts/bench/http-floor.ts) answering the same route with the same statement
 * functions over connections of the control plane's kinds and sizes (a read pipeline, a pool), loaded by
 * the same generator. It is what one
 * HTTP round trip costs in Node on this machine; `apiToHttpFloor` is the API's rate over its rate,
 * what Tenantry itself adds (framework, auth, validation, logging, errors).
 *
 * Each route's `--duration` seconds are split into `--rounds` chunks, API, floor (and HTTP floor)
 * alternating, so all see the same load on a shared machine: the rate is all requests over all
 * chunks' time, p50 and p99 the median of the chunks' (p99Worst, the worst chunk's).
 *
 * Prints one JSON line per route ({route, api: {rps, p50Ms, p99Ms}, floor: {…}, ratio, httpFloor: {…},
 * apiToHttpFloor}) and a summary
 * with the targets: list and get ≥ 0.5× the floor's rate and p99 ≤ 10 ms; connection p99 ≤ 20 ms;
 * control-plane peak RSS ≤ 250 MB.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import autocannon from 'autocannon';
import pg from 'pg';
import { ReadPipeline } from '../../control-plane/src/db/read-pipeline.js';
import {
  findTenantAndAuditRead,
  findTenantBySlug,
  findTenantDetail,
  listTenants,
} from '../../control-plane/src/db/repo.js';
import { POOL_SECRET, tenantSecretName } from '../../control-plane/src/domain/naming.js';
import { named } from '../../control-plane/src/domain/queryable.js';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import { GET_SECRETS } from '../../control-plane/src/local/keystore.js';
import { mapLimit, percentile, processCpuMs, round, startControlPlane } from './lib.js';

const { values } = parseArgs({
  options: {
    tenants: { type: 'string', default: '10000' },
    real: { type: 'string', default: '100' },
    connections: { type: 'string', default: '10' },
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '5' },
    // The load generator: wrk where it is installed (apt-get install -y wrk), else autocannon.
    load: { type: 'string' },
    // The route of this exact name, else the routes whose name contains it (for profiling one route);
    // the summary needs all three.
    only: { type: 'string' },
    // The control plane's LOG_LEVEL: warn (no line per request) unless told; `npm start` runs at info,
    // one access line per request (TENANTRY_BENCH_CP_STDOUT: a file for them, else discarded).
    'log-level': { type: 'string', default: 'warn' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(
    'usage: npx tsx scripts/bench/api.ts [--tenants 10000] [--real 100] [--connections 10] [--duration 10] [--rounds 5] [--load wrk|autocannon] [--log-level warn|info] [--only ROUTE]\n',
  );
  process.exit(0);
}
const TENANTS = Number(values.tenants);
const REAL = Number(values.real);
const C = Number(values.connections);
const DURATION_S = Number(values.duration);
const ROUNDS = Number(values.rounds);
const WARMUP_S = 2;
const execFileAsync = promisify(execFile);

const hasWrk = (() => {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
    return true;
  } catch (err) {
    // wrk prints its version and exits 1; only a missing binary is "not there".
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
})();
const LOAD = values.load ?? (hasWrk ? 'wrk' : 'autocannon');
if (LOAD !== 'wrk' && LOAD !== 'autocannon') throw new Error(`--load is wrk or autocannon, not ${LOAD}`);
if (LOAD === 'wrk' && !hasWrk) throw new Error('--load wrk: wrk is not installed (apt-get install -y wrk)');
if (!values.load && !hasWrk) {
  process.stderr.write(
    'wrk is not installed (apt-get install -y wrk): loading with autocannon, whose own CPU on this\n' +
      "machine's two cores raises the p99 it reports (docs/benchmarks.md)\n",
  );
}
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-api-bench-'));

interface Measure {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  seconds: number;
}

/** The control plane's resident memory now (VmRSS), in MB. */
const rssMb = (pid: number) => {
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  return round(kb / 1024, 1);
};

/** Rounds of one side, as one measure: rates over the total time, latencies the median round's. */
function combine(rounds: Measure[]) {
  const median = (xs: number[]) => percentile(xs, 50);
  const requests = rounds.reduce((n, r) => n + r.requests, 0);
  const seconds = rounds.reduce((n, r) => n + r.seconds, 0);
  return {
    rps: round(requests / seconds, 1),
    p50Ms: round(median(rounds.map((r) => r.p50Ms))),
    p99Ms: round(median(rounds.map((r) => r.p99Ms))),
    p99WorstMs: round(Math.max(...rounds.map((r) => r.p99Ms))),
    requests,
  };
}

const cp = await startControlPlane({ TENANTRY_DRIFT_SCHEDULE: 'off', LOG_LEVEL: values['log-level'] });
const pool = new pg.Pool({ connectionString: cp.pgUrl('tenantry'), max: C });
/**
 * The pipelined floor (informational): the list's and the one-tenant read's statements through a
 * ReadPipeline of the control plane's default size (db/read-pipeline.ts), as the API sends them.
 */
const CP_READ_PIPELINES = 2;
const pipe = new ReadPipeline(cp.pgUrl('tenantry'), CP_READ_PIPELINES, pool);

/** The HTTP floor's process (http-floor.ts), its pool and read pipeline the sizes of the control plane's defaults. */
const CP_POOL_SIZE = 10;
const httpFloor = spawn(
  process.execPath,
  [
    // TENANTRY_BENCH_FLOOR_NODE_ARGS: node flags for the HTTP floor's process (--cpu-prof, say).
    ...(process.env.TENANTRY_BENCH_FLOOR_NODE_ARGS ?? '').split(/\s+/).filter(Boolean),
    '--import',
    'tsx',
    path.join(import.meta.dirname, 'http-floor.ts'),
    cp.pgUrl('tenantry'),
    String(CP_POOL_SIZE),
    String(CP_READ_PIPELINES),
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
/** The HTTP floor's address, once it listens (it prints its port); its failure to start stops the run. */
async function httpFloorListening(): Promise<string> {
  const exited = once(httpFloor, 'exit').then(([code]) => {
    throw new Error(`the HTTP floor exited (${code}) before it listened`);
  });
  const [first] = (await Promise.race([once(httpFloor.stdout ?? httpFloor, 'data'), exited])) as [Buffer];
  exited.catch(() => undefined);
  return `http://127.0.0.1:${(JSON.parse(first.toString()) as { port: number }).port}`;
}

/** The registry: `n` pool tenants, each with its succeeded onboarding, written in one statement each. */
async function seed(n: number): Promise<string[]> {
  const { tenantSchema } = loadTemplates('templates');
  const version = Math.max(...tenantSchema.migrations.map((m) => m.version));
  const run = randomUUID().slice(0, 6);
  await pool.query(
    `INSERT INTO tenants (id, slug, name, tier, status, plan, template_version, outputs, created_at, updated_at)
     SELECT gen_random_uuid(), 'seed-' || $1 || '-' || g, 'Seeded tenant ' || g, 'pool', 'active', 'standard', $2,
            jsonb_build_object('schema', 'pool', 'keyId', 'lk_' || md5(g::text), 'keyAlias', 'alias/tenantry/seed-' || g,
                               'secretRef', 'local-secret://tenantry/seed-' || g || '/connection', 'secretVersion', 1),
            now() - (g || ' ms')::interval, now()
       FROM generate_series(1, $3) g`,
    [run, version, n],
  );
  await pool.query(
    `INSERT INTO operations (id, kind, tenant_id, status, steps, created_at, updated_at, finished_at)
     SELECT 'op_' || substr(md5(t.id::text), 1, 28), 'onboard', t.id, 'succeeded',
            '[{"name": "key", "status": "succeeded", "startedAt": null, "finishedAt": null},
              {"name": "credentials", "status": "succeeded", "startedAt": null, "finishedAt": null},
              {"name": "pool-membership", "status": "succeeded", "startedAt": null, "finishedAt": null}]'::jsonb,
            t.created_at, t.created_at, t.created_at
       FROM tenants t WHERE t.slug LIKE 'seed-' || $1 || '-%'`,
    [run],
  );
  await pool.query('ANALYZE tenants; ANALYZE operations');
  return Array.from({ length: n }, (_, i) => `seed-${run}-${i + 1}`);
}

/** `n` real pool tenants through the API, until every one is active. */
async function onboardReal(n: number): Promise<string[]> {
  const run = randomUUID().slice(0, 6);
  const slugs = Array.from({ length: n }, (_, i) => `real-${run}-${i}`);
  const headers = { authorization: `Bearer ${cp.token}`, 'content-type': 'application/json' };
  await mapLimit(slugs, 8, async (slug) => {
    const res = await fetch(`${cp.base}/v1/tenants`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ slug, name: slug, tier: 'pool' }),
    });
    if (res.status !== 202) throw new Error(`onboard ${slug}: ${res.status} ${await res.text()}`);
  });
  for (;;) {
    const res = await fetch(`${cp.base}/v1/operations?status=queued&status=running&status=failed&limit=1`, {
      headers,
    });
    const page = (await res.json()) as { items: { status: string; error?: string }[] };
    const [first] = page.items;
    if (first?.status === 'failed') throw new Error(`an onboarding failed: ${first.error}`);
    if (!first) return slugs;
    await new Promise((r) => setTimeout(r, 200));
  }
}

const pick = <T>(xs: T[]): T => xs[Math.floor(Math.random() * xs.length)] as T;

/** What picks a request's path: one fixed path, or one of a list at random each request. */
type Paths = string | { prefix: string; slugs: string[]; suffix: string };

const pathOf = (p: Paths): string => (typeof p === 'string' ? p : `${p.prefix}${pick(p.slugs)}${p.suffix}`);

/**
 * autocannon against one route. A fixed path is given as such: autocannon then builds the request's
 * bytes once, instead of once per request (its `setupRequest`).
 */
async function viaAutocannon(paths: Paths, seconds: number, base: string): Promise<Measure> {
  const result = await autocannon({
    url: base,
    connections: C,
    duration: seconds,
    headers: { authorization: `Bearer ${cp.token}` },
    requests: [
      typeof paths === 'string'
        ? { method: 'GET', path: paths }
        : { method: 'GET', setupRequest: (req) => ({ ...req, path: pathOf(paths) }) },
    ],
  });
  if (result.non2xx > 0 || result.errors > 0) {
    throw new Error(`${result.non2xx} non-2xx answers and ${result.errors} errors from ${pathOf(paths)}`);
  }
  return {
    rps: round(result['2xx'] / result.duration, 1),
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    requests: result['2xx'],
    seconds: result.duration,
  };
}

const luaString = (s: string) => JSON.stringify(s); // a slug or a path: ASCII, so JSON's quoting is Lua's

/**
 * The wrk script for one route: the paths (a fixed path is wrk's own, built once), and a `done` that
 * prints the run's counts and latency percentiles (microseconds) as one JSON line.
 */
function wrkScript(paths: Paths): string {
  const pick =
    typeof paths === 'string'
      ? ''
      : `local slugs = {${paths.slugs.map(luaString).join(',')}}
math.randomseed(os.time())
request = function()
  return wrk.format(nil, ${luaString(paths.prefix)} .. slugs[math.random(#slugs)] .. ${luaString(paths.suffix)})
end
`;
  return `wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
${pick}done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests":%d,"durationUs":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50Us":%d,"p99Us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`;
}

const scripts = new Map<Paths, string>();

/**
 * wrk (Debian's package: C, one thread on epoll) against one route, C connections. wrk spends about
 * a fifth of autocannon's CPU per request, so less of the two cores the control plane and its Postgres
 * share with the load; its CPU is read from the shell's `times` (its children's user and system time).
 */
async function viaWrk(
  paths: Paths,
  seconds: number,
  cpuMs: { bench: number },
  base: string,
): Promise<Measure> {
  let script = scripts.get(paths);
  if (!script) {
    script = path.join(scratch, `route-${scripts.size}.lua`);
    fs.writeFileSync(script, wrkScript(paths));
    scripts.set(paths, script);
  }
  const url = `${base}${typeof paths === 'string' ? paths : '/'}`;
  // The token goes in through the environment (the script reads it), not a command line `ps` shows.
  const { stdout } = await execFileAsync(
    'sh',
    [
      '-c',
      'wrk -t1 -c"$1" -d"$2"s --timeout 5s -s "$3" "$4" && times',
      'sh',
      String(C),
      // wrk takes whole seconds (--duration 10 --rounds 3 asks for 3.33): its own measured time is used.
      String(Math.max(1, Math.round(seconds))),
      script,
      url,
    ],
    { env: { PATH: process.env.PATH ?? '', BENCH_TOKEN: cp.token } },
  );
  const line = /^WRK (.*)$/m.exec(stdout)?.[1];
  if (!line) throw new Error(`wrk printed no result:\n${stdout}`);
  const r = JSON.parse(line) as Record<string, number>;
  const failed = ['connect', 'read', 'write', 'status', 'timeout'].filter((k) => (r[k] ?? 0) > 0);
  if (failed.length > 0) throw new Error(`wrk saw errors on ${pathOf(paths)}: ${line}`);
  // `times`: the shell's own user and system time, then its children's (wrk's), as 0m1.234s.
  const children = stdout.trim().split('\n').at(-1)?.split(/\s+/) ?? [];
  for (const t of children) {
    const m = /^(\d+)m([\d.]+)s$/.exec(t);
    if (m) cpuMs.bench += (Number(m[1]) * 60 + Number(m[2])) * 1000;
  }
  const requests = r.requests ?? 0;
  const wall = (r.durationUs ?? 1) / 1e6;
  return {
    rps: round(requests / wall, 1),
    p50Ms: round((r.p50Us ?? 0) / 1000),
    p99Ms: round((r.p99Us ?? 0) / 1000),
    requests,
    seconds: wall,
  };
}

/** Loads one route of a server (the control plane's, or the HTTP floor's) with the load generator. */
const viaHttp = (paths: Paths, seconds: number, cpuMs: { bench: number }, base = cp.base) =>
  LOAD === 'wrk' ? viaWrk(paths, seconds, cpuMs, base) : viaAutocannon(paths, seconds, base);

/** The same statements through pg, C in flight, closed loop. */
async function floor(work: () => Promise<void>, seconds: number): Promise<Measure> {
  const latencies: number[] = [];
  const until = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (performance.now() < until) {
        const t = performance.now();
        await work();
        latencies.push(performance.now() - t);
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  return {
    rps: round(latencies.length / wall, 1),
    p50Ms: round(percentile(latencies, 50)),
    p99Ms: round(percentile(latencies, 99)),
    requests: latencies.length,
    seconds: wall,
  };
}

const BENCH_ACTOR = { id: null, name: 'bench-floor', role: 'dataplane' };

interface Route {
  route: string;
  paths: Paths;
  sql: () => Promise<void>;
  /** The same read through a ReadPipeline, where the API sends it so. */
  pipelined?: () => Promise<void>;
  /** Whether the HTTP floor serves this route too. */
  httpFloor: boolean;
}

// Whatever fails, the control plane (and its embedded Postgres) is stopped.
try {
  const httpFloorBase = await httpFloorListening();
  const pid = cp.proc.pid ?? 0;
  const memory: Record<string, number> = { startedMb: rssMb(pid) };
  const seeded = await seed(TENANTS);
  const real = await onboardReal(REAL);
  memory.seededAndOnboardedMb = rssMb(pid);
  // VmHWM is the process's peak so far: read after each phase, it says which phase set the peak.
  const peaks: Record<string, number> = { seededAndOnboardedMb: cp.peakRssMb() };
  const routes: Route[] = [
    {
      route: 'GET /v1/tenants?limit=50',
      paths: '/v1/tenants?limit=50',
      sql: async () => {
        const page = await listTenants(pool, { limit: 50 });
        if (page.count !== 50) throw new Error('the floor read a short page');
      },
      pipelined: async () => {
        const page = await listTenants(pool, { limit: 50 }, pipe);
        if (page.count !== 50) throw new Error('the floor read a short page');
      },
      httpFloor: true,
    },
    {
      route: 'GET /v1/tenants/{slug}',
      paths: { prefix: '/v1/tenants/', slugs: seeded, suffix: '' },
      sql: async () => {
        if (!(await findTenantDetail(pool, pick(seeded)))) throw new Error('the floor missed a tenant');
      },
      pipelined: async () => {
        if (!(await findTenantDetail(pipe, pick(seeded)))) throw new Error('the floor missed a tenant');
      },
      httpFloor: true,
    },
    {
      route: 'GET /v1/tenants/{slug}/connection',
      paths: { prefix: '/v1/tenants/', slugs: real, suffix: '/connection' },
      sql: async () => {
        const slug = pick(real);
        const t = await findTenantBySlug(pool, slug);
        if (!t) throw new Error('the floor missed a tenant');
        // The tenant's secret and the pool's login, read together (the real tenants are pool tenants).
        await pool.query(named(GET_SECRETS), [[tenantSecretName(slug), POOL_SECRET]]);
        const { audited } = await findTenantAndAuditRead(pool, slug, t.id, {
          actor: BENCH_ACTOR,
          action: 'bench.floor.connection.read',
          tenantId: t.id,
          tenantSlug: slug,
          requestId: randomUUID(),
          details: { secretRef: `local-secret://${tenantSecretName(slug)}` },
        });
        if (!audited) throw new Error('the floor did not audit its read');
      },
      httpFloor: false,
    },
  ];
  const results = [];
  // --only: the route of that exact name, else every route whose name contains it.
  const only = values.only;
  const exact = routes.some((r) => r.route === only);
  for (const r of routes) {
    if (only && (exact ? r.route !== only : !r.route.includes(only))) continue;
    await viaHttp(r.paths, WARMUP_S, { bench: 0 });
    await floor(r.sql, WARMUP_S);
    if (r.pipelined) await floor(r.pipelined, WARMUP_S);
    if (r.httpFloor) await viaHttp(r.paths, WARMUP_S, { bench: 0 }, httpFloorBase);
    const api: Measure[] = [];
    const sql: Measure[] = [];
    const piped: Measure[] = [];
    const bare: Measure[] = [];
    // CPU per request on each side: the control plane, its Postgres, and this process (autocannon
    // parsing the API's answers; the floor's pg client parsing rows): where the two cores went.
    // (On the HTTP floor's side, `controlPlane` is the HTTP floor's own process.)
    const cpu = {
      api: { controlPlane: 0, postgres: 0, bench: 0 },
      floor: { controlPlane: 0, postgres: 0, bench: 0 },
      pipelinedFloor: { controlPlane: 0, postgres: 0, bench: 0 },
      httpFloor: { controlPlane: 0, postgres: 0, bench: 0 },
    };
    const serverCpuMs = (side: keyof typeof cpu) => {
      const c = cp.cpuMs();
      return side === 'httpFloor' ? { ...c, controlPlane: processCpuMs(httpFloor.pid ?? 0) } : c;
    };
    const measured = async <T>(
      side: keyof typeof cpu,
      fn: (cpuMs: { bench: number }) => Promise<T>,
    ): Promise<T> => {
      const [c0, b0] = [serverCpuMs(side), process.cpuUsage()];
      const out = await fn(cpu[side]);
      const [c1, b1] = [serverCpuMs(side), process.cpuUsage(b0)];
      cpu[side].controlPlane += c1.controlPlane - c0.controlPlane;
      cpu[side].postgres += c1.postgres - c0.postgres;
      cpu[side].bench += (b1.user + b1.system) / 1000;
      return out;
    };
    for (let i = 0; i < ROUNDS; i++) {
      api.push(await measured('api', (cpuMs) => viaHttp(r.paths, DURATION_S / ROUNDS, cpuMs)));
      sql.push(await measured('floor', () => floor(r.sql, DURATION_S / ROUNDS)));
      const pipelined = r.pipelined;
      if (pipelined)
        piped.push(await measured('pipelinedFloor', () => floor(pipelined, DURATION_S / ROUNDS)));
      if (r.httpFloor)
        bare.push(
          await measured('httpFloor', (cpuMs) => viaHttp(r.paths, DURATION_S / ROUNDS, cpuMs, httpFloorBase)),
        );
    }
    const [a, f] = [combine(api), combine(sql)];
    const h = r.httpFloor ? combine(bare) : null;
    const pf = r.pipelined ? combine(piped) : null;
    const perRequest = (side: keyof typeof cpu, n: number) =>
      Object.fromEntries(Object.entries(cpu[side]).map(([k, v]) => [k, round(v / n, 3)]));
    const line = {
      route: r.route,
      loadGenerator: LOAD,
      logLevel: values['log-level'],
      connections: C,
      api: a,
      floor: f,
      ratio: round(a.rps / f.rps),
      cpuMsPerRequest: {
        api: perRequest('api', a.requests),
        floor: perRequest('floor', f.requests),
        ...(pf ? { pipelinedFloor: perRequest('pipelinedFloor', pf.requests) } : {}),
        ...(h ? { httpFloor: perRequest('httpFloor', h.requests) } : {}),
      },
      ...(pf ? { pipelinedFloor: pf, pipelinedRatio: round(a.rps / pf.rps) } : {}),
      ...(h
        ? { httpFloor: h, apiToHttpFloor: round(a.rps / h.rps), httpFloorRatio: round(h.rps / f.rps) }
        : {}),
      rssMb: rssMb(pid),
    };
    memory[r.route] = line.rssMb;
    peaks[r.route] = cp.peakRssMb();
    results.push(line);
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }
  if (values.only) {
    process.stdout.write(
      `${JSON.stringify({ summary: false, only: values.only, rssMbAfter: memory, peakRssMbAfter: peaks })}\n`,
    );
  } else {
    const [list, get, conn] = results as [(typeof results)[0], (typeof results)[0], (typeof results)[0]];
    const peak = cp.peakRssMb();
    const target = (value: number, bound: number, atLeast = false) => ({
      value,
      target: bound,
      met: atLeast ? value >= bound : value <= bound,
    });
    process.stdout.write(
      `${JSON.stringify({
        summary: true,
        tenants: TENANTS,
        realPoolTenants: REAL,
        loadGenerator: LOAD,
        logLevel: values['log-level'],
        connections: C,
        durationS: DURATION_S,
        rounds: ROUNDS,
        rssMbAfter: memory,
        peakRssMbAfter: peaks,
        targets: {
          listRatio: target(list.ratio, 0.5, true),
          listP99Ms: target(list.api.p99Ms, 10),
          getRatio: target(get.ratio, 0.5, true),
          getP99Ms: target(get.api.p99Ms, 10),
          connectionP99Ms: target(conn.api.p99Ms, 20),
          controlPlanePeakRssMb: target(peak, 250),
        },
      })}\n`,
    );
  }
} finally {
  httpFloor.kill();
  await pipe.close();
  await pool.end();
  await cp.stop();
  fs.rmSync(scratch, { recursive: true, force: true });
}
