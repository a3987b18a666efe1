import { createHmac, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  adminUrl,
  auth,
  dropStackDatabases,
  onboard,
  rand,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';
import { freePort, isRunning, kill9, type ServerProcess, startServer } from '../helpers/server.js';

/**
 * Lifecycle events on webhooks, end to end with loopback receivers (docs/lifecycle.md): a receiver
 * that is down for a while gets every event once it is back, in order per tenant, each signed the
 * Standard Webhooks way (checked here by an implementation of the spec written in this file); a
 * webhook failing for days is disabled with an event; private and link-local URLs are refused unless
 * allowed; the secret is shown once; and a control plane killed with -9 between an event's commit and
 * its delivery loses nothing.
 */

/** The spec's verification, written here from standardwebhooks.com alone (not the code under test). */
function verifiedBySpec(secret: string, h: http.IncomingHttpHeaders, body: string): boolean {
  const id = String(h['webhook-id'] ?? '');
  const ts = String(h['webhook-timestamp'] ?? '');
  if (!id || !/^\d+$/.test(ts) || Math.abs(Date.now() / 1000 - Number(ts)) > 300) return false;
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const expected = createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest();
  return String(h['webhook-signature'] ?? '')
    .split(' ')
    .some((entry) => {
      const [v, sig] = entry.split(',');
      const got = Buffer.from(sig ?? '', 'base64');
      return v === 'v1' && got.length === expected.length && timingSafeEqual(got, expected);
    });
}

interface Received {
  id: string;
  type: string;
  seq: number;
  tenantId: string | null;
  data: Record<string, unknown>;
  signed: boolean;
}

/** A loopback receiver: `down` (nothing listens), `ok` (answers 200) or `hang` (never answers). */
class Receiver {
  readonly got: Received[] = [];
  /** Requests that arrived while hanging (never answered). */
  readonly hung: Received[] = [];
  mode: 'ok' | 'hang' = 'ok';
  /** How long an answer waits (ok mode). */
  delayMs = 0;
  secret = '';
  private server: http.Server | null = null;
  private waiters: (() => void)[] = [];
  constructor(readonly port: number) {}
  get url() {
    return `http://127.0.0.1:${this.port}/hooks`;
  }
  async up(): Promise<void> {
    this.server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        const b = JSON.parse(body) as {
          type: string;
          data: { eventId: string; seq: number; tenantId: string | null };
        };
        const r: Received = {
          id: String(req.headers['webhook-id']),
          type: b.type,
          seq: b.data.seq,
          tenantId: b.data.tenantId,
          data: b.data,
          signed: verifiedBySpec(this.secret, req.headers, body),
        };
        if (this.mode === 'hang') {
          this.hung.push(r);
        } else {
          this.got.push(r);
          setTimeout(() => res.writeHead(204).end(), this.delayMs);
        }
        for (const w of this.waiters.splice(0)) w();
      });
    });
    await new Promise<void>((resolve) => this.server?.listen(this.port, '127.0.0.1', resolve));
  }
  async down(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  /** Resolves once `cond` holds, checked on every request the receiver gets. */
  async until(cond: () => boolean): Promise<void> {
    while (!cond()) await new Promise<void>((r) => this.waiters.push(r));
  }
}

