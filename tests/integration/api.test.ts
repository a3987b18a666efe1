import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import app, { serverOptions } from '../../control-plane/src/app.js';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { Db } from '../../control-plane/src/db/db.js';
import { findTenantAndAuditRead, findTenantBySlug } from '../../control-plane/src/db/repo.js';
import { loginRoleName, tenantObjectName, tenantSecretName } from '../../control-plane/src/domain/naming.js';
import { Metrics } from '../../control-plane/src/lib/metrics.js';
import { TokenCache } from '../../control-plane/src/plugins/auth.js';
import {
  auth,
  connectionOf,
  onboard,
  rand,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';
import { freePort } from '../helpers/server.js';

/** Fastify's request id (genReqId: a random UUID), the same one the request's logs carry. */
const REQUEST_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let s: TestStack;
beforeAll(async () => {
  s = await startStack();
});
afterAll(async () => {
  await s?.close();
});

const post = (token: string, payload: unknown, headers: Record<string, string> = {}) =>
  s.app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: { ...auth(token), ...headers },
    payload: payload as object,
  });

interface ErrorCase {
  url: string;
  status: number;
  code: string;
  headers?: Record<string, string>;
}

/** Sends each request and checks that it fails with exactly that status and error code. */
async function expectErrors(method: 'GET' | 'DELETE', token: string, cases: ErrorCase[]) {
  for (const c of cases) {
    const res = await s.app.inject({ method, url: c.url, headers: { ...auth(token), ...c.headers } });
    expect({ url: c.url, status: res.statusCode, code: res.json().error?.code }).toEqual({
      url: c.url,
      status: c.status,
      code: c.code,
    });
  }
}

describe('POST /v1/tenants', () => {
  it('accepts a pool tenant with 202 and provisions it to active', async () => {
    const slug = `acme-${rand(3)}`;
    const res = await post(s.tokens['sales-ops'], {
      slug,
      name: 'Acme',
      tier: 'pool',
      plan: 'gold',
      region: 'eu-west-1',
    });
    expect(res.statusCode).toBe(202);
    const body = res.json();
    expect(body.tenant).toMatchObject({
      slug,
      tier: 'pool',
      status: 'provisioning',
      plan: 'gold',
      region: 'eu-west-1',
    });
    expect(body.operation).toMatchObject({ kind: 'onboard', status: 'queued', tenantSlug: slug });
    const op = await waitForOperation(s, body.operation.id);
    expect(op.status).toBe('succeeded');
    expect(op.steps.map((x) => x.name)).toEqual(['credentials', 'pool-membership']);
    expect(op.steps.every((x) => x.status === 'succeeded')).toBe(true);
    const got = await s.app.inject({
      method: 'GET',
      url: `/v1/tenants/${slug}`,
      headers: auth(s.tokens['sales-ops']),
    });
    expect(got.json()).toMatchObject({ slug, status: 'active' });
  });

  it.each([
    ['too short', { slug: 'ab', name: 'x', tier: 'pool' }],
    ['upper case', { slug: 'Acme', name: 'x', tier: 'pool' }],
    ['sql in slug', { slug: "a'; drop table tenants; --", name: 'x', tier: 'pool' }],
    ['unknown tier', { slug: 'valid-slug', name: 'x', tier: 'gold' }],
    ['missing name', { slug: 'valid-slug', tier: 'pool' }],
    ['extra field', { slug: 'valid-slug', name: 'x', tier: 'pool', owner: 'root' }],
    ['bad email', { slug: 'valid-slug', name: 'x', tier: 'pool', contactEmail: 'not-an-email' }],
  ])('rejects %s with 400 VALIDATION_FAILED and creates nothing', async (_label, payload) => {
    const before = await superQuery<{ n: number }>(s.controlDb, 'SELECT count(*)::int AS n FROM tenants');
    const res = await post(s.tokens['sales-ops'], payload);
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({
      code: 'VALIDATION_FAILED',
      requestId: expect.stringMatching(REQUEST_ID),
    });
    const after = await superQuery<{ n: number }>(s.controlDb, 'SELECT count(*)::int AS n FROM tenants');
    expect(after[0]?.n).toBe(before[0]?.n);
  });

  it('refuses the account tier on the local target with 422 TIER_NOT_AVAILABLE_ON_TARGET, creating nothing', async () => {
    const slug = `acct-${rand(3)}`;
    const res = await post(s.tokens['sales-ops'], { slug, name: 'x', tier: 'account' });
    expect(res.statusCode).toBe(422);
    expect(res.json().error.code).toBe('TIER_NOT_AVAILABLE_ON_TARGET');
    expect(await superQuery(s.controlDb, 'SELECT 1 FROM tenants WHERE slug = $1', [slug])).toHaveLength(0);
  });

  it('answers a duplicate slug with 409 TENANT_SLUG_TAKEN', async () => {
    const slug = `dup-${rand(3)}`;
    expect((await post(s.tokens['sales-ops'], { slug, name: 'x', tier: 'pool' })).statusCode).toBe(202);
    const res = await post(s.tokens['sales-ops'], { slug, name: 'y', tier: 'bridge' });
    expect(res.statusCode).toBe(409);
    expect(res.json().error.code).toBe('TENANT_SLUG_TAKEN');
  });

  it('replays the original response for the same Idempotency-Key and body, and 422s a different body', async () => {
    const slug = `idem-${rand(3)}`;
    const key = `k-${rand()}`;
    const first = await post(
      s.tokens['sales-ops'],
      { slug, name: 'x', tier: 'pool' },
      { 'idempotency-key': key },
    );
    const again = await post(
      s.tokens['sales-ops'],
      { tier: 'pool', name: 'x', slug },
      { 'idempotency-key': key },
    );
    expect(first.statusCode).toBe(202);
    expect(again.statusCode).toBe(202);
    expect(again.json()).toEqual(first.json());
    expect(again.headers['idempotent-replayed']).toBe('true');
    const other = await post(
      s.tokens['sales-ops'],
      { slug, name: 'changed', tier: 'pool' },
      { 'idempotency-key': key },
    );
    expect(other.statusCode).toBe(422);
    expect(other.json().error.code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(await superQuery(s.controlDb, 'SELECT 1 FROM tenants WHERE slug = $1', [slug])).toHaveLength(1);
  });

  it('creates exactly one tenant when the same Idempotency-Key races', async () => {
    const slug = `race-${rand(3)}`;
    const key = `k-${rand()}`;
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        post(s.tokens['sales-ops'], { slug, name: 'x', tier: 'pool' }, { 'idempotency-key': key }),
      ),
    );
    expect(results.map((r) => r.statusCode)).toEqual([202, 202, 202, 202, 202]);
    expect(new Set(results.map((r) => r.json().tenant.id)).size).toBe(1);
  });
});

