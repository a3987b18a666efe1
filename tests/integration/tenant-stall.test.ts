import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import {
  auth,
  connectionOf,
  onboard,
  rand,
  startStack,
  superQuery,
  type TestStack,
  tenantClient,
  waitForOperation,
} from '../helpers/runtime.js';

// A hostile tenant's own sessions against the control plane's work on the shared cluster: an
// advisory lock on a key computed from our source, and transactions left open on its tables
// while it is offboarded. Neither may stall the worker, or anyone else's onboarding.
let s: TestStack;
beforeAll(async () => {
  s = await startStack({ TENANTRY_WORKER_CONCURRENCY: '4' });
});
afterAll(async () => {
  await s?.close();
});

async function accept(slug: string, tier: 'pool' | 'bridge') {
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(s.tokens['sales-ops']),
    payload: { slug, name: slug, tier },
  });
  expect(res.statusCode).toBe(202);
  return res.json().operation.id as string;
}

describe('a tenant cannot stall the control plane', () => {
  it('holding the advisory-lock keys the control plane once serialized with blocks no onboarding', async () => {
    const hostile = await onboard(s, 'bridge');
    const c = await tenantClient(await connectionOf(s, hostile.slug));
    try {
      // Every key our source ever used for the shared database's ACL, schema and freeze locks.
      for (const key of [
        `tenantry.acl.${s.dataDb}`,
        'tenantry.acl',
        'tenantry.freeze-support',
        'tenantry.acl.postgres',
      ]) {
        await c.query('SELECT pg_advisory_lock(hashtext($1))', [key]);
      }
      const tag = rand(3);
      const ids = [
        ...(await Promise.all([0, 1, 2, 3].map((i) => accept(`st-${tag}-b${i}`, 'bridge')))),
        await accept(`st-${tag}-p`, 'pool'),
      ];
      for (const id of ids) expect((await waitForOperation(s, id, 60_000)).status).toBe('succeeded');
    } finally {
      await c.end();
    }
  });

  it('offboarding tenants that left transactions open ends their sessions; an unrelated onboarding goes through', async () => {
    const tenants = await Promise.all([0, 1, 2, 3].map(() => onboard(s, 'bridge')));
    const open = await Promise.all(
      tenants.map(async (t) => {
        const c = await tenantClient(await connectionOf(s, t.slug));
        c.on('error', () => {}); // it is about to be terminated
        await c.query('SET idle_in_transaction_session_timeout = 0');
        await c.query('BEGIN');
        await c.query('SELECT count(*) FROM users');
        return c;
      }),
    );
    try {
      const offboards = await Promise.all(
        tenants.map(async (t) => {
          const res = await s.app.inject({
            method: 'DELETE',
            url: `/v1/tenants/${t.slug}`,
            headers: { ...auth(s.tokens.admin), confirm: t.slug },
          });
          expect(res.statusCode).toBe(202);
          return res.json().operation.id as string;
        }),
      );
      const pool = await accept(`st-${rand(3)}-p2`, 'pool');
      expect((await waitForOperation(s, pool, 60_000)).status).toBe('succeeded');
      for (const id of offboards) expect((await waitForOperation(s, id, 60_000)).status).toBe('succeeded');
      for (const t of tenants) {
        const schema = tenantObjectName(t.slug);
        expect(await superQuery(s.dataDb, 'SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])).toEqual(
          [],
        );
      }
    } finally {
      await Promise.all(open.map((c) => c.end().catch(() => undefined)));
    }
  });
});
