import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth, rand, startStack, superQuery, type TestStack } from '../helpers/runtime.js';

/**
 * GET /v1/operations/{id}/events sends the operation's progress as a `progress` event (what the CLI's
 * --wait shows for a promotion: rows copied, lag, freeze, cutover, rollback deadline), without the
 * resource list, which has its own events. An API-only process keeps each operation as written.
 */
let s: TestStack;
let tenantId: string;
beforeAll(async () => {
  s = await startStack({ TENANTRY_ROLE: 'api' });
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(s.tokens['sales-ops']),
    payload: { slug: `ev-${rand(3)}`, name: 'events', tier: 'pool' },
  });
  tenantId = res.json().tenant.id;
});
afterAll(async () => {
  await s?.close();
});

async function operation(progress: Record<string, unknown>): Promise<string> {
  const id = `op_${rand(14)}`;
  const steps = [{ name: 'copy', status: 'succeeded', startedAt: null, finishedAt: null }];
  await superQuery(
    s.controlDb,
    `INSERT INTO operations (id, kind, tenant_id, status, steps, params, progress)
     VALUES ($1, 'promote', $2, 'succeeded', $3::jsonb, '{"fromTier": "pool", "toTier": "bridge"}', $4::jsonb)`,
    [id, tenantId, JSON.stringify(steps), JSON.stringify(progress)],
  );
  return id;
}

const events = async (id: string) => {
  const res = await s.app.inject({
    method: 'GET',
    url: `/v1/operations/${id}/events`,
    headers: auth(s.tokens.sre),
  });
  expect(res.statusCode).toBe(200);
  return [...res.body.matchAll(/^event: (\w+)\ndata: (.*)$/gm)].map((m) => ({
    event: m[1],
    data: JSON.parse(m[2]!),
  }));
};

describe('GET /v1/operations/{id}/events', () => {
  it("sends the operation's progress, without its resource list, between its steps and its end", async () => {
    const progress = {
      rowsCopied: { users: 3, documents: 1 },
      replicationLagBytes: 0,
      writeFreezeMs: 120,
      cutoverAt: '2030-01-01T00:00:00.000Z',
      rollbackUntil: '2030-01-01T00:10:00.000Z',
    };
    const resources = [
      { step: 'copy', resource: 'r', action: 'create', status: 'succeeded', at: '2030-01-01T00:00:00Z' },
    ];
    const id = await operation({ ...progress, resources });
    const got = await events(id);
    expect(got.map((e) => e.event)).toEqual(['step', 'progress', 'resource', 'end']);
    expect(got[1]!.data).toEqual({ operationId: id, currentStep: null, progress });
    expect(got[3]!.data.progress).toEqual({ ...progress, resources });
    // `end` is the operation as GET /v1/operations/{id} answers it, field for field.
    const read = await s.app.inject({
      method: 'GET',
      url: `/v1/operations/${id}`,
      headers: auth(s.tokens.sre),
    });
    expect(got[3]!.data).toEqual(read.json());
    expect(got[3]!.data).not.toHaveProperty('tenantId');
  });

  it('sends no progress event for an operation without progress', async () => {
    const id = await operation({});
    expect((await events(id)).map((e) => e.event)).toEqual(['step', 'end']);
  });
});
