import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../../control-plane/src/domain/auth.js';
import { auth, onboard, rand, startStack, type TestStack } from '../helpers/runtime.js';

/**
 * Every route × {no token, bad token, each role}: 401 without a valid token, 403 for a role
 * that lacks the permission, and never 401/403 for the role that has it.
 */
let s: TestStack;
let slug: string;
beforeAll(async () => {
  s = await startStack();
  slug = (await onboard(s, 'pool')).slug;
});
afterAll(async () => {
  await s?.close();
});

interface RouteCase {
  name: string;
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** The route as the OpenAPI document names it: every documented route must have a case. */
  path: string;
  url: () => string;
  payload?: () => object;
  headers?: () => Record<string, string>;
  allowed: Role[];
}

const ROLES: Role[] = ['sales-ops', 'sre', 'dataplane', 'admin'];
const NO_OP = `op_${'0'.repeat(28)}`;
const NO_ROLLOUT = `ro_${'0'.repeat(28)}`;
const SALES: Role[] = ['sales-ops', 'sre', 'admin'];
const SRE: Role[] = ['sre', 'admin'];
const ROUTES: RouteCase[] = [
  {
    name: 'create tenant',
    method: 'POST',
    path: '/v1/tenants',
    url: () => '/v1/tenants',
    payload: () => ({ slug: `m-${rand(4)}`, name: 'x', tier: 'pool' }),
    allowed: SALES,
  },
  { name: 'list tenants', method: 'GET', path: '/v1/tenants', url: () => '/v1/tenants', allowed: SALES },
  {
    name: 'get tenant',
    method: 'GET',
    path: '/v1/tenants/{slug}',
    url: () => `/v1/tenants/${slug}`,
    allowed: SALES,
  },
  {
    name: 'list operations',
    method: 'GET',
    path: '/v1/operations',
    url: () => '/v1/operations?limit=1',
    allowed: SALES,
  },
  {
    name: 'get operation',
    method: 'GET',
    path: '/v1/operations/{id}',
    url: () => `/v1/operations/${NO_OP}`,
    allowed: SALES,
  },
  {
    name: 'operation events',
    method: 'GET',
    path: '/v1/operations/{id}/events',
    url: () => `/v1/operations/${NO_OP}/events`,
    allowed: SALES,
  },
  {
    name: 'resume an operation',
    method: 'POST',
    path: '/v1/operations/{id}/resume',
    url: () => `/v1/operations/${NO_OP}/resume`,
    allowed: SRE,
  },
  {
    name: 'read connection',
    method: 'GET',
    path: '/v1/tenants/{slug}/connection',
    url: () => `/v1/tenants/${slug}/connection`,
    allowed: ['dataplane', 'admin'],
  },
  {
    name: 'offboard tenant',
    method: 'DELETE',
    path: '/v1/tenants/{slug}',
    url: () => '/v1/tenants/no-such-tenant',
    headers: () => ({ confirm: 'no-such-tenant' }),
    allowed: SRE,
  },
  {
    // An unknown tenant: the allowed roles get 404 without starting a real promotion.
    name: 'promote tenant',
    method: 'POST',
    path: '/v1/tenants/{slug}/promotions',
    url: () => '/v1/tenants/no-such-tenant/promotions',
    payload: () => ({ targetTier: 'bridge' }),
    allowed: SRE,
  },
  {
    name: 'roll back a promotion',
    method: 'POST',
    path: '/v1/tenants/{slug}/promotions/{operationId}/rollback',
    url: () => `/v1/tenants/${slug}/promotions/${NO_OP}/rollback`,
    allowed: SRE,
  },
  {
    // An unknown tenant: the allowed roles get 404, nothing rotates.
    name: "rotate a tenant's credentials",
    method: 'POST',
    path: '/v1/tenants/{slug}/credential-rotations',
    url: () => '/v1/tenants/no-such-tenant/credential-rotations',
    payload: () => ({}),
    allowed: SRE,
  },
  {
    name: "rotate a tenant's data key",
    method: 'POST',
    path: '/v1/tenants/{slug}/key-rotations',
    url: () => '/v1/tenants/no-such-tenant/key-rotations',
    allowed: SRE,
  },
  {
    // Enqueues a real sweep (run by this stack's worker); a second request gets the queued run.
    name: 'start a drift run',
    method: 'POST',
    path: '/v1/drift-runs',
    url: () => '/v1/drift-runs',
    allowed: SRE,
  },
  {
    name: 'list drift runs',
    method: 'GET',
    path: '/v1/drift-runs',
    url: () => '/v1/drift-runs',
    allowed: SALES,
  },
  {
    name: 'get a drift run',
    method: 'GET',
    path: '/v1/drift-runs/{id}',
    url: () => `/v1/drift-runs/dr_${'0'.repeat(28)}`,
    allowed: SALES,
  },
  {
    name: "a tenant's drift",
    method: 'GET',
    path: '/v1/tenants/{slug}/drift',
    url: () => `/v1/tenants/${slug}/drift`,
    allowed: SALES,
  },
  {
    name: 'list drift policies',
    method: 'GET',
    path: '/v1/drift-policies',
    url: () => '/v1/drift-policies',
    allowed: SALES,
  },
  {
    name: 'set a drift policy',
    method: 'PUT',
    path: '/v1/drift-policies',
    url: () => '/v1/drift-policies',
    payload: () => ({ tenant: slug, mode: 'report', ignoreFields: [] }),
    allowed: SRE,
  },
  {
    // A version the templates do not have: the allowed roles get 422 without starting a rollout.
    name: 'start a rollout',
    method: 'POST',
    path: '/v1/rollouts',
    url: () => '/v1/rollouts',
    payload: () => ({ toVersion: 99 }),
    allowed: SRE,
  },
  { name: 'list rollouts', method: 'GET', path: '/v1/rollouts', url: () => '/v1/rollouts', allowed: SALES },
  {
    name: 'get a rollout',
    method: 'GET',
    path: '/v1/rollouts/{id}',
    url: () => `/v1/rollouts/${NO_ROLLOUT}`,
    allowed: SALES,
  },
  ...(['pause', 'resume', 'cancel'] as const).map(
    (verb): RouteCase => ({
      name: `${verb} a rollout`,
      method: 'POST',
      path: `/v1/rollouts/{id}/${verb}`,
      url: () => `/v1/rollouts/${NO_ROLLOUT}/${verb}`,
      allowed: SRE,
    }),
  ),
  {
    name: "retry a rollout's tenant",
    method: 'POST',
    path: '/v1/rollouts/{id}/tenants/{slug}/retry',
    url: () => `/v1/rollouts/${NO_ROLLOUT}/tenants/${slug}/retry`,
    allowed: SRE,
  },
  { name: 'read audit', method: 'GET', path: '/v1/audit', url: () => '/v1/audit', allowed: SRE },
  { name: 'list tokens', method: 'GET', path: '/v1/tokens', url: () => '/v1/tokens', allowed: ['admin'] },
  {
    name: 'create token',
    method: 'POST',
    path: '/v1/tokens',
    url: () => '/v1/tokens',
    payload: () => ({ name: 'x', role: 'sales-ops' }),
    allowed: ['admin'],
  },
  {
    name: 'revoke token',
    method: 'DELETE',
    path: '/v1/tokens/{id}',
    url: () => `/v1/tokens/tok_${'0'.repeat(28)}`,
    allowed: ['admin'],
  },
  { name: 'who am I', method: 'GET', path: '/v1/whoami', url: () => '/v1/whoami', allowed: ROLES },
  {
    name: 'update tenant',
    method: 'PATCH',
    path: '/v1/tenants/{slug}',
    url: () => '/v1/tenants/no-such-tenant',
    headers: () => ({ 'if-match': '"1"' }),
    payload: () => ({ name: 'x' }),
    allowed: SALES,
  },
  {
    // sales-ops may suspend (for non-payment only); an unknown tenant answers 404.
    name: 'suspend tenant',
    method: 'POST',
    path: '/v1/tenants/{slug}/suspension',
    url: () => '/v1/tenants/no-such-tenant/suspension',
    payload: () => ({ reason: 'non-payment' }),
    allowed: SALES,
  },
  {
    name: 'reactivate tenant',
    method: 'DELETE',
    path: '/v1/tenants/{slug}/suspension',
    url: () => '/v1/tenants/no-such-tenant/suspension',
    allowed: SALES,
  },
  {
    name: 'export tenant',
    method: 'POST',
    path: '/v1/tenants/{slug}/exports',
    url: () => '/v1/tenants/no-such-tenant/exports',
    allowed: SRE,
  },
  {
    name: "a tenant's exports",
    method: 'GET',
    path: '/v1/tenants/{slug}/exports',
    url: () => `/v1/tenants/${slug}/exports`,
    allowed: SALES,
  },
  {
    name: 'get an export',
    method: 'GET',
    path: '/v1/exports/{id}',
    url: () => `/v1/exports/exp_${'0'.repeat(28)}`,
    allowed: SALES,
  },
  {
    name: 'download an export',
    method: 'GET',
    path: '/v1/exports/{id}/download',
    url: () => `/v1/exports/exp_${'0'.repeat(28)}/download`,
    allowed: SRE,
  },
  { name: 'list events', method: 'GET', path: '/v1/events', url: () => '/v1/events', allowed: SALES },
  {
    // A private address this stack does not allow: the allowed role gets 422, nothing registered.
    name: 'register a webhook',
    method: 'POST',
    path: '/v1/webhooks',
    url: () => '/v1/webhooks',
    payload: () => ({ url: 'http://10.0.0.1/hook', eventTypes: ['tenant.created'] }),
    allowed: ['admin'],
  },
  {
    name: 'list webhooks',
    method: 'GET',
    path: '/v1/webhooks',
    url: () => '/v1/webhooks',
    allowed: ['admin'],
  },
  {
    name: 'get a webhook',
    method: 'GET',
    path: '/v1/webhooks/{id}',
    url: () => `/v1/webhooks/wh_${'0'.repeat(28)}`,
    allowed: ['admin'],
  },
  {
    name: 'delete a webhook',
    method: 'DELETE',
    path: '/v1/webhooks/{id}',
    url: () => `/v1/webhooks/wh_${'0'.repeat(28)}`,
    allowed: ['admin'],
  },
  {
    name: "a webhook's deliveries",
    method: 'GET',
    path: '/v1/webhooks/{id}/deliveries',
    url: () => `/v1/webhooks/wh_${'0'.repeat(28)}/deliveries`,
    allowed: ['admin'],
  },
];