describe('webhooks (in-process control plane)', () => {
  let s: TestStack;
  beforeAll(async () => {
    s = await startStack({
      // Loopback receivers: an operator's explicit allowance (private and link-local stay refused).
      TENANTRY_WEBHOOK_ALLOWED_NETWORKS: '127.0.0.0/8',
      TENANTRY_WEBHOOK_RETRY_BASE_MS: '100',
      TENANTRY_WEBHOOK_RETRY_MAX_MS: '400',
      TENANTRY_WEBHOOK_TIMEOUT_MS: '2000',
    });
  });
  afterAll(async () => {
    await s?.close();
  });
  const admin = () => auth(s.tokens.admin);
  const register = (url: string, eventTypes: string[]) =>
    s.app.inject({ method: 'POST', url: '/v1/webhooks', headers: admin(), payload: { url, eventTypes } });
  const deliveries = async (id: string) =>
    (await s.app.inject({ method: 'GET', url: `/v1/webhooks/${id}/deliveries`, headers: admin() })).json()
      .items as {
      status: string;
      attempts: number;
      eventType: string;
      lastError: string | null;
    }[];
  /** PATCHes a tenant's plan at its current version; the answer's status. */
  async function setPlan(slug: string, plan: string): Promise<number> {
    const v = (await s.app.inject({ method: 'GET', url: `/v1/tenants/${slug}`, headers: admin() })).json()
      .version;
    const p = await s.app.inject({
      method: 'PATCH',
      url: `/v1/tenants/${slug}`,
      headers: { ...admin(), 'if-match': `"${v}"` },
      payload: { plan },
    });
    return p.statusCode;
  }
  async function untilLog(id: string, cond: (log: Awaited<ReturnType<typeof deliveries>>) => boolean) {
    while (!cond(await deliveries(id))) await new Promise((r) => setTimeout(r, 25));
  }

  it('refuses private and link-local URLs unless allowed, and shows the secret once', async () => {
    for (const url of [
      'http://10.0.0.7/hook',
      'http://169.254.169.254/latest',
      'http://[fe80::1]/x',
      'http://192.168.0.1/',
    ]) {
      const res = await register(url, ['tenant.created']);
      expect([url, res.statusCode, res.json().error.code]).toEqual([url, 422, 'WEBHOOK_URL_REFUSED']);
    }
    const ok = await register('http://127.0.0.1:9/hook', ['tenant.created']);
    expect(ok.statusCode, ok.body).toBe(201);
    const { webhook, secret } = ok.json();
    expect(secret).toMatch(/^whsec_/);
    const list = await s.app.inject({ method: 'GET', url: '/v1/webhooks', headers: admin() });
    expect(list.json().items.map((w: { id: string }) => w.id)).toContain(webhook.id);
    expect(list.body).not.toContain(secret);
    expect(list.body).not.toContain('whsec_');
    const audit = await s.app.inject({ method: 'GET', url: '/v1/audit?limit=1000', headers: admin() });
    expect(audit.body).not.toContain(secret);
    const rows = await superQuery(s.controlDb, 'SELECT * FROM webhooks WHERE id = $1', [webhook.id]);
    expect(JSON.stringify(rows)).not.toContain(secret.slice(6));
    const del = await s.app.inject({ method: 'DELETE', url: `/v1/webhooks/${webhook.id}`, headers: admin() });
    expect(del.json().status).toBe('deleted');
    expect(
      (await s.app.inject({ method: 'GET', url: `/v1/webhooks/${webhook.id}`, headers: admin() })).statusCode,
    ).toBe(404);
  });

  it('delivers each event once when jobs of the same stream run at once in one process', async () => {
    // An enqueue while a stream's job runs makes a second job, which another worker slot of the same
    // process may run beside it: the stream's lease is each run's own, so only one delivers.
    const rx = new Receiver(await freePort());
    rx.delayMs = 150;
    await rx.up();
    try {
      const res = await register(rx.url, ['tenant.created', 'tenant.activated']);
      expect(res.statusCode).toBe(201);
      rx.secret = res.json().secret;
      const hook = res.json().webhook.id as string;
      const t = await onboard(s, 'pool');
      const drive = () => s.runtime.deliverer.deliverStream(hook, t.id);
      await Promise.all([drive(), drive(), drive(), drive()]);
      await untilLog(hook, (log) => log.length === 2 && log.every((d) => d.status === 'delivered'));
      await Promise.all([drive(), drive()]);
      const mine = rx.got.filter((r) => r.tenantId === t.id);
      expect(mine.map((r) => r.type)).toEqual(['tenant.created', 'tenant.activated']);
      expect(new Set(mine.map((r) => r.id)).size).toBe(mine.length);
    } finally {
      await rx.down();
    }
  });

  it('delivers every event to a receiver that was down, once it is back, in order per tenant, signed', async () => {
    const rx = new Receiver(await freePort());
    const res = await register(rx.url, [
      'tenant.created',
      'tenant.activated',
      'tenant.updated',
      'tenant.suspended',
      'tenant.reactivated',
    ]);
    expect(res.statusCode).toBe(201);
    rx.secret = res.json().secret;
    const hook = res.json().webhook.id as string;

    // The receiver is down: its events pile up, the first of each tenant retried with backoff.
    const a = await onboard(s, 'pool');
    const b = await onboard(s, 'bridge');
    for (const plan of ['gold', 'platinum']) expect(await setPlan(a.slug, plan)).toBe(200);
    const sus = await s.app.inject({
      method: 'POST',
      url: `/v1/tenants/${a.slug}/suspension`,
      headers: admin(),
      payload: { reason: 'requested' },
    });
    await waitForOperation(s, sus.json().operation.id);
    const re = await s.app.inject({
      method: 'DELETE',
      url: `/v1/tenants/${a.slug}/suspension`,
      headers: admin(),
    });
    await waitForOperation(s, re.json().operation.id);
    await untilLog(hook, (log) => log.length === 8 && log.some((d) => d.attempts >= 3));
    const pending = await deliveries(hook);
    expect(pending.every((d) => d.status === 'pending')).toBe(true);
    expect(pending.find((d) => d.attempts >= 3)?.lastError).toMatch(/ECONNREFUSED|connect/);

    // Back up: everything arrives.
    await rx.up();
    try {
      await rx.until(() => rx.got.length >= 8);
      await untilLog(hook, (log) => log.every((d) => d.status === 'delivered'));
      const byTenant = (id: string) => rx.got.filter((r) => r.tenantId === id);
      expect(byTenant(a.id).map((r) => r.type)).toEqual([
        'tenant.created',
        'tenant.activated',
        'tenant.updated',
        'tenant.updated',
        'tenant.suspended',
        'tenant.reactivated',
      ]);
      expect(byTenant(b.id).map((r) => r.type)).toEqual(['tenant.created', 'tenant.activated']);
      for (const id of [a.id, b.id]) {
        const seqs = byTenant(id).map((r) => r.seq);
        expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
      }
      expect(new Set(rx.got.map((r) => r.id)).size).toBe(rx.got.length); // each once
      expect(rx.got.every((r) => r.signed)).toBe(true);
      expect(rx.got.find((r) => r.type === 'tenant.updated')?.data).toMatchObject({
        tenantSlug: a.slug,
        changed: ['plan'],
      });
      // The events are the ones GET /v1/events serves, under the same ids.
      const events = await s.app.inject({
        method: 'GET',
        url: `/v1/events?tenant=${a.slug}&limit=100`,
        headers: admin(),
      });
      const ids = events
        .json()
        .items.filter((e: { type: string }) => e.type.startsWith('tenant.'))
        .map((e: { id: string }) => e.id);
      expect(byTenant(a.id).map((r) => r.id)).toEqual(ids);
    } finally {
      await rx.down();
    }
  });

  it('publishes committed events on their notification, with no job per event, and what it missed while its session was gone', async () => {
    const published = async (slug: string) =>
      (
        await s.app.inject({ method: 'GET', url: `/v1/events?tenant=${slug}&limit=100`, headers: admin() })
      ).json().items as { type: string; seq: number }[];
    const until = async (slug: string, n: number) => {
      while ((await published(slug)).length < n) await new Promise((r) => setTimeout(r, 20));
    };
    const publishJobs = async () =>
      Number(
        (
          await superQuery<{ n: string }>(
            s.controlDb,
            `SELECT count(*) AS n FROM graphile_worker._private_jobs j
               JOIN graphile_worker._private_tasks t ON t.id = j.task_id WHERE t.identifier = 'events-publish'`,
          )
        )[0]?.n,
      );
    const a = await onboard(s, 'pool');
    await until(a.slug, 2);
    expect(await publishJobs()).toBe(0);
    // The listening session is cut: the next event's notification reaches nobody. The session's
    // replacement publishes what it missed on reconnect.
    const cut = await superQuery<{ pid: number }>(
      s.controlDb,
      `SELECT pg_terminate_backend(pid) AS ok, pid FROM pg_stat_activity
        WHERE datname = current_database() AND query = 'LISTEN tenantry_events'`,
    );
    expect(cut).toHaveLength(1);
    expect(await setPlan(a.slug, 'gold')).toBe(200);
    expect(await publishJobs()).toBe(0);
    await until(a.slug, 3);
    expect((await published(a.slug)).map((e) => e.type)).toEqual([
      'tenant.created',
      'tenant.activated',
      'tenant.updated',
    ]);
    const again = await superQuery(
      s.controlDb,
      `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN tenantry_events'`,
    );
    expect(again).toHaveLength(1);
  });

  it('disables a webhook failing for days, with a webhook.disabled event', async () => {
    const watcher = new Receiver(await freePort());
    await watcher.up();
    try {
      const w = await register(watcher.url, ['webhook.disabled']);
      watcher.secret = w.json().secret;
      const dead = await register(`http://127.0.0.1:${await freePort()}/gone`, ['tenant.created']);
      const deadId = dead.json().webhook.id as string;
      await onboard(s, 'pool');
      await untilLog(deadId, (log) => log.some((d) => d.attempts >= 1));
      // Its first failure was days ago (as far as the webhook's record goes).
      await superQuery(
        s.controlDb,
        `UPDATE webhooks SET failing_since = now() - interval '6 days' WHERE id = $1`,
        [deadId],
      );
      await watcher.until(() => watcher.got.some((r) => r.data.webhookId === deadId));
      const got = watcher.got.find((r) => r.data.webhookId === deadId);
      expect(got).toMatchObject({ type: 'webhook.disabled', tenantId: null, signed: true });
      const after = (
        await s.app.inject({ method: 'GET', url: `/v1/webhooks/${deadId}`, headers: admin() })
      ).json();
      expect(after).toMatchObject({
        status: 'disabled',
        disabledReason: expect.stringContaining('every delivery failed since'),
      });
      expect((await deliveries(deadId)).every((d) => d.status === 'abandoned')).toBe(true);
      const events = await s.app.inject({
        method: 'GET',
        url: '/v1/events?type=webhook.disabled',
        headers: admin(),
      });
      expect(events.json().items.map((e: { data: { webhookId: string } }) => e.data.webhookId)).toContain(
        deadId,
      );
    } finally {
      await watcher.down();
    }
  });
});

