/**
 * The AWS API emulator layer: `moto_server` (Python moto, part of this machine image) started on a
 * free port for one test file, reset before each test (`POST /moto-api/reset`), stopped after the
 * file. The project's SDK code runs through the real clients, pointed at it with `AWS_ENDPOINT_URL`
 * (the SDK v3 reads it for every service) and dummy credentials: what AWS would answer, on the wire,
 * instead of what aws-sdk-client-mock was told to answer.
 *
 * Where `moto_server` is not on PATH, the files that use this layer skip, and say why (`skipReason`).
 * Where moto answers differently from AWS (docs/aws.md lists what we know), the tests keep
 * aws-sdk-client-mock and say which difference they cover.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach } from 'vitest';

/** The account moto answers as (its default): ARNs it returns carry it. */
export const MOTO_ACCOUNT = '123456789012';
export const MOTO_REGION = 'eu-west-1';

function onPath(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, cmd);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

const binary = onPath('moto_server');

/**
 * Why the emulator tests do not run here, or null when they do. Put it in the skipped test's name:
 * the default reporter shows a skipped file's tests by name only.
 */
export const skipReason: string | null = binary
  ? null
  : 'reason: moto_server (Python moto 5.x) is not on PATH, so there is no AWS API emulator to run against; install it with `pip install "moto[server]"`';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

export interface Moto {
  /** `http://127.0.0.1:<port>`. */
  endpoint: string;
  /** Clears every service's state (`POST /moto-api/reset`). */
  reset(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts `moto_server` on a free port and resolves once it listens: it prints ` * Running on
 * http://127.0.0.1:<port>` when its socket is bound (the werkzeug banner, on stderr), so this gates
 * on that line, never on a sleep.
 */
export async function startMoto(): Promise<Moto> {
  if (!binary) throw new Error(skipReason ?? 'moto_server is not on PATH');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn(binary, ['-H', '127.0.0.1', '-p', String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
    });
    const ready = await new Promise<boolean>((resolve, reject) => {
      let seen = '';
      const onData = (b: Buffer) => {
        seen = (seen + b.toString()).slice(-4000);
        if (seen.includes(`Running on http://127.0.0.1:${port}`)) resolve(true);
        if (/Address already in use|port \d+ is in use/i.test(seen)) resolve(false);
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('error', reject);
      child.once('exit', (code) => {
        if (/in use/i.test(seen)) resolve(false);
        else reject(new Error(`moto_server exited (${code}) before listening: ${seen.slice(-500)}`));
      });
    });
    if (!ready) {
      child.kill('SIGKILL');
      // Another process took the port between our probe and moto's bind: take another.
      if (attempt < 3) continue;
      throw new Error('moto_server found no free port');
    }
    // Its request log is not read again: drop it so the pipes never fill.
    child.stdout?.resume();
    child.stderr?.resume();
    const endpoint = `http://127.0.0.1:${port}`;
    return {
      endpoint,
      async reset() {
        const res = await fetch(`${endpoint}/moto-api/reset`, { method: 'POST' });
        if (!res.ok) throw new Error(`moto reset failed: ${res.status}`);
      },
      stop: () => stopChild(child),
    };
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** The environment the SDK reads: the emulator's endpoint for every service, dummy credentials. */
export function motoEnv(endpoint: string): Record<string, string> {
  return {
    AWS_ENDPOINT_URL: endpoint,
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_REGION: MOTO_REGION,
    // No shared config or credentials file of the machine may change what the SDK does here.
    AWS_CONFIG_FILE: '/nonexistent',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
  };
}

/**
 * One emulator for the calling test file: started before its tests (and `process.env` pointed at
 * it, for clients built with the SDK's defaults), reset before each test unless `reset: false`,
 * stopped after them. Does nothing where moto_server is missing (the file's tests skip on
 * `skipReason`). Read `endpoint()` inside tests or hooks, once it has started.
 */
export function useMoto(opts: { reset?: boolean } = {}): {
  endpoint: () => string;
  reset: () => Promise<void>;
} {
  let moto: Moto | undefined;
  const saved: Record<string, string | undefined> = {};
  beforeAll(async () => {
    if (skipReason) return;
    moto = await startMoto();
    for (const [k, v] of Object.entries(motoEnv(moto.endpoint))) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
  });
  if (opts.reset !== false) {
    beforeEach(async () => {
      await moto?.reset();
    });
  }
  afterAll(async () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await moto?.stop();
  });
  return {
    endpoint: () => {
      if (!moto) throw new Error('the emulator is not running (it starts in beforeAll)');
      return moto.endpoint;
    },
    reset: async () => moto?.reset(),
  };
}