/** Routes that answer without a token, on purpose. */
const PUBLIC = new Set(['GET /healthz', 'GET /readyz', 'GET /metrics']);

it('covers every route of the OpenAPI document (a new route needs a case here)', async () => {
  const doc = (await s.app.inject({ method: 'GET', url: '/docs/json' })).json() as {
    paths: Record<string, Record<string, unknown>>;
  };
  const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
    Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
  );
  const covered = new Set([...ROUTES.map((r) => `${r.method} ${r.path}`), ...PUBLIC]);
  expect(documented.filter((r) => !covered.has(r))).toEqual([]);
  expect([...covered].filter((r) => !documented.includes(r))).toEqual([]);
});

describe.each(ROUTES)('$name ($method)', (route) => {
  const call = (headers: Record<string, string>) =>
    s.app.inject({
      method: route.method,
      url: route.url(),
      headers: { ...(route.headers?.() ?? {}), ...headers },
      ...(route.payload ? { payload: route.payload() } : {}),
    });

  it('answers 401 UNAUTHENTICATED without a token', async () => {
    const res = await call({});
    expect(res.statusCode).toBe(401);
    expect(res.json().error.code).toBe('UNAUTHENTICATED');
  });

  it('answers 401 for an unknown token and a malformed header', async () => {
    expect((await call(auth(`tnt_${rand(32)}`))).statusCode).toBe(401);
    expect((await call({ authorization: 'Basic YWRtaW46YWRtaW4=' })).statusCode).toBe(401);
  });

  it.each(ROLES)('role %s gets the right answer', async (role) => {
    const res = await call(auth(s.tokens[role]));
    if (route.allowed.includes(role)) {
      expect([401, 403]).not.toContain(res.statusCode);
      expect(res.statusCode).toBeLessThan(500);
    } else {
      expect(res.statusCode).toBe(403);
      expect(res.json().error.code).toBe('FORBIDDEN');
    }
  });
});

