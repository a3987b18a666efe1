import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPERATION_KINDS } from '../../control-plane/src/domain/tenant.js';
import { auth, rand, startStack, superQuery, type TestStack } from '../helpers/runtime.js';

/**
 * GET /v1/operations: newest first, keyset-paginated with an opaque cursor, filtered by tenant, kind
 * and status. An API-only process (no worker) keeps every operation as written, so the pages are
 * facts, not races; extra operations are written straight into the control database, several with
 * one created_at, so that the order's tie-break (the id) is exercised.
 */
let s: TestStack;
const tenants: { slug: string; id: string; operationId: string }[] = [];

interface OpT {
  id: string;
  kind: string;
  status: string;
  tenantSlug: string;
  createdAt: string;
}
interface Page {
  items: OpT[];
  nextCursor: string | null;
}

const get = (url: string, token = s.tokens['sales-ops']) =>
  s.app.inject({ method: 'GET', url, headers: auth(token) });

async function create(): Promise<{ slug: string; id: string; operationId: string }> {
  const slug = `ol-${rand(3)}`;
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(s.tokens['sales-ops']),
    payload: { slug, name: slug, tier: 'pool' },
  });
  expect(res.statusCode).toBe(202);
  return { slug, id: res.json().tenant.id, operationId: res.json().operation.id };
}

/** Every page of a listing, following nextCursor to the end. */
async function walk(query: string): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const res = await get(`/v1/operations?${query}${cursor ? `&cursor=${cursor}` : ''}`);
    expect(res.statusCode, res.body).toBe(200);
    const page = res.json() as Page;
    ids.push(...page.items.map((o) => o.id));
    cursor = page.nextCursor;
    pages++;
  } while (cursor !== null && pages < 100);
  return { ids, pages };
}

/** The order the API promises, read from the table itself. */
async function expected(where = 'true', params: unknown[] = []): Promise<string[]> {
  const rows = await superQuery<{ id: string }>(
    s.controlDb,
    `SELECT o.id FROM operations o JOIN tenants t ON t.id = o.tenant_id WHERE ${where}
      ORDER BY o.created_at DESC, o.id DESC`,
    params,
  );
  return rows.map((r) => r.id);
}

beforeAll(async () => {
  s = await startStack({ TENANTRY_ROLE: 'api' });
  for (let i = 0; i < 3; i++) tenants.push(await create());
  // Finished operations of the first tenant, five of them at one instant (its onboarding stays queued).
  const [a] = tenants;
  const kinds = ['promote', 'promote', 'reconcile', 'offboard', 'reconcile'];
  const statuses = ['succeeded', 'failed', 'succeeded', 'cancelled', 'failed'];
  for (let i = 0; i < kinds.length; i++) {
    await superQuery(
      s.controlDb,
      `INSERT INTO operations (id, kind, tenant_id, status, created_at)
       VALUES ($1, $2, $3, $4, '2020-01-01T00:00:00Z')`,
      [`op_${rand(14)}`, kinds[i], a!.id, statuses[i]],
    );
  }
});
afterAll(async () => {
  await s?.close();
});

