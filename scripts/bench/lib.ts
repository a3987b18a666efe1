import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

export interface ControlPlane {
  proc: ChildProcess;
  base: string;
  token: string;
  dataDir: string;
  pgUrl(db: string): string;
  /** Peak resident memory of the control-plane process (VmHWM), not counting Postgres. */
  peakRssMb(): number;
  /** CPU time used so far (user + system, ms) by the control-plane process and by its Postgres. */
  cpuMs(): { controlPlane: number; postgres: number };
  stop(): Promise<void>;
}

/** `npm start`'s arguments to node, read from package.json, so a benchmark runs what users run. */
function startArgs(): string[] {
  const pkg = JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, '../../package.json'), 'utf8'));
  // `exec` makes node the process npm signals (without it, SIGTERM to npm never reaches node).
  const [cmd, ...args] = String(pkg.scripts.start)
    .trim()
    .replace(/^exec\s+/, '')
    .split(/\s+/);
  if (cmd !== 'node') throw new Error(`npm start is expected to run node, not ${cmd}`);
  return args;
}

/** Starts `npm start`'s entry point on the embedded default, in a scratch data directory. */
export async function startControlPlane(env: Record<string, string> = {}): Promise<ControlPlane> {
  // A data directory handed in (to keep a fleet between runs) is kept; a scratch one is removed.
  // TENANTRY_BENCH_DATA_DIR: run a benchmark on a prepared data directory (one whose Postgres
  // preloads pg_stat_statements, say), kept afterwards like any data directory handed in.
  if (process.env.TENANTRY_BENCH_DATA_DIR && env.TENANTRY_DATA_DIR === undefined)
    env = { ...env, TENANTRY_DATA_DIR: process.env.TENANTRY_BENCH_DATA_DIR };
  const scratch = env.TENANTRY_DATA_DIR === undefined;
  const dataDir = env.TENANTRY_DATA_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-bench-'));
  fs.chmodSync(dataDir, 0o755);
  const port = await freePort();
  const pgPort = await freePort();
  const token = `tnt_${randomBytes(24).toString('base64url')}`;
  // The same command line as `npm start` (package.json), V8 flags included.
  // TENANTRY_BENCH_NODE_ARGS: extra node flags for the control plane only (--cpu-prof, --heap-prof).
  const extra = (process.env.TENANTRY_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const proc = spawn(process.execPath, [...extra, ...startArgs()], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      TENANTRY_EMBEDDED_PG_PORT: String(pgPort),
      TENANTRY_ADMIN_TOKEN: token,
      PORT: String(port),
      LOG_LEVEL: 'warn',
      // A benchmark fleet (10,000 tenants) is far past any cluster's connection budget on purpose.
      TENANTRY_CONNECTION_OVERCOMMIT: 'allow',
      ...env,
      TENANTRY_DATA_DIR: dataDir,
    },
    // TENANTRY_BENCH_CP_STDOUT: a file for the control plane's stdout (its logs, --trace-gc).
    stdio: [
      'ignore',
      process.env.TENANTRY_BENCH_CP_STDOUT
        ? fs.openSync(process.env.TENANTRY_BENCH_CP_STDOUT, 'w')
        : 'ignore',
      'inherit',
    ],
  });
  const base = `http://127.0.0.1:${port}`;
  const until = Date.now() + 60_000;
  for (;;) {
    const ok = await fetch(`${base}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (proc.exitCode !== null || Date.now() > until) throw new Error('control plane did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  const pw = fs.readFileSync(path.join(dataDir, 'pg-superuser.secret'), 'utf8').trim();
  return {
    proc,
    base,
    token,
    dataDir,
    // The same transport the control plane uses for its own connections: the Unix socket in
    // the data directory when there is one (see runtime.ts), so the floor is not handicapped.
    pgUrl: (db) => {
      const sock = path.join(dataDir, 'pg');
      const host = fs.existsSync(path.join(sock, `.s.PGSQL.${pgPort}`))
        ? `?host=${encodeURIComponent(sock)}`
        : '';
      return `postgres://postgres:${encodeURIComponent(pw)}@127.0.0.1:${pgPort}/${db}${host}`;
    },
    cpuMs() {
      // The postmaster's own time plus what its reaped children used (cutime/cstime), plus live backends.
      const pgPid = Number(
        fs.readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0],
      );
      let postgres = cpuTicks(pgPid, true);
      for (const child of childrenOf(pgPid)) postgres += cpuTicks(child, false);
      return {
        controlPlane: (cpuTicks(proc.pid ?? 0, false) * 1000) / CLK_TCK,
        postgres: (postgres * 1000) / CLK_TCK,
      };
    },
    peakRssMb() {
      const status = fs.readFileSync(`/proc/${proc.pid}/status`, 'utf8');
      const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN);
      return Math.round((kb / 1024) * 10) / 10;
    },
    async stop() {
      await new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      });
      if (scratch) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** The CPU a live process has used so far (user + system), in ms; 0 once it is gone. */
export const processCpuMs = (pid: number): number => (cpuTicks(pid, false) * 1000) / CLK_TCK;

/** utime + stime of a process (with its reaped children's when asked), in clock ticks; 0 if gone. */
function cpuTicks(pid: number, withReapedChildren: boolean): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime is field 14 overall.
    const f = stat
      .slice(stat.lastIndexOf(')') + 2)
      .split(' ')
      .map(Number);
    const [utime, stime, cutime, cstime] = [f[11] ?? 0, f[12] ?? 0, f[13] ?? 0, f[14] ?? 0];
    return utime + stime + (withReapedChildren ? cutime + cstime : 0);
  } catch {
    return 0;
  }
}

function childrenOf(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] as number;
}

export const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;

/** Runs `fn` over items with at most `limit` in flight. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      for (;;) {
        const i = next++;
        if (i >= items.length) return;
        out[i] = await fn(items[i] as T);
      }
    }),
  );
  return out;
}
