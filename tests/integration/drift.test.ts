import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SweepResult } from '../../control-plane/src/drift/sweep.js';
import {
  auth,
  connection,
  type DriftStack,
  onboard,
  startDriftStack,
  tenantCanQuery,
} from './drift-helpers.js';

let s: DriftStack;
const T = {
  pool: 'acme-pool',
  pool2: 'beta-pool',
  bridge: 'acme-bridge',
  bridge2: 'beta-bridge',
  bridge3: 'gamma-bridge',
  silo: 'acme-silo',
};
const ids: Record<string, string> = {};

beforeAll(async () => {
  s = await startDriftStack();
  for (const [k, slug] of Object.entries(T)) {
    const tier = k.startsWith('pool') ? 'pool' : k.startsWith('bridge') ? 'bridge' : 'silo';
    ids[slug] = (await onboard(s, tier, slug)).id;
  }
});
afterAll(async () => {
  await s?.close();
});

const sweep = async (): Promise<SweepResult> => {
  const r = await s.drift.runNow();
  if (!r) throw new Error('sweep did not run');
  return r;
};

async function setPolicy(body: Record<string, unknown>) {
  const res = await s.app.inject({
    method: 'PUT',
    url: '/v1/drift-policies',
    headers: auth(s.tokens.sre),
    payload: { ignoreFields: [], ...body },
  });
  expect(res.statusCode).toBe(200);
}

const pick = (r: SweepResult, f: { name?: string; field?: string; resource?: string; kind?: string }) =>
  r.findings.filter(
    (x) =>
      (f.name === undefined || x.name === f.name) &&
      (f.field === undefined || x.field === f.field) &&
      (f.resource === undefined || x.resource === f.resource) &&
      (f.kind === undefined || x.kind === f.kind),
  );

describe('drift sweep', () => {
  it('finds nothing on a clean fleet', async () => {
    const r = await sweep();
    expect(r.findings).toEqual([]);
    expect(r.run.tenantsChecked).toBe(Object.keys(T).length);
    expect(r.run.skipped).toEqual([]);
  });
});
