import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../control-plane/src/dataplane/dataplane.js';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { type EmbeddedServer, startEmbedded } from '../../control-plane/src/embedded.js';
import { freePort } from '../helpers/server.js';

/**
 * A small embedded cluster of its own, with the embedded defaults but for max_connections: tenant
 * logins fill every slot they may have, and the control plane still gets in.
 */
const MAX = 30;
/** Two tenants' login roles. */
const [TENANT_A, TENANT_B] = [tenantObjectName('acme'), tenantObjectName('beta')];
let server: EmbeddedServer;
let dataDir: string;
let port: number;
const held: pg.Client[] = [];

const urlAs = (user: string, password: string, database = 'postgres') =>
  `postgres://${user}:${password}@127.0.0.1:${port}/${database}`;

async function login(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => {});
  await c.connect();
  held.push(c);
  return c;
}

/** The SQLSTATE a login fails with, or null when it gets in (the session is kept open). */
async function tryLogin(url: string): Promise<string | null> {
  try {
    await login(url);
    return null;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}

async function superuser<T extends pg.QueryResultRow>(sql: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: server.url('postgres') });
  await c.connect();
  try {
    return (await c.query<T>(sql)).rows;
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  // Postgres runs as the `postgres` OS user when we are root: its directory must be reachable.
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-reserved-'));
  fs.chmodSync(dataDir, 0o755);
  port = await freePort();
  server = await startEmbedded({
    dataDir,
    port,
    log: pino({ level: 'warn' }),
    settings: {
      max_connections: String(MAX),
      fsync: 'off',
      max_wal_senders: '4',
      max_replication_slots: '4',
    },
  });
  await superuser(`
    CREATE ROLE ${TENANT_A} LOGIN PASSWORD 'tenant-a-pw';
    CREATE ROLE ${TENANT_B} LOGIN PASSWORD 'tenant-b-pw';
    CREATE ROLE cp_admin LOGIN NOSUPERUSER CREATEROLE CREATEDB PASSWORD 'cp-admin-pw';
  `);
});

afterAll(async () => {
  await Promise.all(held.map((c) => c.end().catch(() => undefined)));
  await server?.stop();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

describe('reserved connections on the embedded cluster', () => {
  it('keeps reserved_connections beside superuser_reserved_connections', async () => {
    const [row] = await superuser<{ reserved: string; su: string }>(
      `SELECT current_setting('reserved_connections') AS reserved, current_setting('superuser_reserved_connections') AS su`,
    );
    // The embedded default's 20 (startEmbedded), and Postgres' default 3 for superusers.
    expect(row).toEqual({ reserved: '20', su: '3' });
  });

  it('a control-plane admin that is not a superuser grants itself pg_use_reserved_connections when it may, and says so when it may not', async () => {
    const dp = new DataPlane(urlAs('cp_admin', 'cp-admin-pw'));
    try {
      const before = await dp.reserveAdminConnections();
      expect(before.access).toBe('refused');
      expect(before.reason).toMatch(/pg_use_reserved_connections/);
      // What an operator does (or an admin with ADMIN OPTION on the role does for itself).
      await superuser('GRANT pg_use_reserved_connections TO cp_admin');
      expect((await dp.reserveAdminConnections()).access).toBe('member');
    } finally {
      await dp.close();
    }
    // An admin holding the role WITH ADMIN OPTION but without its privileges grants them to itself.
    await superuser(`CREATE ROLE cp_admin2 LOGIN NOSUPERUSER CREATEROLE PASSWORD 'cp-admin2-pw';
                     GRANT pg_use_reserved_connections TO cp_admin2 WITH ADMIN TRUE, INHERIT FALSE`);
    const dp2 = new DataPlane(urlAs('cp_admin2', 'cp-admin2-pw'));
    try {
      expect((await dp2.reserveAdminConnections()).access).toBe('granted');
      expect((await dp2.reserveAdminConnections()).access).toBe('member');
    } finally {
      await dp2.close();
    }
    const su = new DataPlane(server.url('postgres'));
    try {
      expect(await su.reserveAdminConnections()).toMatchObject({ access: 'superuser' });
      expect(await su.connectionSettings()).toMatchObject({ maxConnections: MAX });
    } finally {
      await su.close();
    }
  });

  it('tenant logins fill the ordinary slots and are refused (53300); the control plane still connects', async () => {
    const [s] = await superuser<{ su: number; reserved: number; others: number }>(
      `SELECT current_setting('superuser_reserved_connections')::int AS su,
              current_setting('reserved_connections')::int AS reserved,
              (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend') - 1 AS others`,
    );
    const ordinary = MAX - s!.su - s!.reserved - s!.others;
    // Tenants open sessions until the server refuses one (two roles, as two tenants would).
    let opened = 0;
    let refusal: string | null = null;
    while (refusal === null && opened <= MAX) {
      refusal = await tryLogin(opened % 2 ? urlAs(TENANT_A, 'tenant-a-pw') : urlAs(TENANT_B, 'tenant-b-pw'));
      if (refusal === null) opened++;
    }
    expect({ opened, refusal }).toEqual({ opened: ordinary, refusal: '53300' });
    // Another tenant login is refused too, whichever role.
    expect(await tryLogin(urlAs(TENANT_A, 'tenant-a-pw'))).toBe('53300');
    // The control plane's admin gets in: as a member of pg_use_reserved_connections (external Postgres)...
    const admin = await login(urlAs('cp_admin', 'cp-admin-pw'));
    expect((await admin.query('SELECT current_user AS u')).rows[0].u).toBe('cp_admin');
    // ... and as the superuser (the embedded cluster), through a DataPlane like the engine's.
    const dp = new DataPlane(server.url('postgres'));
    try {
      expect((await dp.connectionSettings()).maxConnections).toBe(MAX);
    } finally {
      await dp.close();
    }
  });
});
