import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/server.js';

// `npm start` run the way a user runs it (systemd, a container runtime or a terminal signal the
// npm process, not node), then signalled: nothing it started may be left running.

const root = path.resolve(import.meta.dirname, '../..');

/** Alive and not a zombie (a zombie left for PID 1 to reap has already stopped). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Waits until none of `pids` is running; false if some still is after the bound. */
async function gone(pids: number[], boundMs = 30_000): Promise<boolean> {
  const until = Date.now() + boundMs;
  while (pids.some(alive)) {
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

interface Started {
  npm: ChildProcess;
  port: number;
  dataDir: string;
  server: number;
  postmaster: number;
  output(): string;
}

const started: Started[] = [];
afterEach(async () => {
  // Whatever a failed test left behind is stopped here, never leaked into the next file.
  for (const s of started.splice(0)) {
    for (const pid of [s.server, s.postmaster]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    s.npm.kill('SIGKILL');
    fs.rmSync(s.dataDir, { recursive: true, force: true });
  }
});

async function npmStart(env: Record<string, string> = {}): Promise<Started> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-npmstart-'));
  fs.chmodSync(dataDir, 0o755);
  const port = await freePort();
  const npm = spawn('npm', ['start'], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      PORT: String(port),
      TENANTRY_EMBEDDED_PG_PORT: String(await freePort()),
      TENANTRY_DATA_DIR: dataDir,
      TENANTRY_ADMIN_TOKEN: `tnt_${'a'.repeat(32)}`,
      TENANTRY_DRIFT_SCHEDULE: 'off',
      LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const collect = (d: unknown) => {
    stderr += String(d);
  };
  npm.stdout?.on('data', collect);
  npm.stderr?.on('data', collect);
  // Ready when /healthz answers (bounded; a dead npm ends the wait at once).
  const until = Date.now() + 90_000;
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (npm.exitCode !== null || npm.signalCode !== null || Date.now() > until) {
      npm.kill('SIGKILL');
      throw new Error(`npm start did not come up: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const server = Number(fs.readFileSync(path.join(dataDir, 'tenantry.pid'), 'utf8'));
  const postmaster = Number(
    fs.readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0],
  );
  const s = { npm, port, dataDir, server, postmaster, output: () => stderr };
  started.push(s);
  expect(alive(server) && alive(postmaster)).toBe(true);
  return s;
}

const exited = (p: ChildProcess) =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((resolve) => p.once('exit', () => resolve()));

describe('npm start', () => {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`${sig} to the npm process stops the server and its Postgres, in order`, async () => {
      const s = await npmStart();
      s.npm.kill(sig);
      await exited(s.npm);
      expect(await gone([s.server, s.postmaster])).toBe(true);
      // An orderly stop: Postgres removed its pid file, and our lock file is released.
      expect(fs.existsSync(path.join(s.dataDir, 'pg', 'postmaster.pid'))).toBe(false);
      expect(fs.existsSync(path.join(s.dataDir, 'tenantry.pid'))).toBe(false);
    });
  }

  it('a server whose npm parent is killed with -9 stops itself and its Postgres', async () => {
    const s = await npmStart();
    s.npm.kill('SIGKILL');
    await exited(s.npm);
    expect(await gone([s.server, s.postmaster])).toBe(true);
  });

  it('a shutdown past its deadline still stops Postgres', async () => {
    // Every step sleeps for ten minutes. The worker hands the running operation back after its drain
    // timeout, but the API waits for the operation's event stream, open until the operation ends:
    // well past the one-second deadline.
    const s = await npmStart({
      TENANTRY_SHUTDOWN_TIMEOUT_MS: '1000',
      TENANTRY_FAULT_STEP_DELAY_MS: '600000',
    });
    const res = await fetch(`http://127.0.0.1:${s.port}/v1/tenants`, {
      method: 'POST',
      headers: { authorization: `Bearer tnt_${'a'.repeat(32)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ slug: 'slow-one', name: 'Slow', tier: 'pool' }),
    });
    expect(res.status).toBe(202);
    const op = ((await res.json()) as { operation: { id: string } }).operation.id;
    // Wait until the worker is inside the step (the operation is running), then signal.
    for (;;) {
      const r = await fetch(`http://127.0.0.1:${s.port}/v1/operations/${op}`, {
        headers: { authorization: `Bearer tnt_${'a'.repeat(32)}` },
      });
      if (((await r.json()) as { status: string }).status === 'running') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const stream = await fetch(`http://127.0.0.1:${s.port}/v1/operations/${op}/events`, {
      headers: { authorization: `Bearer tnt_${'a'.repeat(32)}` },
    });
    expect(stream.status).toBe(200);
    s.npm.kill('SIGTERM');
    await exited(s.npm);
    expect(await gone([s.server, s.postmaster])).toBe(true);
    expect(s.output()).toMatch(/shutdown deadline passed/);
  });
});
