/**
 * Rollout benchmark: a fleet of 10,000 tenants (100 silos, 3,800 bridge schemas, the rest pool) on the
 * embedded default, built at template version 1 (scripts/bench/fleet.ts); version 2 adds a nullable
 * column and an index to every table. The control plane (`npm start`'s entry point, in its own process)
 * is restarted on version 2, as an operator deploys it, and ships it with `POST /v1/rollouts`: the
 * pool's shared tables once, then a canary of 3 and the rest, at the same parallelism.
 *
 *   npx tsx scripts/bench/rollout.ts [--tenants 10000] [--silos 100] [--bridges 3800] [--parallelism 8] [--rounds 2]
 *
 * In the same run, the floor: the same DDL (other column and index names) sent straight to the same
 * server at the same parallelism, one transaction per placement (the pool once, each bridge schema,
 * each silo database on a fresh session), right after a restart of the control plane and its embedded
 * Postgres, as each rollout starts (the deploy is one: a shutdown checkpoint, then cold shared
 * buffers); also without it, reported beside. Each round
 * deploys one more version (a restart) and rolls it out between two floors; the ratio is the rollouts'
 * time over their surrounding floors' mean.
 *
 * Prints JSON: the rollout's wall time (POST to completed) against the floor's (target ≤ 1.5×), a
 * no-op rollout over the whole fleet once everyone is at version 2 (target ≤ 5 s), and the
 * control-plane process's peak resident memory during each (VmHWM, reset before; target ≤ 250 MB).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { DATA, provisionFleet } from './fleet.js';
import { mapLimit, round, startControlPlane } from './lib.js';

const { values } = parseArgs({
  options: {
    tenants: { type: 'string', default: '10000' },
    silos: { type: 'string', default: '100' },
    bridges: { type: 'string', default: '3800' },
    parallelism: { type: 'string', default: '8' },
    // Each round deploys one more version and rolls it out, between two floors.
    rounds: { type: 'string', default: '2' },
  },
});
const N = Number(values.tenants);
const SILOS = Number(values.silos);
const BRIDGES = Number(values.bridges);
const P = Number(values.parallelism);
const ROUNDS = Number(values.rounds);
if (N < SILOS + BRIDGES || P < 1)
  throw new Error('need --tenants >= --silos + --bridges and --parallelism >= 1');

const log = (msg: string) => process.stderr.write(`[bench:rollout] ${msg}\n`);
const TABLES = ['users', 'documents', 'settings'];
/** A nullable column and an index (leading with tenant_id) on every table of the template. */
const ddl = (column: string) =>
  TABLES.map(
    (t) =>
      `ALTER TABLE ${t} ADD COLUMN ${column} text;\nCREATE INDEX ${t}_${column}_idx ON ${t} (tenant_id, ${column});`,
  ).join('\n');

// The templates the control plane runs with: a copy, so version 2 can be added to it.
const templatesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-bench-templates-'));
fs.cpSync(path.resolve(import.meta.dirname, '../../templates'), templatesDir, { recursive: true });
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-bench-rollout-'));
const env = {
  TENANTRY_DRIFT_SCHEDULE: 'off',
  TENANTRY_SHUTDOWN_TIMEOUT_MS: '120000',
  TENANTRY_TEMPLATES_DIR: templatesDir,
  TENANTRY_DATA_DIR: dataDir,
};
let cp = await startControlPlane(env);
// If this script dies, the control plane (and its Postgres) must not outlive it.
process.on('exit', () => {
  if (cp.proc.exitCode === null) cp.proc.kill('SIGTERM');
});

const built = await provisionFleet(cp, { tenants: N, silos: SILOS, bridges: BRIDGES, templatesDir, log });
const { fleet, provisionMs } = built;
await built.close();

/* ---------------------------------------------------------------- the floor */

/** CPU seconds used by the control plane and by Postgres over a measurement (the floor's client not counted). */
type Cpu = { controlPlaneS: number; postgresS: number };
const cpuSince = (before: { controlPlane: number; postgres: number }): Cpu => {
  const now = cp.cpuMs();
  return {
    controlPlaneS: round((now.controlPlane - before.controlPlane) / 1000, 2),
    postgresS: round((now.postgres - before.postgres) / 1000, 2),
  };
};

/**
 * The DDL of a version on every placement, as plain SQL at parallelism P; returns the wall time.
 * `afterRestart`: starts right after the same restart as every rollout here does (the deploy restarts
 * the control plane and its embedded Postgres), so the floor finds the server as the rollout does:
 * its shutdown checkpoint behind it (the first write to each page after it puts a full-page image in
 * the WAL) and its shared buffers cold (docs/benchmarks.md, Rollouts).
 */
