import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { adminUrl } from '../helpers/runtime.js';

/**
 * scripts/psql.sh against the test run's embedded cluster: a data directory holding only the
 * superuser's secret file, as `npm start` leaves it, and the cluster's port.
 */
const hasPsql = fs
  .readdirSync('/usr/bin')
  .concat(fs.existsSync('/usr/local/bin') ? fs.readdirSync('/usr/local/bin') : [])
  .includes('psql');

const admin = new URL(adminUrl('postgres'));
const secret = decodeURIComponent(admin.password);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-psql-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function dataDir(name: string, secretText: string | null): string {
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  if (secretText !== null)
    fs.writeFileSync(path.join(dir, 'pg-superuser.secret'), `${secretText}\n`, { mode: 0o600 });
  return dir;
}

function run(dir: string, args: string[]) {
  const tmp = fs.mkdtempSync(path.join(root, 'tmp-'));
  return new Promise<{ code: number; stdout: string; stderr: string; leftInTmp: string[] }>((resolve) => {
    execFile(
      'sh',
      ['scripts/psql.sh', ...args],
      {
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          TENANTRY_DATA_DIR: dir,
          TENANTRY_EMBEDDED_PG_PORT: admin.port,
          TMPDIR: tmp,
        },
      },
      (err, stdout, stderr) =>
        resolve({
          code: err ? Number((err as { code?: number }).code ?? 1) : 0,
          stdout,
          stderr,
          leftInTmp: fs.readdirSync(tmp),
        }),
    );
  });
}

/** Why the file is skipped where it is: the script wraps psql, which only a machine with a Postgres client has. */
const reasonToSkip = hasPsql ? null : 'no psql on PATH (Debian: apt-get install postgresql-client)';

describe.skipIf(reasonToSkip !== null)(
  `scripts/psql.sh${reasonToSkip ? ` (skipped: ${reasonToSkip})` : ''}`,
  () => {
    it('runs psql as the superuser with the secret file, never printing it, and leaves no password file behind', async () => {
      const r = await run(dataDir('good', secret), [
        '-d',
        'postgres',
        '-At',
        '-c',
        'SELECT current_user, inet_server_addr()',
      ]);
      expect(r).toMatchObject({ code: 0, stdout: 'postgres|127.0.0.1\n', leftInTmp: [] });
      expect(r.stdout + r.stderr).not.toContain(secret);
    });

    it('authenticates with the file (SCRAM over TCP): a wrong secret is refused', async () => {
      const r = await run(dataDir('wrong', 'not-the-secret'), ['-d', 'postgres', '-c', 'SELECT 1']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/password authentication failed for user "postgres"/);
      expect(r.leftInTmp).toEqual([]);
    });

    it('says which file it could not read when the data directory is not the server one', async () => {
      const r = await run(dataDir('empty', null), ['-c', 'SELECT 1']);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/cannot read .*pg-superuser\.secret/);
    });
  },
);
