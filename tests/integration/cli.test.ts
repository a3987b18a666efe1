import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { cliRunner, json, REQUEST_ID } from '../helpers/cli.js';
import { adminUrl, auth, onboard, rand, startStack, superQuery, type TestStack } from '../helpers/runtime.js';
import { atPoint } from './promotion-helpers.js';

/**
 * The `tenantry` CLI, run as a user runs it (its `bin` entry, a process of its own) against a real
 * control plane listening on a port: every command, `-o json` and `-o yaml` parsed, exit codes,
 * `--wait` following an operation that succeeds and one that fails, the typed confirmation of
 * destructive commands, and the token: never in argv, never in any output, kept in a mode-600 profile.
 */
let s: TestStack;
let url: string;
let home: string;
/** Everything every CLI run printed (kept by the runner), for the token check at the end. */
const { cli, printed } = cliRunner(() => ({ url, home, token: s.tokens.admin }));

/** Rows of a pool tenant, for a promotion to copy. */
const seedUsers = (tenantId: string, n: number) =>
  superQuery(
    s.dataDb,
    `INSERT INTO pool.users (tenant_id, email) SELECT $1, 'u' || g || '@x' FROM generate_series(1, $2) g`,
    [tenantId, n],
  );
const api = async (url: string, token = s.tokens.admin) =>
  (await s.app.inject({ method: 'GET', url, headers: auth(token) })).json();

