import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { loginRoleNames } from '../../control-plane/src/domain/naming.js';
import {
  auth,
  connectionOf,
  onboard,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';

/** Passwords never reach logs, the tenant row, operation output or the audit log. */
let s: TestStack;
const lines: string[] = [];
const passwords: string[] = [];

beforeAll(async () => {
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  s = await startStack({ LOG_LEVEL: 'trace' }, sink);
  for (const tier of ['pool', 'bridge', 'silo'] as const) {
    const t = await onboard(s, tier);
    passwords.push((await connectionOf(s, t.slug)).password);
    // A credential rotation (the pool tenant's rotates the pool's shared login) and its new password.
    const rotation = await s.app.inject({
      method: 'POST',
      url: `/v1/tenants/${t.slug}/credential-rotations`,
      headers: auth(s.tokens.sre),
      payload: { graceSeconds: 60 },
    });
    await waitForOperation(s, rotation.json().operation.id);
    passwords.push((await connectionOf(s, t.slug)).password);
    const res = await s.app.inject({
      method: 'DELETE',
      url: `/v1/tenants/${t.slug}`,
      headers: { ...auth(s.tokens.sre), confirm: t.slug },
    });
    await waitForOperation(s, res.json().operation.id);
  }
  // A request carrying a token is logged with the header redacted.
  await s.app.inject({ method: 'GET', url: '/v1/tenants', headers: auth(s.tokens.admin) });
}, 120_000);
afterAll(async () => {
  await s?.close();
  // The pool's two logins (its rotation made them) are cluster-wide roles: dropped with the stack.
  const pool = dataPlaneNames(s.dataDb).poolRole;
  await superQuery('postgres', `DROP ROLE IF EXISTS ${loginRoleNames(pool).join(', ')}`);
});

describe('secret hygiene', () => {
  it('collected real passwords and a non-trivial log to check against', () => {
    expect(passwords).toHaveLength(6);
    expect(new Set(passwords).size).toBe(6);
    for (const p of passwords) expect(p.length).toBeGreaterThanOrEqual(24);
    expect(lines.length).toBeGreaterThan(20);
  });

  it('logs each answered request once: its id, route, status, time and token name, never a header', async () => {
    const before = lines.length;
    const ok = await s.app.inject({ method: 'GET', url: '/v1/tenants?limit=1', headers: auth(s.tokens.sre) });
    const refused = await s.app.inject({
      method: 'GET',
      url: '/v1/tenants/no-such-one',
      headers: auth(s.tokens.sre),
    });
    expect([ok.statusCode, refused.statusCode]).toEqual([200, 404]);
    const logged = lines.slice(before).map((l) => JSON.parse(l) as Record<string, unknown>);
    const access = logged.filter((l) => l.msg === 'request completed');
    expect(access).toHaveLength(2);
    expect(access[0]).toMatchObject({
      method: 'GET',
      url: '/v1/tenants?limit=1',
      statusCode: 200,
      tokenName: 'test-sre',
    });
    expect(access[1]).toMatchObject({
      url: '/v1/tenants/no-such-one',
      statusCode: 404,
      tokenName: 'test-sre',
    });
    // The same request id as the error body names, so an answer leads to its log line.
    expect(access[1]?.reqId).toBe(refused.json().error.requestId);
    for (const a of access) expect(a.responseTimeMs).toEqual(expect.any(Number));
    expect(logged.filter((l) => l.msg === 'incoming request')).toHaveLength(0);
    expect(JSON.stringify(access)).not.toMatch(/authorization|bearer/i);
  });

  it('no password or token appears in any log line', () => {
    const all = lines.join('');
    for (const p of passwords) expect(all).not.toContain(p);
    for (const t of Object.values(s.tokens)) expect(all).not.toContain(t);
  });

  it('no password appears in tenant rows, operations or the audit log', async () => {
    const dump = JSON.stringify([
      await superQuery(s.controlDb, 'SELECT * FROM tenants'),
      await superQuery(s.controlDb, 'SELECT * FROM operations'),
      await superQuery(s.controlDb, 'SELECT * FROM audit_log'),
      await superQuery(s.controlDb, 'SELECT * FROM login_rotations'),
      await superQuery(s.controlDb, 'SELECT * FROM graphile_worker._private_jobs'),
    ]);
    for (const p of passwords) expect(dump).not.toContain(p);
  });

  it('no plaintext password is stored by Postgres either (SCRAM verifiers only)', async () => {
    const rows = await superQuery<{ rolpassword: string | null }>(
      'postgres',
      `SELECT rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL`,
    );
    for (const r of rows) expect(r.rolpassword).toMatch(/^SCRAM-SHA-256\$/);
  });
});
