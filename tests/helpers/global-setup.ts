import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import type { TestProject } from 'vitest/node';
import { Db } from '../../control-plane/src/db/db.js';
import { migrate } from '../../control-plane/src/db/migrate.js';
import { startEmbedded } from '../../control-plane/src/embedded.js';
import { migrateQueue } from '../../control-plane/src/worker/index.js';

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string;
    templateDb: string;
  }
}

export const TEMPLATE_DB = 'tenantry_test_template';

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

/**
 * One embedded Postgres for the whole run (initdb ~0.6 s). Each test file then gets its own
 * control-plane database cloned from a migrated template, and its own data-plane database.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const log = pino({ level: 'warn' });
  // postgres runs as the `postgres` OS user when we are root: the directory must be reachable.
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-test-'));
  fs.chmodSync(dataDir, 0o755);
  const server = await startEmbedded({
    dataDir,
    port: await freePort(),
    log,
    settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '400' },
  });
  const admin = new pg.Client({ connectionString: server.url('postgres') });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${TEMPLATE_DB}`);
  await admin.end();
  const db = new Db(server.url(TEMPLATE_DB), 2);
  await migrate(db.pool, log);
  await migrateQueue(db, log);
  await db.close();
  project.provide('pgAdminUrl', server.url('postgres'));
  project.provide('templateDb', TEMPLATE_DB);
  return async () => {
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
}