async function floor(column: string, afterRestart: boolean): Promise<{ ms: number; cpu: Cpu }> {
  if (afterRestart) await restart();
  const sql = ddl(column);
  const shared = new pg.Pool({ connectionString: cp.pgUrl(DATA), max: P });
  // end() resolves before its clients' sessions are gone: the restart that follows may end one first.
  shared.on('error', () => {});
  await Promise.all(Array.from({ length: P }, () => shared.query('SELECT 1')));
  const cpu0 = cp.cpuMs();
  const started = performance.now();
  await shared.query(`SET search_path TO pool;\n${sql}`);
  const obj = (slug: string) => `tenant_${slug.replaceAll('-', '_')}`;
  const tenants = [...fleet].filter((t) => t.tier !== 'pool').sort((a, b) => (a.slug < b.slug ? -1 : 1));
  await mapLimit(tenants, P, async (t) => {
    if (t.tier === 'bridge') {
      await shared.query(`SET LOCAL search_path TO ${obj(t.slug)};\n${sql}`);
      return;
    }
    const c = new pg.Client({ connectionString: cp.pgUrl(obj(t.slug)) });
    await c.connect();
    try {
      await c.query(`SET LOCAL search_path TO app;\n${sql}`);
    } finally {
      await c.end();
    }
  });
  const ms = performance.now() - started;
  const cpu = cpuSince(cpu0);
  await shared.end();
  return { ms, cpu };
}

/* ---------------------------------------------------------------- the rollouts */