describe('GET /v1/operations', () => {
  it('pages newest first through every operation exactly once, ties on created_at broken by id', async () => {
    const all = await expected();
    expect(all.length).toBe(8);
    const { ids, pages } = await walk('limit=3');
    expect(ids).toEqual(all);
    expect(pages).toBe(3);
    const whole = (await get('/v1/operations?limit=200')).json() as Page;
    expect(whole.items.map((o) => o.id)).toEqual(all);
    expect(whole.nextCursor).toBeNull();
  });

  it('returns the API operation objects, the same as GET /v1/operations/{id}', async () => {
    const page = (await get('/v1/operations?limit=1&status=queued')).json() as Page;
    const [first] = page.items;
    const one = await get(`/v1/operations/${first!.id}`);
    expect(page.items).toEqual([one.json()]);
  });

  it('keeps its place while newer operations arrive', async () => {
    const before = await expected();
    const first = (await get('/v1/operations?limit=2')).json() as Page;
    const newer = await create();
    tenants.push(newer);
    let cursor = first.nextCursor;
    const rest: string[] = [];
    while (cursor) {
      const page = (await get(`/v1/operations?limit=2&cursor=${cursor}`)).json() as Page;
      rest.push(...page.items.map((o) => o.id));
      cursor = page.nextCursor;
    }
    expect([...first.items.map((o) => o.id), ...rest]).toEqual(before);
    expect((await expected())[0]).toBe(newer.operationId);
  });

  it('filters by tenant (slug), kind and status, repeated to take several, and pages within the filter', async () => {
    const [a, b] = tenants;
    expect((await walk(`tenant=${b!.slug}`)).ids).toEqual([b!.operationId]);
    expect((await walk(`tenant=${a!.slug}&limit=2`)).ids).toEqual(await expected('t.slug = $1', [a!.slug]));
    expect((await walk('kind=promote&limit=1')).ids).toEqual(await expected(`o.kind = 'promote'`));
    const inFlight = await walk('status=queued&status=running');
    expect(inFlight.ids).toEqual(await expected(`o.status IN ('queued', 'running')`));
    expect(inFlight.ids.length).toBe(tenants.length);
    const combined = await walk(
      `tenant=${a!.slug}&kind=reconcile&kind=offboard&status=failed&status=cancelled`,
    );
    expect(combined.ids).toEqual(
      await expected(
        `t.slug = $1 AND o.kind IN ('reconcile', 'offboard') AND o.status IN ('failed', 'cancelled')`,
        [a!.slug],
      ),
    );
    expect(combined.ids.length).toBe(2);
  });

  it('answers 404 TENANT_NOT_FOUND for an unknown tenant', async () => {
    const res = await get('/v1/operations?tenant=no-such-tenant');
    expect(res.statusCode).toBe(404);
    expect(res.json().error).toMatchObject({ code: 'TENANT_NOT_FOUND', message: 'no tenant no-such-tenant' });
  });

  it('refuses a cursor it did not hand out (a tenants cursor among them) with 400 VALIDATION_FAILED', async () => {
    const tenantsPage = (await get('/v1/tenants?limit=1')).json() as { nextCursor: string };
    // Well-formed, but naming an operation that does not exist: not read as the end of the list.
    const forged = Buffer.from(`o:op_${'0'.repeat(28)}`).toString('base64url');
    const forgedTenant = Buffer.from('t:00000000-0000-4000-8000-000000000000').toString('base64url');
    expect((await get(`/v1/tenants?cursor=${forgedTenant}`)).json().error).toMatchObject({
      code: 'VALIDATION_FAILED',
      message: 'cursor is not one this API returned',
    });
    for (const cursor of [
      'abc',
      tenantsPage.nextCursor,
      Buffer.from('o:op_zz').toString('base64url'),
      forged,
    ]) {
      const res = await get(`/v1/operations?cursor=${cursor}`);
      expect(res.statusCode).toBe(400);
      expect(res.json().error).toMatchObject({
        code: 'VALIDATION_FAILED',
        message: 'cursor is not one this API returned',
      });
    }
  });

  it('names the allowed values of a bad kind or status', async () => {
    const res = await get('/v1/operations?status=gone');
    expect(res.statusCode).toBe(400);
    expect(res.json().error.message).toBe(
      'querystring/status/0 must be one of queued, running, succeeded, failed, cancelled',
    );
    const kind = await get('/v1/operations?kind=promote&kind=explode');
    expect(kind.json().error.message).toBe(`querystring/kind/1 must be one of ${OPERATION_KINDS.join(', ')}`);
  });

  it('is readable by sales-ops, sre and admin, not by dataplane', async () => {
    for (const role of ['sales-ops', 'sre', 'admin'] as const) {
      expect((await get('/v1/operations?limit=1', s.tokens[role])).statusCode).toBe(200);
    }
    const res = await get('/v1/operations?limit=1', s.tokens.dataplane);
    expect(res.statusCode).toBe(403);
    expect(res.json().error.code).toBe('FORBIDDEN');
  });
});
