import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  auth,
  onboard,
  rand,
  runOperation,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';

/**
 * GET /v1/tenants/{slug} shows the tenant's operation in flight (id, kind, status, current step) and,
 * after a promotion, that promotion's operation id, its cutover and rollback deadline, and whether a
 * rollback would be accepted now.
 */
const getTenant = async (s: TestStack, slug: string) => {
  const res = await s.app.inject({
    method: 'GET',
    url: `/v1/tenants/${slug}`,
    headers: auth(s.tokens['sales-ops']),
  });
  expect(res.statusCode, res.body).toBe(200);
  return res.json();
};

describe('the operation in flight (API-only process: nothing runs it)', () => {
  let s: TestStack;
  beforeAll(async () => {
    s = await startStack({ TENANTRY_ROLE: 'api' });
  });
  afterAll(async () => {
    await s?.close();
  });

  it('names the queued onboarding, then the step it runs', async () => {
    const slug = `td-${rand(3)}`;
    const res = await s.app.inject({
      method: 'POST',
      url: '/v1/tenants',
      headers: auth(s.tokens['sales-ops']),
      payload: { slug, name: slug, tier: 'pool' },
    });
    const opId = res.json().operation.id;
    expect(await getTenant(s, slug)).toMatchObject({
      slug,
      status: 'provisioning',
      activeOperation: { id: opId, kind: 'onboard', status: 'queued', currentStep: null },
      promotion: null,
    });
    // As the executor records a step it starts.
    await superQuery(
      s.controlDb,
      `UPDATE operations SET status = 'running',
              steps = jsonb_set(steps, '{1,status}', '"running"') WHERE id = $1`,
      [opId],
    );
    const [second] = await superQuery<{ name: string }>(
      s.controlDb,
      `SELECT steps->1->>'name' AS name FROM operations WHERE id = $1`,
      [opId],
    );
    expect((await getTenant(s, slug)).activeOperation).toEqual({
      id: opId,
      kind: 'onboard',
      status: 'running',
      currentStep: second!.name,
    });
    await superQuery(s.controlDb, `UPDATE operations SET status = 'failed' WHERE id = $1`, [opId]);
    expect((await getTenant(s, slug)).activeOperation).toBeNull();
  });
});

describe('after a promotion', () => {
  let s: TestStack;
  beforeAll(async () => {
    s = await startStack({ TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: '600000' });
  });
  afterAll(async () => {
    await s?.close();
  });

  const post = (url: string) =>
    s.app.inject({
      method: 'POST',
      url,
      headers: auth(s.tokens.sre),
      ...(url.endsWith('/promotions') ? { payload: { targetTier: 'bridge' } } : {}),
    });

  it('shows the promotion, its rollback deadline and that a rollback is available; then that it was rolled back', async () => {
    const t = await onboard(s, 'pool');
    expect(await getTenant(s, t.slug)).toMatchObject({ activeOperation: null, promotion: null });
    const promoted = await post(`/v1/tenants/${t.slug}/promotions`);
    expect(promoted.statusCode).toBe(202);
    const promoId = promoted.json().operation.id;
    const op = await waitForOperation(s, promoId, 60_000);
    expect(op.status).toBe('succeeded');
    const { progress } = (
      await s.app.inject({ method: 'GET', url: `/v1/operations/${promoId}`, headers: auth(s.tokens.sre) })
    ).json();
    const view = await getTenant(s, t.slug);
    expect(view).toMatchObject({ tier: 'bridge', activeOperation: null });
    expect(view.promotion).toEqual({
      operationId: promoId,
      fromTier: 'pool',
      toTier: 'bridge',
      cutoverAt: progress.cutoverAt,
      rollbackUntil: progress.rollbackUntil,
      rolledBack: false,
      rollbackAvailable: true,
    });
    expect(Date.parse(view.promotion.rollbackUntil)).toBeGreaterThan(Date.now());

    const back = await post(`/v1/tenants/${t.slug}/promotions/${promoId}/rollback`);
    expect(back.statusCode).toBe(202);
    expect((await waitForOperation(s, back.json().operation.id, 60_000)).status).toBe('succeeded');
    const after = await getTenant(s, t.slug);
    expect(after).toMatchObject({ tier: 'pool', activeOperation: null });
    expect(after.promotion).toMatchObject({
      operationId: promoId,
      rolledBack: true,
      rollbackAvailable: false,
    });
  });

  it('says a rollback is not available while the tenant is suspended, as the rollback request does, and is again once it is reactivated', async () => {
    const t = await onboard(s, 'pool');
    const promoId = (await post(`/v1/tenants/${t.slug}/promotions`)).json().operation.id;
    expect((await waitForOperation(s, promoId, 60_000)).status).toBe('succeeded');
    const suspension = `/v1/tenants/${t.slug}/suspension`;
    const suspended = await runOperation(s, {
      method: 'POST',
      url: suspension,
      payload: { reason: 'non-payment' },
    });
    expect(suspended.status).toBe('succeeded');
    expect(await getTenant(s, t.slug)).toMatchObject({
      status: 'suspended',
      promotion: { operationId: promoId, rolledBack: false, rollbackAvailable: false },
    });
    const refused = await post(`/v1/tenants/${t.slug}/promotions/${promoId}/rollback`);
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.code).toBe('TENANT_SUSPENDED');

    expect((await runOperation(s, { method: 'DELETE', url: suspension })).status).toBe('succeeded');
    expect(await getTenant(s, t.slug)).toMatchObject({
      status: 'active',
      promotion: { operationId: promoId, rollbackAvailable: true },
    });
  });

  it('says a rollback is no longer available once the window has passed, as the rollback request does', async () => {
    const t = await onboard(s, 'pool');
    const promoId = (await post(`/v1/tenants/${t.slug}/promotions`)).json().operation.id;
    expect((await waitForOperation(s, promoId, 60_000)).status).toBe('succeeded');
    expect((await getTenant(s, t.slug)).promotion.rollbackAvailable).toBe(true);
    // The deadline moved into the past (the cleanup job, scheduled for the real deadline, has not run).
    await superQuery(
      s.controlDb,
      `UPDATE operations SET progress = progress || '{"rollbackUntil": "2020-01-01T00:00:00.000Z"}' WHERE id = $1`,
      [promoId],
    );
    expect((await getTenant(s, t.slug)).promotion).toMatchObject({
      operationId: promoId,
      rollbackUntil: '2020-01-01T00:00:00.000Z',
      rolledBack: false,
      rollbackAvailable: false,
    });
    const refused = await post(`/v1/tenants/${t.slug}/promotions/${promoId}/rollback`);
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.code).toBe('ROLLBACK_NOT_AVAILABLE');
  });
});
