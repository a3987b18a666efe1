import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliRunner, json, REQUEST_ID } from '../helpers/cli.js';
import { auth, onboard, startStack, type TestStack } from '../helpers/runtime.js';

/**
 * The `tenantry` CLI's day-two commands, run as a user runs them against a real control plane on a
 * port: tenants update / suspend / reactivate / export, credentials and keys rotate, rollouts.
 * Each is parsed from `-o json` and its exit code checked.
 */
let s: TestStack;
let url: string;
let home: string;
const { cli, printed } = cliRunner(() => ({ url, home, token: s.tokens.admin }));

const api = async (url: string, token = s.tokens.admin) =>
  (await s.app.inject({ method: 'GET', url, headers: auth(token) })).json();

beforeAll(async () => {
  s = await startStack();
  await s.app.listen({ port: 0, host: '127.0.0.1' });
  const addr = s.app.server.address();
  url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-cli2-'));
});
afterAll(async () => {
  await s?.close();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

describe('tenants update', () => {
  it('sets the name and labels with If-Match from a fresh read, and removes a label', async () => {
    const t = await onboard(s, 'pool');
    const before = await api(`/v1/tenants/${t.slug}`);
    const set = json(
      await cli(
        [
          'tenants',
          'update',
          t.slug,
          '--name',
          'Renamed Inc',
          '--plan',
          'gold',
          '--label',
          'env=prod',
          '--label',
          'team=billing',
          '-o',
          'json',
        ],
        { token: s.tokens['sales-ops'] },
      ),
    );
    expect(set.tenant).toMatchObject({
      slug: t.slug,
      name: 'Renamed Inc',
      plan: 'gold',
      labels: { env: 'prod', team: 'billing' },
      version: before.version + 1,
    });
    expect(set.operation).toBeNull();

    const removed = json(
      await cli(['tenants', 'update', t.slug, '--remove-label', 'team', '-o', 'json'], {
        token: s.tokens['sales-ops'],
      }),
    );
    expect(removed.tenant.labels).toEqual({ env: 'prod' });
    expect((await api(`/v1/tenants/${t.slug}`)).labels).toEqual({ env: 'prod' });
    const table = await cli(['tenants', 'get', t.slug]);
    expect(table.stdout).toContain('label env');

    const nothing = await cli(['tenants', 'update', t.slug]);
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toContain('nothing to change');
    const missing = await cli(['tenants', 'update', 'no-such-tenant', '--name', 'x', '-o', 'json']);
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stderr).error).toMatchObject({
      code: 'TENANT_NOT_FOUND',
      requestId: expect.stringMatching(REQUEST_ID),
    });
  });
});

