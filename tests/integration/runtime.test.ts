import { afterAll, describe, expect, it } from 'vitest';
import { adminUrl, startStack, superQuery, type TestStack } from '../helpers/runtime.js';

/** The composition root's decisions about the cluster it runs on. */
let s: TestStack | undefined;
afterAll(async () => {
  await s?.close();
});

const publicCanConnect = async (database: string) => {
  const rows = await superQuery<{ public_connect: boolean }>(
    'postgres',
    `SELECT EXISTS (SELECT 1 FROM aclexplode(coalesce(datacl, acldefault('d', datdba))) a
                     WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT') AS public_connect
       FROM pg_database WHERE datname = $1`,
    [database],
  );
  return rows[0]?.public_connect;
};

describe('control database on the data-plane cluster', () => {
  it('is locked down (no CONNECT for PUBLIC) even when the two URLs name the host differently', async () => {
    let control = '';
    s = await startStack(({ controlDb }) => {
      control = controlDb;
      const viaLocalhost = new URL(adminUrl(controlDb));
      viaLocalhost.hostname = 'localhost'; // the data plane is reached as 127.0.0.1
      return { DATABASE_URL: viaLocalhost.toString() };
    });
    expect(new URL(s.config.databaseUrl!).hostname).toBe('localhost');
    expect(new URL(s.config.dataplaneUrl!).hostname).toBe('127.0.0.1');
    expect(await publicCanConnect(control)).toBe(false);
    expect(await publicCanConnect(s.dataDb)).toBe(false);
  });
});