describe('tokens', () => {
  it('admin creates a token shown once, stored only as a hash; revocation takes effect at once', async () => {
    const created = await s.app.inject({
      method: 'POST',
      url: '/v1/tokens',
      headers: auth(s.tokens.admin),
      payload: { name: 'ci', role: 'sre' },
    });
    expect(created.statusCode).toBe(201);
    const { token, info } = created.json();
    expect(token).toMatch(/^tnt_/);
    const list = await s.app.inject({ method: 'GET', url: '/v1/tokens', headers: auth(s.tokens.admin) });
    expect(list.body).not.toContain(token);
    expect((await s.app.inject({ method: 'GET', url: '/v1/audit', headers: auth(token) })).statusCode).toBe(
      200,
    );
    const beforeRevoke = Date.now();
    const revoked = await s.app.inject({
      method: 'DELETE',
      url: `/v1/tokens/${info.id}`,
      headers: auth(s.tokens.admin),
    });
    const { revokedAt } = revoked.json();
    expect(revokedAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    expect(Date.parse(revokedAt)).toBeGreaterThanOrEqual(beforeRevoke);
    expect(Date.parse(revokedAt)).toBeLessThanOrEqual(Date.now());
    expect((await s.app.inject({ method: 'GET', url: '/v1/audit', headers: auth(token) })).statusCode).toBe(
      401,
    );
    const audit = await s.app.inject({
      method: 'GET',
      url: '/v1/audit?limit=1000',
      headers: auth(s.tokens.admin),
    });
    const actions = audit.json().items.map((a: { action: string }) => a.action);
    expect(actions).toEqual(expect.arrayContaining(['token.create', 'token.revoke']));
    expect(audit.body).not.toContain(token);
  });

  it('rejects an unknown role with 400', async () => {
    const res = await s.app.inject({
      method: 'POST',
      url: '/v1/tokens',
      headers: auth(s.tokens.admin),
      payload: { name: 'x', role: 'root' },
    });
    expect(res.statusCode).toBe(400);
  });
});