describe('tenants suspend and reactivate', () => {
  it('asks for the slug, suspends a bridge tenant with --wait, and reactivates it', async () => {
    const t = await onboard(s, 'bridge');
    const wrong = await cli(['tenants', 'suspend', t.slug, '--reason', 'abuse'], {
      input: 'not-it\n',
      token: s.tokens.sre,
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain(`Type ${t.slug} to confirm`);
    expect((await api(`/v1/tenants/${t.slug}`)).status).toBe('active');

    const run = await cli(
      ['tenants', 'suspend', t.slug, '--reason', 'abuse', '--note', 'cli test', '--wait', '-o', 'json'],
      { input: `${t.slug}\n`, token: s.tokens.sre },
    );
    const suspended = json(run);
    expect(suspended.operation).toMatchObject({ kind: 'suspend', status: 'succeeded' });
    expect(suspended.tenant.suspension).toMatchObject({ reason: 'abuse', note: 'cli test' });
    for (const step of suspended.operation.steps) expect(run.stderr).toContain(`✔ ${step.name}`);
    const refused = await cli(['tenants', 'connection', t.slug], { token: s.tokens.dataplane });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('TENANT_SUSPENDED');

    const back = json(
      await cli(['tenants', 'reactivate', t.slug, '--wait', '-o', 'json'], { token: s.tokens.sre }),
    );
    expect(back.operation).toMatchObject({ kind: 'reactivate', status: 'succeeded' });
    expect(back.tenant).toMatchObject({ status: 'active', suspension: null });

    const bad = await cli(['tenants', 'suspend', t.slug, '--reason', 'boredom', '--yes']);
    expect(bad.code).toBe(2);
  });
});

describe('tenants export', () => {
  it('--download waits for the archive and streams it to the file', async () => {
    const t = await onboard(s, 'bridge');
    const file = path.join(home, `${t.slug}.tenantry.gz`);
    const run = await cli(['tenants', 'export', t.slug, '--download', file, '-o', 'json'], {
      token: s.tokens.sre,
    });
    const exp = json(run);
    expect(exp).toMatchObject({ tenantSlug: t.slug, status: 'ready' });
    const data = fs.readFileSync(file);
    expect(data.length).toBeGreaterThan(0);
    expect(data.length).toBe(exp.bytes);
    expect(createHash('sha256').update(data).digest('hex')).toBe(exp.sha256);
    expect(fs.existsSync(`${file}.part`)).toBe(false);
    expect(run.stderr).toContain(`to ${file}`);

    const started = json(await cli(['tenants', 'export', t.slug, '-o', 'json'], { token: s.tokens.sre }));
    expect(started.export).toMatchObject({ tenantSlug: t.slug, status: 'pending' });
    expect(started.operation.kind).toBe('export');
    const watched = json(await cli(['ops', 'watch', started.operation.id, '-o', 'json']));
    expect(watched.status).toBe('succeeded');

    const forbidden = await cli(['tenants', 'export', t.slug], { token: s.tokens['sales-ops'] });
    expect(forbidden.code).toBe(1);
    expect(forbidden.stderr).toContain('FORBIDDEN');
  });
});

describe('credentials and keys rotate', () => {
  it('credentials rotate --wait succeeds on a bridge tenant; keys rotate too', async () => {
    const t = await onboard(s, 'bridge');
    const run = await cli(['credentials', 'rotate', t.slug, '--grace', '60', '--wait', '-o', 'json'], {
      token: s.tokens.sre,
    });
    const rotated = json(run);
    expect(rotated.operation.status).toBe('succeeded');
    expect(rotated.tenant).toMatchObject({ slug: t.slug, status: 'active' });
    expect(run.stderr).toContain(`operation ${rotated.operation.id} succeeded`);
    const again = await cli(['credentials', 'rotate', t.slug], { token: s.tokens.sre });
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('CREDENTIALS_IN_GRACE');
    expect((await cli(['credentials', 'rotate', t.slug, '--grace', 'soon'])).code).toBe(2);

    const key = json(await cli(['keys', 'rotate', t.slug, '--wait', '-o', 'json'], { token: s.tokens.sre }));
    expect(key.operation.status).toBe('succeeded');
    expect(key.operation.id).not.toBe(rotated.operation.id);
    const accepted = json(await cli(['keys', 'rotate', t.slug, '-o', 'json'], { token: s.tokens.sre }));
    expect(accepted.operation.status).toBe('queued');
    expect(json(await cli(['ops', 'watch', accepted.operation.id, '-o', 'json'])).status).toBe('succeeded');
  });
});

describe('rollouts', () => {
  it('refuses a version the templates lack; a rollout to the current version completes; list and get', async () => {
    await onboard(s, 'pool');
    const refused = await cli(['rollouts', 'create', '--to-version', '99', '-o', 'json'], {
      token: s.tokens.sre,
    });
    expect(refused.code).toBe(1);
    expect(JSON.parse(refused.stderr).error.code).toBe('ROLLOUT_INVALID');

    const run = await cli(
      ['rollouts', 'create', '--to-version', '1', '--canary', '1', '--wait', '-o', 'json'],
      {
        token: s.tokens.sre,
      },
    );
    const done = json(run);
    expect(done).toMatchObject({ toVersion: 1, status: 'completed' });
    expect(done.waves.map((w: { name: string }) => w.name)).toEqual(['canary', 'rest']);
    expect(run.stderr).toContain(`rollout ${done.id} completed`);

    const listed = json(await cli(['rollouts', 'list', '-o', 'json']));
    expect(listed).toEqual(await api('/v1/rollouts'));
    expect(listed.items.map((r: { id: string }) => r.id)).toContain(done.id);
    const got = json(await cli(['rollouts', 'get', done.id, '-o', 'json']));
    expect(got).toEqual(await api(`/v1/rollouts/${done.id}`));
    const table = await cli(['rollouts', 'get', done.id]);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain('canary');

    const pause = await cli(['rollouts', 'pause', done.id], { token: s.tokens.sre });
    expect(pause.code).toBe(1);
    expect(pause.stderr).toContain('ROLLOUT_STATE_CONFLICT');
    const resume = await cli(['rollouts', 'resume', done.id, '-o', 'json'], { token: s.tokens.sre });
    expect(resume.code).toBe(1);
    expect(JSON.parse(resume.stderr).error.code).toBe('ROLLOUT_STATE_CONFLICT');
    const retry = await cli(['rollouts', 'retry', done.id, 'no-such-tenant', '-o', 'json'], {
      token: s.tokens.sre,
    });
    expect(retry.code).toBe(1);
    expect(JSON.parse(retry.stderr).error.code).toMatch(/^(TENANT_NOT_FOUND|ROLLOUT_STATE_CONFLICT)$/);
    const cancel = await cli(['rollouts', 'cancel', done.id, '--yes'], { token: s.tokens.sre });
    expect(cancel.code).toBe(1);
    expect(cancel.stderr).toContain('ROLLOUT_STATE_CONFLICT');
    const forbidden = await cli(['rollouts', 'create', '--to-version', '1'], {
      token: s.tokens['sales-ops'],
    });
    expect(forbidden.code).toBe(1);
    expect(forbidden.stderr).toContain('FORBIDDEN');
    expect((await cli(['rollouts', 'create', '--to-version', '1', '--waves', 'nope'])).code).toBe(2);
  });
});

describe('the token', () => {
  it('no run of this file printed one', () => {
    const runs = printed.join('\n');
    for (const t of Object.values(s.tokens)) expect(runs).not.toContain(t);
  });
});
