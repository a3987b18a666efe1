import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import {
  auth,
  type DriftStack,
  onboard,
  startDriftStack,
  startOnboarding,
  waitForOperation,
} from './drift-helpers.js';

/**
 * Sweeps while onboardings and a promotion are in flight: tenants in mid-operation have
 * half-built objects (a role without its schema, a database being cloned, a promotion's target
 * beside its source). The sweep must skip them, say so, and report no false drift. Every step is
 * slowed down (fault injection) so the sweeps land on many different steps.
 */
let s: DriftStack;

beforeAll(async () => {
  s = await startDriftStack({ TENANTRY_FAULT_STEP_DELAY_MS: '150' });
  await onboard(s, 'pool', 'settled-pool');
  await onboard(s, 'bridge', 'settled-bridge');
  await onboard(s, 'pool', 'moving-pool');
});
afterAll(async () => {
  await s?.close();
});

const inFlight = async (ids: string[]) => {
  const rows = await s.sql<{ n: string }>(
    s.controlDb,
    `SELECT count(*) AS n FROM operations WHERE id = ANY($1::text[]) AND status IN ('queued', 'running')`,
    [ids],
  );
  return Number(rows[0]?.n) > 0;
};

describe('a sweep during onboarding and promotion', () => {
  it('skips tenants in mid-operation with the reason and reports no drift for anyone', async () => {
    const started = await Promise.all([
      startOnboarding(s, 'bridge', 'new-bridge'),
      startOnboarding(s, 'silo', 'new-silo'),
      startOnboarding(s, 'pool', 'new-pool'),
    ]);
    const promo = await s.app.inject({
      method: 'POST',
      url: '/v1/tenants/moving-pool/promotions',
      headers: auth(s.tokens.sre),
      payload: { targetTier: 'silo' },
    });
    expect(promo.statusCode).toBe(202);
    const opIds = [...started.map((x) => x.operationId), promo.json().operation.id as string];
    const busySlugs = new Set(['new-bridge', 'new-silo', 'new-pool', 'moving-pool']);

    let sweeps = 0;
    const seenSkipped = new Set<string>();
    while (await inFlight(opIds)) {
      const r = await s.drift.runNow();
      if (!r) continue;
      sweeps++;
      expect(r.findings, JSON.stringify(r.findings)).toEqual([]);
      for (const sk of r.run.skipped) {
        expect(busySlugs.has(sk.slug)).toBe(true);
        expect(sk.reason === 'in-flight-operation' || sk.reason === 'tenant-status').toBe(true);
        seenSkipped.add(sk.slug);
      }
      // The settled tenants are always judged.
      expect(r.run.tenantsChecked).toBeGreaterThanOrEqual(2);
    }
    expect(sweeps).toBeGreaterThan(2);
    expect([...seenSkipped].sort()).toEqual([...busySlugs].sort());
    for (const id of opIds) expect((await waitForOperation(s, id)).status).toBe('succeeded');

    // Once everything has settled, the whole fleet (the promoted tenant's retained source
    // included) is judged and clean.
    const last = await s.drift.runNow();
    expect(last?.findings).toEqual([]);
    expect(last?.run.skipped).toEqual([]);
    expect(last?.run.tenantsChecked).toBe(6);
  });

  it('does not start a repair for a tenant that has an operation in flight', async () => {
    await s.app.inject({
      method: 'PUT',
      url: '/v1/drift-policies',
      headers: auth(s.tokens.sre),
      payload: { mode: 'remediate', ignoreFields: [] },
    });
    // Drift on a tenant that is being offboarded: never judged, never repaired.
    const del = await s.app.inject({
      method: 'DELETE',
      url: '/v1/tenants/settled-bridge',
      headers: { ...auth(s.tokens.sre), confirm: 'settled-bridge' },
    });
    expect(del.statusCode).toBe(202);
    await s
      .sql('postgres', `ALTER ROLE ${tenantObjectName('settled-bridge')} CONNECTION LIMIT 1`)
      .catch(() => undefined);
    const r = await s.drift.runNow();
    expect(r?.findings.filter((f) => f.tenantSlug === 'settled-bridge')).toEqual([]);
    expect(r?.run.remediation).toEqual([]);
    expect(r?.run.skipped.map((x) => x.slug)).toContain('settled-bridge');
    expect((await waitForOperation(s, del.json().operation.id)).status).toBe('succeeded');
    const after = await s.drift.runNow();
    expect(after?.findings).toEqual([]);
  });
});
