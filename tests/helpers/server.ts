import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';

/** A control-plane child process (`npm start`'s entry point) for crash tests. */
export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

export interface ServerProcess extends ChildProcess {
  /** Everything the process wrote to stderr so far (where a generated admin token is printed). */
  output(): string;
}

/** Spawns the server and waits until /healthz answers 200 (or the process dies, or `timeoutMs` passes). */
export async function startServer(
  port: number,
  env: Record<string, string>,
  opts: { timeoutMs?: number } = {},
): Promise<ServerProcess> {
  const p = spawn(process.execPath, ['--import', 'tsx', 'control-plane/src/server.ts'], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      PORT: String(port),
      LOG_LEVEL: 'warn',
      TENANTRY_DRIFT_SCHEDULE: 'off',
      // As in startStack: test files onboard more than the shared cluster's connection budget holds.
      TENANTRY_CONNECTION_OVERCOMMIT: 'allow',
      // As in startStack: a caller asking the pool it holds for a second connection fails at once.
      TENANTRY_DB_HOLD_CHECK: 'on',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  }) as ServerProcess;
  let stderr = '';
  p.stderr?.on('data', (d) => {
    stderr += String(d);
  });
  p.output = () => stderr;
  const until = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return p;
    if (p.exitCode !== null || p.signalCode !== null || Date.now() > until) {
      if (isRunning(p)) await kill9(p);
      throw new Error(`server did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const isRunning = (p: ChildProcess | undefined): p is ChildProcess =>
  !!p && p.exitCode === null && p.signalCode === null;

export async function kill9(p: ChildProcess): Promise<void> {
  await signal(p, 'SIGKILL');
}

/** Sends `sig` to a process we started and waits for it to exit. */
export async function signal(p: ChildProcess, sig: NodeJS.Signals): Promise<void> {
  if (!isRunning(p)) return;
  await new Promise<void>((resolve) => {
    p.once('exit', () => resolve());
    p.kill(sig);
  });
}

/** Polls `fn` until it returns something other than undefined (crash tests gate on state, not time). */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 60_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