beforeAll(async () => {
  s = await startStack({ TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: '600000' });
  await s.app.listen({ port: 0, host: '127.0.0.1' });
  const addr = s.app.server.address();
  url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-cli-'));
});
afterAll(async () => {
  await s?.close();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

describe('tenants', () => {
  it('create answers the 202 body; ops watch follows it live to the end', async () => {
    const slug = `cli-${rand(3)}`;
    const accepted = json(await cli(['tenants', 'create', slug, '--tier', 'pool', '-o', 'json']));
    expect(accepted.tenant).toMatchObject({ slug, tier: 'pool', status: 'provisioning' });
    expect(accepted.operation).toMatchObject({ kind: 'onboard', status: 'queued' });
    const watched = await cli(['ops', 'watch', accepted.operation.id, '-o', 'json']);
    const op = json(watched);
    expect(op).toMatchObject({ id: accepted.operation.id, status: 'succeeded' });
    for (const step of op.steps) expect(watched.stderr).toContain(`✔ ${step.name}`);
    expect(watched.stderr).toContain(`operation ${op.id} succeeded`);
  });

  it('create --wait shows each step and prints the tenant and operation as they ended', async () => {
    const slug = `cli-${rand(3)}`;
    const run = await cli([
      'tenants',
      'create',
      slug,
      '--tier',
      'bridge',
      '--name',
      'Wait Inc',
      '--wait',
      '-o',
      'json',
    ]);
    const done = json(run);
    expect(done.tenant).toMatchObject({ slug, name: 'Wait Inc', tier: 'bridge', status: 'active' });
    expect(done.operation.status).toBe('succeeded');
    expect(done.operation.steps.length).toBeGreaterThan(2);
    for (const step of done.operation.steps) expect(run.stderr).toContain(`✔ ${step.name}`);
  });

  it('list, get and connection print the API objects as JSON and YAML, and a table by default', async () => {
    const t = await onboard(s, 'pool');
    const page = json(await cli(['tenants', 'list', '--limit', '500', '-o', 'json']));
    expect(page).toEqual(await api('/v1/tenants?limit=500'));
    expect(page.items.map((x: { slug: string }) => x.slug)).toContain(t.slug);
    const yaml = await cli(['tenants', 'list', '--limit', '500', '-o', 'yaml']);
    expect(yaml.code).toBe(0);
    expect(YAML.parse(yaml.stdout)).toEqual(page);
    const table = await cli(['tenants', 'list', '--limit', '500']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/SLUG.*TIER.*STATUS/);
    expect(table.stdout).toContain(t.slug);

    expect(json(await cli(['tenants', 'get', t.slug, '-o', 'json']))).toEqual(
      await api(`/v1/tenants/${t.slug}`),
    );
    const shown = await cli(['tenants', 'get', t.slug]);
    expect(shown.stdout).toContain(t.id);

    const d = json(await cli(['tenants', 'connection', t.slug, '-o', 'json'], { token: s.tokens.dataplane }));
    expect(d).toMatchObject({ tenantId: t.id, tier: 'pool', password: expect.any(String) });
    const hidden = await cli(['tenants', 'connection', t.slug], { token: s.tokens.dataplane });
    expect(hidden.code).toBe(0);
    expect(hidden.stdout).toContain(d.user);
    expect(hidden.stdout).not.toContain(d.password);
  });

  it('--all follows every page', async () => {
    const all = json(await cli(['tenants', 'list', '--limit', '1', '--all', '-o', 'json']));
    const api500 = await api('/v1/tenants?limit=500');
    expect(all).toEqual({ items: api500.items, nextCursor: null });
    const one = json(await cli(['tenants', 'list', '--limit', '1', '-o', 'json']));
    expect(one.items).toHaveLength(1);
    expect(one.nextCursor).toEqual(expect.any(String));
  });
});

describe('destructive commands ask for the slug', () => {
  it('delete refuses a wrong or missing slug and changes nothing; the typed slug offboards it', async () => {
    const t = await onboard(s, 'pool');
    const wrong = await cli(['tenants', 'delete', t.slug], { input: 'not-it\n', token: s.tokens.sre });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain(`Type ${t.slug} to confirm`);
    expect(wrong.stderr).toContain('error ABORTED: aborted');
    const none = await cli(['tenants', 'delete', t.slug], { token: s.tokens.sre });
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('error ABORTED: aborted: no confirmation was typed');
    expect((await api(`/v1/tenants/${t.slug}`)).status).toBe('active');
    expect(
      await superQuery(
        s.controlDb,
        `SELECT 1 FROM audit_log WHERE action = 'tenant.offboard' AND tenant_id = $1`,
        [t.id],
      ),
    ).toHaveLength(0);

    const typed = await cli(['tenants', 'delete', t.slug, '--wait', '-o', 'json'], {
      input: `${t.slug}\n`,
      token: s.tokens.sre,
    });
    const done = json(typed);
    expect(done.tenant.status).toBe('offboarded');
    expect(done.operation).toMatchObject({ kind: 'offboard', status: 'succeeded' });
  });

  it('--yes skips the question', async () => {
    const t = await onboard(s, 'pool');
    const run = await cli(['tenants', 'delete', t.slug, '--yes', '-o', 'json'], { token: s.tokens.sre });
    expect(json(run).operation.kind).toBe('offboard');
    expect(run.stderr).not.toContain('Type');
  });
});

describe('promote and rollback --wait', () => {
  it('shows the steps, rows copied per table, lag, freeze and rollback deadline; rollback brings it back', async () => {
    const t = await onboard(s, 'pool');
    await seedUsers(t.id, 25);
    const run = await cli(['promote', t.slug, '--to', 'silo', '--wait', '-o', 'json'], {
      input: `${t.slug}\n`,
      token: s.tokens.sre,
    });
    const done = json(run);
    expect(done.tenant).toMatchObject({ slug: t.slug, tier: 'silo', status: 'active' });
    expect(done.operation).toMatchObject({ kind: 'promote', status: 'succeeded' });
    for (const step of done.operation.steps) expect(run.stderr).toContain(`✔ ${step.name}`);
    expect(run.stderr).toMatch(/rows copied: .*users 25/);
    expect(run.stderr).toMatch(/replication lag: \d/);
    expect(run.stderr).toMatch(/write freeze started at /);
    expect(run.stderr).toMatch(/write freeze lasted \d/);
    expect(run.stderr).toContain(
      `rollback possible until ${done.operation.progress.rollbackUntil.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}`,
    );

    // The promotion to roll back is the tenant's latest: no operation id needed.
    const back = await cli(['rollback', t.slug, '--wait', '-o', 'json'], {
      input: `${t.slug}\n`,
      token: s.tokens.sre,
    });
    const after = json(back);
    expect(after.tenant.tier).toBe('pool');
    expect(after.operation.params).toMatchObject({ rollbackOf: done.operation.id });
    expect(back.stderr).toContain(`rolls tenant ${t.slug} back from promotion ${done.operation.id}`);
  });

  it('exits 1 with the failure when the operation fails, printing the failed operation', async () => {
    const t = await onboard(s, 'pool');
    await seedUsers(t.id, 20);
    // A row the source never had, written into the target behind the promotion's back: verification fails.
    atPoint(s, t.id, 'catch-up:start', async () => {
      const c = new pg.Client({ connectionString: adminUrl(tenantObjectName(t.slug)) });
      await c.connect();
      try {
        await c.query('SET session_replication_role = replica');
        await c.query(`INSERT INTO app.users (tenant_id, email) VALUES ($1, 'ghost@x')`, [t.id]);
      } finally {
        await c.end();
      }
    });
    const run = await cli(['promote', t.slug, '--to', 'silo', '--yes', '--wait', '-o', 'json'], {
      token: s.tokens.sre,
    });
    expect(run.code).toBe(1);
    const op = JSON.parse(run.stdout);
    expect(op).toMatchObject({ kind: 'promote', status: 'failed' });
    // The failed step keeps the code it failed with, and the CLI's error line (JSON, as asked) is it.
    const failed = op.steps.find((x: { status: string }) => x.status === 'failed');
    expect(failed.errorCode).toBe('PROVIDER_FAILED');
    const failure = JSON.parse(run.stderr.trim().split('\n').at(-1) ?? '');
    expect(failure.error.code).toBe('PROVIDER_FAILED');
    expect(failure.error.message).toMatch(
      new RegExp(`^operation ${op.id} failed at step ${failed.name}: .*verification failed`),
    );
    expect(run.stderr).toMatch(/✖ [a-z-]+: .*verification failed/);
    expect((await api(`/v1/tenants/${t.slug}`)).tier).toBe('pool');
  });
});

describe('ops', () => {
  it('list and get print the API objects; filters reach the API', async () => {
    const t = await onboard(s, 'pool');
    const page = json(await cli(['ops', 'list', '--tenant', t.slug, '-o', 'json']));
    expect(page).toEqual(await api(`/v1/operations?tenant=${t.slug}`));
    expect(page.items.map((o: { id: string }) => o.id)).toEqual([t.operationId]);
    const kinds = json(
      await cli(['ops', 'list', '--kind', 'promote', '--kind', 'offboard', '--limit', '200', '-o', 'json']),
    );
    expect(kinds).toEqual(await api('/v1/operations?kind=promote&kind=offboard&limit=200'));
    const inFlight = json(
      await cli(['ops', 'list', '--status', 'queued', '--status', 'running', '-o', 'json']),
    );
    expect(inFlight).toEqual(await api('/v1/operations?status=queued&status=running'));
    expect((await cli(['ops', 'list', '--status', 'queued', '--status', 'gone'])).code).toBe(2);
    expect(json(await cli(['ops', 'get', t.operationId, '-o', 'json']))).toEqual(
      await api(`/v1/operations/${t.operationId}`),
    );
    const table = await cli(['ops', 'get', t.operationId]);
    expect(table.stdout).toContain('STEP');
  });

  it("resume sends the request and reports the API's refusal of an operation that succeeded", async () => {
    const t = await onboard(s, 'pool');
    const run = await cli(['ops', 'resume', t.operationId], { token: s.tokens.sre });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('OPERATION_NOT_RESUMABLE');
    const audited = await superQuery(
      s.controlDb,
      `SELECT 1 FROM audit_log WHERE action = 'operation.resume' AND operation_id = $1`,
      [t.operationId],
    );
    expect(audited).toHaveLength(0);
  });
});

describe('drift', () => {
  it('run --wait, list, get, show, and policy set and get', async () => {
    const t = await onboard(s, 'pool');
    const run = json(await cli(['drift', 'run', '--wait', '-o', 'json'], { token: s.tokens.sre }));
    expect(run.status).toBe('succeeded');
    const listed = json(await cli(['drift', 'list', '-o', 'json']));
    expect(listed.items.map((r: { id: string }) => r.id)).toContain(run.id);
    expect(json(await cli(['drift', 'get', run.id, '-o', 'json']))).toEqual(
      await api(`/v1/drift-runs/${run.id}`),
    );
    const shown = json(await cli(['drift', 'show', t.slug, '-o', 'json']));
    expect(shown).toEqual(await api(`/v1/tenants/${t.slug}/drift`));
    expect(shown.runId).toBe(run.id);

    const set = await cli(
      [
        'drift',
        'policy',
        'set',
        '--tier',
        'pool',
        '--mode',
        'report',
        '--ignore',
        'role.connectionLimit',
        '-o',
        'json',
      ],
      {
        token: s.tokens.sre,
      },
    );
    const pool = json(set).items.find((p: { tier: string | null }) => p.tier === 'pool');
    expect(pool).toMatchObject({ scope: 'tier', mode: 'report', ignoreFields: ['role.connectionLimit'] });
    expect(json(await cli(['drift', 'policy', 'get', '-o', 'json']))).toEqual(
      await api('/v1/drift-policies'),
    );
  });
});

describe('tokens and audit', () => {
  it('creates a token (shown once), lists it without its value, revokes it after the typed id', async () => {
    const created = json(
      await cli(['tokens', 'create', '--name', 'cli-test', '--role', 'sales-ops', '-o', 'json']),
    );
    expect(created.token).toMatch(/^tnt_/);
    const list = await cli(['tokens', 'list', '-o', 'json']);
    expect(json(list).items.map((x: { id: string }) => x.id)).toContain(created.info.id);
    expect(list.stdout).not.toContain(created.token);
    const refused = await cli(['tokens', 'revoke', created.info.id], { input: 'tok_nope\n' });
    expect(refused.code).toBe(1);
    expect(
      (await api('/v1/tokens')).items.find((x: { id: string }) => x.id === created.info.id).revokedAt,
    ).toBeNull();
    const revoked = json(
      await cli(['tokens', 'revoke', created.info.id, '-o', 'json'], { input: `${created.info.id}\n` }),
    );
    expect(revoked.revokedAt).toEqual(expect.any(String));
    const gone = await cli(['tenants', 'list'], { token: created.token });
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain('UNAUTHENTICATED');
  });

  it("audit prints the API's records", async () => {
    const t = await onboard(s, 'pool');
    const trail = json(await cli(['audit', '--tenant', t.slug, '-o', 'json']));
    expect(trail).toEqual(await api(`/v1/audit?tenant=${t.slug}`));
    expect(trail.items.map((a: { action: string }) => a.action)).toContain('tenant.create');
  });
});

describe('errors and exit codes', () => {
  it("prints the API's code, message and request id on stderr and exits 1", async () => {
    const run = await cli(['tenants', 'get', 'no-such-tenant']);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('TENANT_NOT_FOUND: no tenant no-such-tenant');
    expect(run.stderr).toMatch(new RegExp(`request id: ${REQUEST_ID.source}`));
    const asJson = await cli(['tenants', 'get', 'no-such-tenant', '-o', 'json']);
    expect(asJson.code).toBe(1);
    expect(JSON.parse(asJson.stderr).error).toEqual({
      code: 'TENANT_NOT_FOUND',
      message: 'no tenant no-such-tenant',
      requestId: expect.stringMatching(REQUEST_ID),
    });
    const forbidden = await cli(['promote', 'no-such-tenant', '--to', 'silo', '--yes'], {
      token: s.tokens['sales-ops'],
    });
    expect(forbidden.code).toBe(1);
    expect(forbidden.stderr).toContain('FORBIDDEN: role sales-ops may not tenants:promote');
    const invalid = await cli(['tenants', 'create', 'Bad Slug', '--tier', 'pool']);
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toContain('VALIDATION_FAILED');
  });

  it('exits 2 on bad usage and without configuration', async () => {
    expect((await cli(['no-such-command'])).code).toBe(2);
    expect((await cli(['tenants', 'create', 'x-y-z', '--tier', 'gold'])).code).toBe(2);
    const unconfigured = await cli(['tenants', 'list'], { token: null });
    expect(unconfigured.code).toBe(2);
    expect(unconfigured.stderr).toContain('tenantry login');
    expect((await cli(['--help'])).code).toBe(0);
  });

  it('exits 1 when the server cannot be reached', async () => {
    const run = await cli(['tenants', 'list'], { env: { TENANTRY_URL: 'http://127.0.0.1:9' } });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('cannot reach http://127.0.0.1:9');
  });
});

describe('the token', () => {
  it('login reads it from stdin into a mode-600 profile; it is never in argv or any output', async () => {
    const token = s.tokens.sre;
    const login = await cli(['login', '--url', url], { token: null, input: `${token}\n` });
    expect(login.code, login.stderr).toBe(0);
    expect(login.stderr).toContain('as test-sre (sre)');
    const file = path.join(home, 'config', 'tenantry', 'config.yaml');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(YAML.parse(fs.readFileSync(file, 'utf8')).profiles.default).toEqual({ url, token });

    // The profile alone configures the CLI.
    const who = json(await cli(['whoami', '-o', 'json'], { token: null }));
    expect(who).toMatchObject({ name: 'test-sre', role: 'sre' });
    const listed = await cli(['tenants', 'list'], { token: null });
    expect(listed.code).toBe(0);

    // A profile others can read is refused until its mode is fixed.
    fs.chmodSync(file, 0o644);
    const open = await cli(['tenants', 'list'], { token: null });
    expect(open.code).toBe(2);
    expect(open.stderr).toContain('readable by others');
    fs.chmodSync(file, 0o600);

    // A token the server refuses is not stored.
    const bad = await cli(['login', '--url', url, '--profile', 'bad'], {
      token: null,
      input: `tnt_${rand(24)}\n`,
    });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('UNAUTHENTICATED');
    expect(YAML.parse(fs.readFileSync(file, 'utf8')).profiles.bad).toBeUndefined();

    const out = await cli(['logout'], { token: null });
    expect(out.code).toBe(0);
    expect(YAML.parse(fs.readFileSync(file, 'utf8')).profiles.default).toBeUndefined();
    expect(login.argv).not.toContain(token);
  });

  it('takes no token option, and no run of this file printed a token or had one in its argv', async () => {
    const help = await cli(['--help']);
    expect(help.stdout).not.toMatch(/--token/);
    const secrets = Object.values(s.tokens);
    const runs = printed.join('\n');
    for (const t of secrets) expect(runs).not.toContain(t);
    const watched = await cli(['tenants', 'list']);
    for (const t of secrets) expect(watched.argv).not.toContain(t);
  });
});