const api = async (method: string, url: string, body?: unknown) => {
  const res = await fetch(`${cp.base}${url}`, {
    method,
    headers: { authorization: `Bearer ${cp.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  if (res.status >= 300) throw new Error(`${method} ${url}: ${res.status} ${await res.text()}`);
  // biome-ignore lint/suspicious/noExplicitAny: JSON from our own API, in a benchmark script
  return (await res.json()) as Record<string, any>;
};

/**
 * Starts a rollout to `toVersion`, waits for it to end; wall time from the POST to the rollout's own
 * `finishedAt` (the server's clock is this host's), and its peak memory. It polls every 500 ms, as
 * `tenantry rollouts create --wait` does: a read every 50 ms cost the rollout it measured about 0.4–2.8 s
 * of Postgres time (each read counts the 10,000-row ledger), which the floor never pays.
 */
async function rollout(toVersion: number) {
  fs.writeFileSync(`/proc/${cp.proc.pid}/clear_refs`, '5');
  const cpu0 = cp.cpuMs();
  const started = Date.now();
  const { id } = await api('POST', '/v1/rollouts', {
    toVersion,
    waves: [
      { name: 'canary', count: 3, parallelism: P },
      { name: 'rest', parallelism: P },
    ],
  });
  for (;;) {
    const r = await api('GET', `/v1/rollouts/${id}?limit=1`);
    if (r.status !== 'running') {
      if (r.status !== 'completed') throw new Error(`rollout ended ${r.status}: ${JSON.stringify(r)}`);
      const wallMs = Date.parse(String(r.finishedAt)) - started;
      return { wallMs, peakRssMb: cp.peakRssMb(), cpu: cpuSince(cpu0), r };
    }
    await new Promise((x) => setTimeout(x, 500));
  }
}

/** Stops the control plane (and its embedded Postgres), runs `meanwhile`, starts it again. */
async function restart(meanwhile?: () => void): Promise<void> {
  await cp.stop();
  // Postgres may still be writing its shutdown checkpoint (10,000 schemas' worth) after the control plane exits.
  for (const until = Date.now() + 600_000; fs.existsSync(path.join(dataDir, 'pg', 'postmaster.pid')); ) {
    if (Date.now() > until) throw new Error('the embedded Postgres did not stop');
    await new Promise((r) => setTimeout(r, 200));
  }
  meanwhile?.();
  cp = await startControlPlane(env);
}

/** Stops the control plane, adds `version` to the templates (`note_v<version>` on every table), starts it on it. */
async function deploy(version: number): Promise<void> {
  await restart(() => {
    const file = `${String(version).padStart(4, '0')}_notes_v${version}.sql`;
    fs.writeFileSync(path.join(templatesDir, 'tenant-schema', file), `${ddl(`note_v${version}`)}\n`);
    const tiers = JSON.parse(fs.readFileSync(path.join(templatesDir, 'tiers.json'), 'utf8'));
    tiers.templateVersion = version;
    fs.writeFileSync(path.join(templatesDir, 'tiers.json'), JSON.stringify(tiers, null, 2));
  });
}

// Rounds of floor, rollout, floor (the floors around each rollout, so both see the same machine). Each
// floor point runs twice: as it finds the server (`warm`: shown, not the target's), then right after a
// restart, as the rollout starts (the floor the ratio uses).
const floors: number[] = [];
const warmFloors: number[] = [];
const floorCpu: Cpu[] = [];
const floorPoint = async (column: string) => {
  warmFloors.push((await floor(`${column}_warm`, false)).ms);
  const f = await floor(column, true);
  floors.push(f.ms);
  floorCpu.push(f.cpu);
  log(
    `floor: ${round((floors.at(-1) as number) / 1000, 2)} s after a restart (${round((warmFloors.at(-1) as number) / 1000, 2)} s without)`,
  );
};
await floorPoint('floor_0');
const rounds: Awaited<ReturnType<typeof rollout>>[] = [];
for (let i = 0; i < ROUNDS; i++) {
  await deploy(i + 2);
  const r = await rollout(i + 2);
  rounds.push(r);
  log(`rollout to version ${i + 2}: ${round(r.wallMs / 1000, 2)} s`);
  await floorPoint(`floor_${i + 1}`);
}
const noop = await rollout(ROUNDS + 1);
log(`no-op rollout: ${round(noop.wallMs / 1000, 2)} s`);

/** Each round's rollout over the mean of the floors around it, and the three rounds' sums. */
const against = (f: number[]) => ({
  paired: rounds.map((r, i) => r.wallMs / (((f[i] as number) + (f[i + 1] as number)) / 2)),
  overall:
    rounds.reduce((a, r) => a + r.wallMs, 0) /
    rounds.reduce((a, _r, i) => a + ((f[i] as number) + (f[i + 1] as number)) / 2, 0),
});
const { paired, overall: ratio } = against(floors);
const warm = against(warmFloors);
const real = rounds[0] as (typeof rounds)[number];
const wave = (r: Record<string, unknown>, name: string) =>
  (r.waves as { name: string; durationMs: number | null }[]).find((w) => w.name === name);
const out = {
  fleet: {
    tenants: fleet.length,
    pool: fleet.filter((t) => t.tier === 'pool').length,
    bridge: fleet.filter((t) => t.tier === 'bridge').length,
    silo: fleet.filter((t) => t.tier === 'silo').length,
    provisionedInS: round(provisionMs / 1000, 1),
  },
  parallelism: P,
  migration: 'a nullable column and an index on each of the 3 tables',
  firstRollout: {
    wallS: round(real.wallMs / 1000, 2),
    serverS: round(Number(real.r.durationMs) / 1000, 2),
    platformMs: real.r.platform.durationMs,
    canaryS: round(Number(wave(real.r, 'canary')?.durationMs) / 1000, 2),
    restS: round(Number(wave(real.r, 'rest')?.durationMs) / 1000, 2),
    progress: real.r.progress,
    verification: { checked: real.r.verification.checked, mismatched: real.r.verification.mismatchCount },
    peakRssMb: real.peakRssMb,
  },
  rollouts: rounds.map((r) => ({
    wallS: round(r.wallMs / 1000, 2),
    serverS: round(Number(r.r.durationMs) / 1000, 2),
    peakRssMb: r.peakRssMb,
    cpu: r.cpu,
  })),
  floorsS: floors.map((f) => round(f / 1000, 2)),
  floorsCpu: floorCpu,
  ratios: paired.map((x) => round(x, 2)),
  ratio: round(ratio, 2),
  // The same DDL on a server not just restarted: fewer full-page images and warm buffers, which the rollout does not have.
  warmFloorsS: warmFloors.map((f) => round(f / 1000, 2)),
  warmRatios: warm.paired.map((x) => round(x, 2)),
  warmRatio: round(warm.overall, 2),
  noopRollout: {
    wallS: round(noop.wallMs / 1000, 2),
    skipped: noop.r.progress.skipped,
    verified: noop.r.verification.checked,
    peakRssMb: noop.peakRssMb,
  },
  targets: {
    ratioAtMost: 1.5,
    noopAtMostS: 5,
    peakRssAtMostMb: 250,
    met:
      ratio <= 1.5 &&
      noop.wallMs <= 5000 &&
      Math.max(...rounds.map((r) => r.peakRssMb), noop.peakRssMb) <= 250,
  },
};
process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
await cp.stop();
fs.rmSync(dataDir, { recursive: true, force: true });
fs.rmSync(templatesDir, { recursive: true, force: true });