describe('webhooks across a kill -9 (real processes)', () => {
  const ADMIN = `tnt_${rand(24)}`;
  let controlDb: string;
  let dataDb: string;
  let dataDir: string;
  let child: ServerProcess | undefined;
  let port: number;
  beforeAll(async () => {
    const id = rand();
    controlDb = `cp_wh_${id}`;
    dataDb = `dp_wh_${id}`;
    await superQuery('postgres', `CREATE DATABASE ${controlDb} TEMPLATE ${inject('templateDb')}`);
    await superQuery('postgres', `CREATE DATABASE ${dataDb}`);
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-wh-'));
    port = await freePort();
  });
  afterAll(async () => {
    if (isRunning(child)) await kill9(child);
    fs.rmSync(dataDir, { recursive: true, force: true });
    if (controlDb) await dropStackDatabases(controlDb, dataDb);
  });
  const env = () => ({
    DATABASE_URL: adminUrl(controlDb),
    TENANTRY_DATAPLANE_URL: adminUrl(dataDb),
    TENANTRY_DATA_DIR: dataDir,
    TENANTRY_ADMIN_TOKEN: ADMIN,
    TENANTRY_OPERATION_LEASE_MS: '1000',
    TENANTRY_WEBHOOK_TIMEOUT_MS: '1000',
    TENANTRY_WEBHOOK_RETRY_BASE_MS: '100',
    TENANTRY_WEBHOOK_RETRY_MAX_MS: '400',
    TENANTRY_WEBHOOK_ALLOWED_NETWORKS: '127.0.0.0/8',
  });
  const api = (url: string, init: RequestInit = {}) =>
    fetch(`http://127.0.0.1:${port}${url}`, {
      ...init,
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', ...init.headers },
    });

  it('loses nothing when the process dies between the commit and the delivery', async () => {
    child = await startServer(port, env());
    const rx = new Receiver(await freePort());
    rx.mode = 'hang';
    await rx.up();
    try {
      const w = await api('/v1/webhooks', {
        method: 'POST',
        body: JSON.stringify({ url: rx.url, eventTypes: ['tenant.created', 'tenant.activated'] }),
      });
      expect(w.status).toBe(201);
      rx.secret = ((await w.json()) as { secret: string }).secret;
      const slug = `wh-${rand(3)}`;
      const created = await api('/v1/tenants', {
        method: 'POST',
        body: JSON.stringify({ slug, name: 'x', tier: 'pool' }),
      });
      expect(created.status).toBe(202);
      // The event committed with the tenant; its delivery is on the wire when the process dies, and
      // the onboarding is done (tenant.activated committed behind it): no later change will ask for a
      // delivery, so only the restarted process's recovery can deliver them.
      await rx.until(() => rx.hung.length > 0);
      const opId = ((await created.json()) as { operation: { id: string } }).operation.id;
      for (;;) {
        const op = (await (await api(`/v1/operations/${opId}`)).json()) as { status: string };
        if (op.status === 'succeeded') break;
        await new Promise((r) => setTimeout(r, 25));
      }
      await kill9(child);
      const inFlight = rx.hung[0] as Received;
      expect(inFlight.type).toBe('tenant.created');

      rx.mode = 'ok';
      child = await startServer(port, env());
      await rx.until(() => rx.got.some((r) => r.type === 'tenant.activated'));
      const types = rx.got.map((r) => r.type);
      expect(types).toEqual(['tenant.created', 'tenant.activated']);
      // The same event (its webhook-id) delivered again, signed; nothing lost.
      expect(rx.got[0]?.id).toBe(inFlight.id);
      expect(rx.got.every((r) => r.signed)).toBe(true);
    } finally {
      await rx.down();
    }
  });
});