describe('GET /v1/tenants', () => {
  it('filters by tier and status and paginates with a cursor', async () => {
    const slugs = [];
    for (let i = 0; i < 3; i++) slugs.push((await onboard(s, 'bridge')).slug);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const url: string = `/v1/tenants?tier=bridge&status=active&limit=2${cursor ? `&cursor=${cursor}` : ''}`;
      const res = await s.app.inject({ method: 'GET', url, headers: auth(s.tokens['sales-ops']) });
      expect(res.statusCode).toBe(200);
      const page = res.json();
      expect(page.items.length).toBeLessThanOrEqual(2);
      for (const t of page.items) {
        expect(t).toMatchObject({ tier: 'bridge', status: 'active' });
        seen.push(t.slug);
      }
      cursor = page.nextCursor;
    } while (cursor);
    for (const slug of slugs) expect(seen).toContain(slug);
    expect(new Set(seen).size).toBe(seen.length);
  });

  it('renders each tenant, in a page and alone, exactly as its row reads, whatever its fields hold', async () => {
    // Both reads take the tenant as JSON Postgres renders (db/repo.ts TENANT_JSON). Odd values in every
    // kind of column must come out as the row read through pg's own parsers (findTenantBySlug) gives them.
    const run = rand(4);
    const cases = [
      { at: '2026-01-02 03:04:05+00', iso: '2026-01-02T03:04:05.000Z', region: null, suspension: null },
      {
        at: '2026-01-02 03:04:05.1+00',
        iso: '2026-01-02T03:04:05.100Z',
        region: 'eu-west-1',
        suspension: {
          reason: 'billing',
          note: 'say "why"\n\u0001',
          at: '2026-01-03T00:00:00.000Z',
          by: null,
        },
      },
      { at: '2026-01-02 23:59:59.123999-05', iso: '2026-01-03T04:59:59.123Z', region: 'Ω', suspension: null },
    ];
    const tenants = [];
    for (const [i, c] of cases.entries()) {
      const t = await onboard(s, 'pool');
      await superQuery(
        s.controlDb,
        `UPDATE tenants SET name = $2, region = $3, plan = NULL, contact_email = 'a"b@example.com', labels = $4,
                limits = $5, suspension = $6, created_at = $7, updated_at = $7 WHERE slug = $1`,
        [
          t.slug,
          `Ünïcode "quoted" \\ back\tslash ${i} 🚀`,
          c.region,
          JSON.stringify({ case: run, 'billing/tier': `t"${i}` }),
          JSON.stringify(i === 1 ? { connectionLimit: 5, statementTimeoutMs: 1000 } : {}),
          c.suspension && JSON.stringify(c.suspension),
          c.at,
        ],
      );
      tenants.push({ slug: t.slug, iso: c.iso });
    }
    const get = async (url: string) => {
      const res = await s.app.inject({ method: 'GET', url, headers: auth(s.tokens.sre) });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
      return res.json();
    };
    // Through the label filter (a statement planned per call), then the whole fleet page by page
    // (the prepared one).
    const filtered = (await get(`/v1/tenants?label=case=${run}&limit=10`)).items;
    const walked: { slug: string }[] = [];
    let cursor: string | null = null;
    do {
      const page = await get(`/v1/tenants?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      walked.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor);
    expect(new Set(walked.map((t) => t.slug)).size).toBe(walked.length);
    for (const { slug, iso } of tenants) {
      const { activeOperation: _a, promotion: _p, ...one } = await get(`/v1/tenants/${slug}`);
      expect(one.createdAt).toBe(iso);
      const row = await findTenantBySlug(s.runtime.services.db, slug);
      expect(one).toEqual(JSON.parse(JSON.stringify(row)));
      expect(filtered.find((t: { slug: string }) => t.slug === slug)).toEqual(one);
      expect(walked.find((t) => t.slug === slug)).toEqual(one);
    }
  });

  it('rejects a forged cursor with 400', async () => {
    const res = await s.app.inject({
      method: 'GET',
      url: '/v1/tenants?cursor=bm9wZQ',
      headers: auth(s.tokens.sre),
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('VALIDATION_FAILED');
  });

  it('answers an unknown tenant with 404 TENANT_NOT_FOUND', async () => {
    const res = await s.app.inject({
      method: 'GET',
      url: '/v1/tenants/no-such-tenant',
      headers: auth(s.tokens.sre),
    });
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('TENANT_NOT_FOUND');
  });

  // GET /v1/tenants/{slug} is a statement each connection prepares once (db/repo.ts TENANT_DETAIL). A
  // prepared `SELECT t.*` fails with "cached plan must not change result type" once a column is
  // added; its named columns do not, so a migration adding one never breaks a running process.
  it('still answers every connection of the pool after a column is added to tenants', async () => {
    const t = await onboard(s, 'pool');
    const getAll = async () => {
      const res = await Promise.all(
        Array.from({ length: 20 }, () =>
          s.app.inject({ method: 'GET', url: `/v1/tenants/${t.slug}`, headers: auth(s.tokens.sre) }),
        ),
      );
      return res.map((r) => [r.statusCode, r.json().slug]);
    };
    const ok = Array.from({ length: 20 }, () => [200, t.slug]);
    expect(await getAll()).toEqual(ok);
    await superQuery(s.controlDb, 'ALTER TABLE tenants ADD COLUMN test_added_later text');
    try {
      expect(await getAll()).toEqual(ok);
    } finally {
      await superQuery(s.controlDb, 'ALTER TABLE tenants DROP COLUMN test_added_later');
    }
    expect(await getAll()).toEqual(ok);
  });

  it('answers a malformed slug with 400 VALIDATION_FAILED', async () => {
    await expectErrors(
      'GET',
      s.tokens.sre,
      ['AB', 'has_underscore', `a${'b'.repeat(40)}`].map((slug) => ({
        url: `/v1/tenants/${slug}`,
        status: 400,
        code: 'VALIDATION_FAILED',
      })),
    );
  });
});

describe('operations', () => {
  it('answers an unknown operation with 404 and a malformed id with 400', async () => {
    const missing = await s.app.inject({
      method: 'GET',
      url: `/v1/operations/op_${'0'.repeat(28)}`,
      headers: auth(s.tokens.sre),
    });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error.code).toBe('OPERATION_NOT_FOUND');
    const bad = await s.app.inject({
      method: 'GET',
      url: '/v1/operations/nope',
      headers: auth(s.tokens.sre),
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.code).toBe('VALIDATION_FAILED');
  });

  it('answers the event stream of an unknown operation with 404 and of a malformed id with 400, before streaming', async () => {
    await expectErrors('GET', s.tokens.sre, [
      { url: `/v1/operations/op_${'0'.repeat(28)}/events`, status: 404, code: 'OPERATION_NOT_FOUND' },
      { url: '/v1/operations/op_nope/events', status: 400, code: 'VALIDATION_FAILED' },
    ]);
  });

  it('streams step progress as server-sent events until the operation ends', async () => {
    const res = await post(s.tokens['sales-ops'], { slug: `sse-${rand(3)}`, name: 'x', tier: 'bridge' });
    const opId = res.json().operation.id;
    const events = await s.app.inject({
      method: 'GET',
      url: `/v1/operations/${opId}/events`,
      headers: auth(s.tokens.sre),
    });
    expect(events.statusCode).toBe(200);
    expect(events.headers['content-type']).toContain('text/event-stream');
    const names = [...events.body.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    expect(names.at(-1)).toBe('end');
    const end = JSON.parse(
      events.body
        .trim()
        .split('\n')
        .at(-1)!
        .replace(/^data: /, ''),
    );
    expect(end.status).toBe('succeeded');
    for (const step of ['credentials', 'role', 'schema']) {
      expect(events.body).toContain(`"name":"${step}","status":"succeeded"`);
    }
  });
});

describe('DELETE /v1/tenants/{slug}', () => {
  it('requires the Confirm header to match the slug', async () => {
    const { slug } = await onboard(s, 'pool');
    for (const headers of [{}, { confirm: 'other' }]) {
      const res = await s.app.inject({
        method: 'DELETE',
        url: `/v1/tenants/${slug}`,
        headers: { ...auth(s.tokens.sre), ...headers },
      });
      expect(res.statusCode).toBe(400);
      expect(res.json().error.code).toBe('CONFIRMATION_REQUIRED');
    }
  });

  it('answers an unknown tenant with 404 TENANT_NOT_FOUND and a malformed slug with 400', async () => {
    await expectErrors('DELETE', s.tokens.sre, [
      {
        url: '/v1/tenants/no-such-tenant',
        headers: { confirm: 'no-such-tenant' },
        status: 404,
        code: 'TENANT_NOT_FOUND',
      },
      {
        url: '/v1/tenants/Not_A_Slug',
        headers: { confirm: 'Not_A_Slug' },
        status: 400,
        code: 'VALIDATION_FAILED',
      },
    ]);
  });

  it.each(['pool', 'bridge', 'silo'] as const)(
    'offboards a %s tenant: removes its data, objects, role and key, keeps its audit trail',
    async (tier) => {
      const t = await onboard(s, tier);
      await connectionOf(s, t.slug);
      const res = await s.app.inject({
        method: 'DELETE',
        url: `/v1/tenants/${t.slug}`,
        headers: { ...auth(s.tokens.sre), confirm: t.slug },
      });
      expect(res.statusCode).toBe(202);
      const op = await waitForOperation(s, res.json().operation.id);
      expect(op.status).toBe('succeeded');
      const name = tenantObjectName(t.slug);
      expect(await superQuery(s.dataDb, 'SELECT 1 FROM pg_roles WHERE rolname = $1', [name])).toHaveLength(0);
      expect(
        await superQuery(s.dataDb, 'SELECT 1 FROM pg_namespace WHERE nspname = $1', [name]),
      ).toHaveLength(0);
      expect(
        await superQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [name]),
      ).toHaveLength(0);
      expect(
        await superQuery(s.dataDb, 'SELECT 1 FROM tenantry_meta.pool_members WHERE tenant_id = $1', [t.id]),
      ).toHaveLength(0);
      const key = await superQuery<{ state: string; wrapped_key: Buffer | null }>(
        s.controlDb,
        'SELECT state, wrapped_key FROM local_keys WHERE tenant_id = $1',
        [t.id],
      );
      expect(key).toEqual([{ state: 'destroyed', wrapped_key: null }]);
      expect(
        await superQuery(s.controlDb, 'SELECT 1 FROM local_secrets WHERE name = $1', [
          tenantSecretName(t.slug),
        ]),
      ).toHaveLength(0);
      const got = await s.app.inject({
        method: 'GET',
        url: `/v1/tenants/${t.slug}`,
        headers: auth(s.tokens.sre),
      });
      expect(got.json().status).toBe('offboarded');
      const audit = await s.app.inject({
        method: 'GET',
        url: `/v1/audit?tenant=${t.slug}`,
        headers: auth(s.tokens.sre),
      });
      const actions = audit.json().items.map((a: { action: string }) => a.action);
      expect(actions).toEqual(
        expect.arrayContaining([
          'tenant.create',
          'operation.onboard.succeeded',
          'tenant.connection.read',
          'tenant.offboard',
          'operation.offboard.succeeded',
        ]),
      );
    },
  );

  it('deletes only the offboarded pool tenant rows, in batches, leaving other pool tenants intact', async () => {
    const a = await onboard(s, 'pool');
    const b = await onboard(s, 'pool');
    for (const t of [a, b]) {
      await superQuery(
        s.dataDb,
        `INSERT INTO pool.settings (tenant_id, key, value) SELECT $1, 'k' || g, '{}'::jsonb FROM generate_series(1, 2500) g`,
        [t.id],
      );
    }
    const res = await s.app.inject({
      method: 'DELETE',
      url: `/v1/tenants/${a.slug}`,
      headers: { ...auth(s.tokens.sre), confirm: a.slug },
    });
    expect((await waitForOperation(s, res.json().operation.id)).status).toBe('succeeded');
    const counts = await superQuery<{ tenant_id: string; n: number }>(
      s.dataDb,
      'SELECT tenant_id, count(*)::int AS n FROM pool.settings WHERE tenant_id = ANY($1::uuid[]) GROUP BY 1',
      [[a.id, b.id]],
    );
    expect(counts).toEqual([{ tenant_id: b.id, n: 2500 }]);
  });
});

describe('connection descriptor', () => {
  it.each(['pool', 'bridge', 'silo'] as const)('has the %s shape', async (tier) => {
    const t = await onboard(s, tier);
    const d = await connectionOf(s, t.slug);
    const name = tenantObjectName(t.slug);
    const dp = new URL(s.config.dataplaneUrl!);
    const names = dataPlaneNames(s.dataDb);
    const placement = {
      pool: {
        database: names.database,
        schema: names.poolSchema,
        user: names.poolRole,
        tenantSetting: names.tenantSetting,
      },
      // A tenant logs in as the first of its two logins (its group, `name`, holds the grants).
      bridge: { database: names.database, schema: name, user: loginRoleName(name, 'a') },
      silo: { database: name, schema: names.siloSchema, user: loginRoleName(name, 'a') },
    }[tier];
    // Exact key set: pool alone carries tenantSetting; the local target includes the password.
    expect(d).toEqual({
      tenantId: t.id,
      tier,
      host: dp.hostname,
      port: Number(dp.port),
      ...placement,
      password: expect.stringMatching(/^[A-Za-z0-9_-]{32}$/),
      secretRef: `local-secret://${tenantSecretName(t.slug)}`,
    });
    if (tier !== 'pool') expect(d).not.toHaveProperty('tenantSetting');
  });

  it('answers an unknown tenant with 404 TENANT_NOT_FOUND and a malformed slug with 400', async () => {
    await expectErrors('GET', s.tokens.dataplane, [
      { url: '/v1/tenants/no-such-tenant/connection', status: 404, code: 'TENANT_NOT_FOUND' },
      { url: '/v1/tenants/x/connection', status: 400, code: 'VALIDATION_FAILED' },
    ]);
  });

  it('is audited in the same transaction as the read', async () => {
    const t = await onboard(s, 'bridge');
    const before = await superQuery<{ n: number }>(
      s.controlDb,
      `SELECT count(*)::int AS n FROM audit_log WHERE action = 'tenant.connection.read' AND tenant_id = $1`,
      [t.id],
    );
    const res = await s.app.inject({
      method: 'GET',
      url: `/v1/tenants/${t.slug}/connection`,
      headers: auth(s.tokens.dataplane),
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const after = await superQuery<{ n: number; actor_name: string; role: string; request_id: string }>(
      s.controlDb,
      `SELECT count(*) OVER ()::int AS n, actor_name, role, request_id FROM audit_log WHERE action = 'tenant.connection.read' AND tenant_id = $1 ORDER BY id DESC LIMIT 1`,
      [t.id],
    );
    expect(after[0]!.n).toBe(before[0]!.n + 1);
    expect(after[0]).toMatchObject({ actor_name: 'test-dataplane', role: 'dataplane' });
    expect(after[0]!.request_id).toMatch(REQUEST_ID);
  });

  it('writes the audit record in the re-read only for the same tenant, still active', async () => {
    const t = await onboard(s, 'pool');
    const db = s.runtime.services.db;
    const entry = {
      actor: { id: null, name: 'test-reread', role: 'dataplane' },
      action: 'test.connection.reread',
      tenantId: t.id,
      tenantSlug: t.slug,
      details: { secretRef: 'local-secret://x' },
    };
    const records = async () =>
      superQuery<{ tenant_id: string; actor_name: string; details: unknown }>(
        s.controlDb,
        `SELECT tenant_id, actor_name, details FROM audit_log WHERE action = 'test.connection.reread' AND tenant_slug = $1`,
        [t.slug],
      );
    const same = await findTenantAndAuditRead(db, t.slug, t.id, entry);
    expect(same.audited).toBe(true);
    expect(same.tenant).toEqual(await findTenantBySlug(db, t.slug));
    expect(await records()).toEqual([
      { tenant_id: t.id, actor_name: 'test-reread', details: { secretRef: 'local-secret://x' } },
    ]);
    // Another tenant id under the slug (offboarded and created again between the two reads): no record.
    const other = await findTenantAndAuditRead(db, t.slug, '00000000-0000-4000-8000-000000000000', entry);
    expect(other).toMatchObject({ audited: false, tenant: { id: t.id } });
    // No longer active: no record either, and the caller sees the status it refuses.
    await superQuery(s.controlDb, `UPDATE tenants SET status = 'suspended' WHERE id = $1`, [t.id]);
    try {
      const suspended = await findTenantAndAuditRead(db, t.slug, t.id, entry);
      expect(suspended).toMatchObject({ audited: false, tenant: { id: t.id, status: 'suspended' } });
    } finally {
      await superQuery(s.controlDb, `UPDATE tenants SET status = 'active' WHERE id = $1`, [t.id]);
    }
    expect(await findTenantAndAuditRead(db, 'no-such-tenant', t.id, entry)).toEqual({
      tenant: null,
      audited: false,
    });
    expect(await records()).toHaveLength(1);
  });
});

describe('GET /v1/audit', () => {
  const audit = async (query: string) => {
    const res = await s.app.inject({ method: 'GET', url: `/v1/audit?${query}`, headers: auth(s.tokens.sre) });
    expect(res.statusCode, query).toBe(200);
    return res.json() as {
      tenant?: { id: string; slug: string; status: string };
      items: { tenantId: string; action: string }[];
    };
  };

  it('keeps the trails of two tenants that shared a slug apart: ?tenant= is the current one, ?tenantId= any', async () => {
    const first = await onboard(s, 'pool');
    const off = await s.app.inject({
      method: 'DELETE',
      url: `/v1/tenants/${first.slug}`,
      headers: { ...auth(s.tokens.sre), confirm: first.slug },
    });
    expect((await waitForOperation(s, off.json().operation.id)).status).toBe('succeeded');
    const second = await onboard(s, 'bridge', first.slug); // the slug is free again
    expect(second.id).not.toBe(first.id);
    await connectionOf(s, second.slug);

    const current = await audit(`tenant=${first.slug}&limit=1000`);
    expect(current.tenant).toMatchObject({ id: second.id, slug: first.slug, status: 'active' });
    expect(new Set(current.items.map((a) => a.tenantId))).toEqual(new Set([second.id]));
    expect(current.items.map((a) => a.action)).toEqual(
      expect.arrayContaining(['tenant.create', 'operation.onboard.succeeded', 'tenant.connection.read']),
    );
    expect(current.items.map((a) => a.action)).not.toContain('tenant.offboard');

    const earlier = await audit(`tenantId=${first.id}&limit=1000`);
    expect(earlier.tenant).toMatchObject({ id: first.id, slug: first.slug, status: 'offboarded' });
    expect(new Set(earlier.items.map((a) => a.tenantId))).toEqual(new Set([first.id]));
    expect(earlier.items.map((a) => a.action)).toEqual(
      expect.arrayContaining(['tenant.create', 'tenant.offboard', 'operation.offboard.succeeded']),
    );
  });

  it('answers a bad filter with 400 and an unknown tenant with 404', async () => {
    const id = '00000000-0000-4000-8000-000000000000';
    await expectErrors('GET', s.tokens.sre, [
      { url: '/v1/audit?tenant=Not_A_Slug', status: 400, code: 'VALIDATION_FAILED' },
      { url: '/v1/audit?tenantId=nope', status: 400, code: 'VALIDATION_FAILED' },
      { url: '/v1/audit?limit=0', status: 400, code: 'VALIDATION_FAILED' },
      { url: '/v1/audit?after=-1', status: 400, code: 'VALIDATION_FAILED' },
      { url: `/v1/audit?tenant=some-slug&tenantId=${id}`, status: 400, code: 'VALIDATION_FAILED' },
      { url: '/v1/audit?tenant=no-such-tenant', status: 404, code: 'TENANT_NOT_FOUND' },
      { url: `/v1/audit?tenantId=${id}`, status: 404, code: 'TENANT_NOT_FOUND' },
    ]);
  });
});

describe('DELETE /v1/tokens/{id}', () => {
  it('answers an unknown token id with 404 TOKEN_NOT_FOUND and a malformed one with 400', async () => {
    await expectErrors('DELETE', s.tokens.admin, [
      { url: `/v1/tokens/tok_${'0'.repeat(28)}`, status: 404, code: 'TOKEN_NOT_FOUND' },
      { url: '/v1/tokens/not-a-token-id', status: 400, code: 'VALIDATION_FAILED' },
    ]);
  });
});

describe('service endpoints', () => {
  it('reports health', async () => {
    const res = await s.app.inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ok', target: 'local' });
  });

  it('answers 503 DATABASE_UNAVAILABLE (not 500) when the control database is unreachable', async () => {
    const port = await freePort(); // nothing listens there
    const db = new Db(`postgres://nobody@127.0.0.1:${port}/nowhere`, 1);
    const down = Fastify({ ...serverOptions, logger: false });
    await down.register(app, {
      services: { ...s.runtime.services, db, metrics: new Metrics(db), tokenCache: new TokenCache(db) },
    });
    try {
      for (const req of [
        { method: 'GET' as const, url: '/healthz', headers: {} },
        { method: 'GET' as const, url: '/metrics', headers: {} },
        // The token lookup itself needs the database.
        { method: 'GET' as const, url: '/v1/tenants', headers: auth(s.tokens['sales-ops']) },
      ]) {
        const res = await down.inject(req);
        expect(res.statusCode, req.url).toBe(503);
        expect(res.json().error).toMatchObject({
          code: 'DATABASE_UNAVAILABLE',
          requestId: expect.stringMatching(REQUEST_ID),
        });
        // No internals echoed (in the message: the random request id could hold the port's digits).
        expect(res.json().error.message).not.toContain(String(port));
        expect(res.body).not.toContain('ECONNREFUSED');
      }
    } finally {
      await down.close();
      await db.close();
    }
  });

  it('exposes Prometheus metrics for operations, step durations and tenants', async () => {
    await onboard(s, 'pool');
    const res = await s.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.body).toMatch(/tenantry_operations_total\{kind="onboard",status="succeeded"\} \d+/);
    expect(res.body).toMatch(/tenantry_operation_step_duration_seconds_bucket\{[^}]*step="pool-membership"/);
    expect(res.body).toMatch(/tenantry_tenants\{tier="pool",status="active"\} \d+/);
    expect(res.body).toMatch(/tenantry_operations\{kind="onboard",status="succeeded"\} \d+/);
    // The process's own health, for memory and event-loop alerts.
    expect(res.body).toMatch(/^process_resident_memory_bytes \d+/m);
    expect(res.body).toMatch(/^nodejs_heap_size_used_bytes \d+/m);
    expect(res.body).toMatch(/^nodejs_eventloop_lag_seconds /m);
  });

  it('serves the OpenAPI document at /docs with every route', async () => {
    const res = await s.app.inject({ method: 'GET', url: '/docs/json' });
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(doc.openapi).toMatch(/^3\./);
    for (const p of [
      '/v1/tenants',
      '/v1/tenants/{slug}',
      '/v1/tenants/{slug}/connection',
      '/v1/operations/{id}',
      '/v1/operations/{id}/events',
      '/v1/tokens',
      '/v1/tokens/{id}',
      '/v1/audit',
      '/healthz',
      '/metrics',
    ]) {
      expect(Object.keys(doc.paths)).toContain(p);
    }
    // Every operation documents the server-side failures it can answer with.
    for (const [p, ops] of Object.entries(
      doc.paths as Record<string, Record<string, { responses: object }>>,
    )) {
      if (p.startsWith('/docs')) continue;
      for (const [method, op] of Object.entries(ops)) {
        expect(Object.keys(op.responses), `${method} ${p}`).toEqual(expect.arrayContaining(['500', '503']));
      }
    }
  });

  it('answers an unknown route with 404 ROUTE_NOT_FOUND in the error shape', async () => {
    const res = await s.app.inject({ method: 'GET', url: '/v1/nope' });
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('ROUTE_NOT_FOUND');
  });
});

/**
 * An API-only process (TENANTRY_ROLE=api): nothing runs the queue, so every accepted operation
 * stays queued. That makes "an operation is in flight" a fact rather than a race.
 */
describe('with operations in flight (API-only process, no worker)', () => {
  let api: TestStack;
  beforeAll(async () => {
    api = await startStack({ TENANTRY_ROLE: 'api' });
  });
  afterAll(async () => {
    await api?.close();
  });

  const create = async (tier: 'pool' | 'bridge' | 'silo') => {
    const slug = `fl-${tier}-${rand(3)}`;
    const res = await api.app.inject({
      method: 'POST',
      url: '/v1/tenants',
      headers: auth(api.tokens['sales-ops']),
      payload: { slug, name: 'x', tier },
    });
    expect(res.statusCode).toBe(202);
    return { slug, operationId: res.json().operation.id as string };
  };

  it('refuses an offboarding or a promotion with 409 OPERATION_IN_PROGRESS, leaving one operation active', async () => {
    const { slug, operationId } = await create('pool');
    const off = await api.app.inject({
      method: 'DELETE',
      url: `/v1/tenants/${slug}`,
      headers: { ...auth(api.tokens.sre), confirm: slug },
    });
    expect(off.statusCode).toBe(409);
    expect(off.json().error.code).toBe('OPERATION_IN_PROGRESS');
    const promo = await api.app.inject({
      method: 'POST',
      url: `/v1/tenants/${slug}/promotions`,
      headers: auth(api.tokens.sre),
      payload: { targetTier: 'bridge' },
    });
    expect(promo.statusCode).toBe(409);
    expect(promo.json().error.code).toBe('OPERATION_IN_PROGRESS');
    const ops = await superQuery<{ id: string; status: string }>(
      api.controlDb,
      'SELECT o.id, o.status FROM operations o JOIN tenants t ON t.id = o.tenant_id WHERE t.slug = $1',
      [slug],
    );
    expect(ops).toEqual([{ id: operationId, status: 'queued' }]);
    const tenant = await api.app.inject({
      method: 'GET',
      url: `/v1/tenants/${slug}`,
      headers: auth(api.tokens.sre),
    });
    expect(tenant.json().status).toBe('provisioning');
  });

  it('refuses the connection descriptor with 409 TENANT_NOT_ACTIVE while provisioning, and audits nothing', async () => {
    const { slug } = await create('silo');
    const res = await api.app.inject({
      method: 'GET',
      url: `/v1/tenants/${slug}/connection`,
      headers: auth(api.tokens.dataplane),
    });
    expect(res.statusCode).toBe(409);
    expect(res.json().error.code).toBe('TENANT_NOT_ACTIVE');
    expect(
      await superQuery(
        api.controlDb,
        `SELECT 1 FROM audit_log WHERE action = 'tenant.connection.read' AND tenant_slug = $1`,
        [slug],
      ),
    ).toHaveLength(0);
  });

  it('exports tenantry_operations{kind,status} read from the database, queued ones included', async () => {
    await create('bridge');
    const res = await api.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    const [row] = await superQuery<{ n: number }>(
      api.controlDb,
      `SELECT count(*)::int AS n FROM operations WHERE kind = 'onboard' AND status = 'queued'`,
    );
    expect(row!.n).toBeGreaterThan(0);
    expect(res.body).toContain(`tenantry_operations{kind="onboard",status="queued"} ${row!.n}\n`);
    expect(res.body).toContain('tenantry_operations{kind="offboard",status="running"} 0\n');
    // Nothing finished in this process: the worker-fed counter has no samples.
    expect(res.body).not.toMatch(/^tenantry_operations_total\{/m);
  });
});
