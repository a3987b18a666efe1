import type { AddressInfo } from 'node:net';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTenantryClient,
  httpDescriptorSource,
  type TenantryClient,
} from '../../control-plane/src/client/index.js';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { loginRoleNames } from '../../control-plane/src/domain/naming.js';
import type { TierCatalog } from '../../control-plane/src/domain/tiers.js';
import { RotationSchedule } from '../../control-plane/src/rotation/schedule.js';
import {
  auth,
  connectionOf,
  onboard,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';

/**
 * The data plane's view of a rotation and of a promotion: 16 workers run transactions through the
 * client (tests/integration/dataplane-client.test.ts has its unit behaviour) while the control plane
 * rotates every tenant's credentials twice, then while a pool tenant moves to silo. No transaction
 * may fail, and every one acknowledged must be where the tenant is, exactly once.
 */
const WORKERS = 16;
let s: TestStack;
let url: string;
let schedule: RotationSchedule;

beforeAll(async () => {
  s = await startStack({ TENANTRY_ROTATION_SCHEDULE: 'off' });
  await s.app.listen({ port: 0, host: '127.0.0.1' });
  url = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
  schedule = new RotationSchedule(
    s.runtime.services.db,
    s.runtime.services.credentials,
    { templateVersion: 1, tiers: {} } as unknown as TierCatalog,
    { maxPerTick: 100, schedule: null, log: pino({ level: 'silent' }) },
  );
});
afterAll(async () => {
  // The descriptor reads' keep-alive connections would hold the listener's close for a minute.
  s?.app.server.closeAllConnections();
  await s?.close();
  const { poolRole } = dataPlaneNames(s.dataDb);
  await superQuery('postgres', `DROP ROLE IF EXISTS ${loginRoleNames(poolRole).join(', ')}`).catch(
    () => undefined,
  );
});

/** Workers writing one row per transaction through the client, round-robin over `slugs`, until stopped. */
class Load {
  readonly acked = new Map<string, string[]>();
  readonly failures: unknown[] = [];
  private stopped = false;
  private done: Promise<void> = Promise.resolve();
  private readonly waiters: { n: number; resolve: () => void }[] = [];
  transactions = 0;

  constructor(
    private readonly client: TenantryClient,
    private readonly slugs: string[],
  ) {
    for (const slug of slugs) this.acked.set(slug, []);
  }

  start(): this {
    this.done = Promise.all(
      Array.from({ length: WORKERS }, async (_, w) => {
        for (let seq = 0; !this.stopped; seq++) {
          const slug = this.slugs[(w + seq) % this.slugs.length] as string;
          const email = `w${w}-${seq}@load`;
          try {
            await this.client.withTenant(slug, (db) =>
              db.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [db.tenantId, email]),
            );
            this.acked.get(slug)?.push(email);
            this.transactions++;
            for (const x of this.waiters.splice(0))
              if (this.transactions >= x.n) x.resolve();
              else this.waiters.push(x);
          } catch (e) {
            this.failures.push(e);
          }
        }
      }),
    ).then(() => undefined);
    return this;
  }

  /** Resolves once `n` more transactions were acknowledged (an event, not a clock). */
  more(n: number): Promise<void> {
    const target = this.transactions + n;
    return new Promise((resolve) => this.waiters.push({ n: target, resolve }));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

async function rotate(slug: string): Promise<void> {
  const res = await s.app.inject({
    method: 'POST',
    url: `/v1/tenants/${slug}/credential-rotations`,
    headers: auth(s.tokens.sre),
    payload: { graceSeconds: 3600 },
  });
  expect(res.statusCode, res.body).toBe(202);
  expect(await waitForOperation(s, res.json().operation.id)).toMatchObject({ status: 'succeeded' });
}

/** The old logins' grace periods ended now (as if an hour passed), and the schedule's retires ran. */
async function retireAll(): Promise<void> {
  const { retires } = await schedule.tick(new Date(Date.now() + 3601_000));
  for (const id of retires) expect(await waitForOperation(s, id)).toMatchObject({ status: 'succeeded' });
}

async function loginRefused(d: {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
}) {
  const c = new pg.Client(d);
  try {
    await c.connect();
    return false;
  } catch (e) {
    return ['28P01', '28000'].includes((e as { code?: string }).code ?? '');
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function rowsOf(slug: string, client: TenantryClient): Promise<string[]> {
  return client.withTenant(slug, async (db) =>
    (await db.query<{ email: string }>(`SELECT email FROM users WHERE email LIKE '%@load'`)).rows.map(
      (r) => r.email,
    ),
  );
}

describe('under load, through the data-plane client', () => {
  it('rotation: pool, bridge and silo tenants each rotated twice, no transaction fails, every old password refused after its grace period', async () => {
    const slugs = [
      (await onboard(s, 'pool')).slug,
      (await onboard(s, 'bridge')).slug,
      (await onboard(s, 'silo')).slug,
    ];
    const client = createTenantryClient({
      descriptors: httpDescriptorSource({ url, token: s.tokens.dataplane }),
      // Well inside the grace period: the workers move to the new login long before the old one is retired.
      descriptorTtlMs: 200,
      pool: { max: 8 },
    });
    const load = new Load(client, slugs).start();
    const old: Awaited<ReturnType<typeof connectionOf>>[] = [];
    try {
      await load.more(WORKERS * 3);
      for (let round = 0; round < 2; round++) {
        for (const slug of slugs) {
          old.push(await connectionOf(s, slug));
          await rotate(slug);
        }
        // Every worker has moved on: the client drained the old logins' pools (no unit uses them).
        const oldKeys = old.slice(-3).map((d) => `${d.host}:${d.port}/${d.database}/${d.user}`);
        while (client.placements().some((k) => oldKeys.includes(k))) await load.more(WORKERS);
        await retireAll();
        await load.more(WORKERS * 3);
      }
    } finally {
      await load.stop();
    }
    expect(load.failures).toEqual([]);
    for (const d of old) expect(await loginRefused(d)).toBe(true);
    // Every acknowledged write is there, exactly once.
    for (const slug of slugs) {
      const rows = await rowsOf(slug, client);
      expect(rows.length).toBe(new Set(rows).size);
      expect(new Set(rows)).toEqual(new Set(load.acked.get(slug)));
    }
    await client.close();
  });

  it('promotion: a pool tenant moved to silo while written to, no error reaches the application, every acknowledged write is in the silo exactly once', async () => {
    const pool = await onboard(s, 'pool');
    const other = await onboard(s, 'pool');
    const client = createTenantryClient({
      descriptors: httpDescriptorSource({ url, token: s.tokens.dataplane }),
      descriptorTtlMs: 200,
      pool: { max: 8 },
    });
    const load = new Load(client, [pool.slug, other.slug]).start();
    try {
      await load.more(WORKERS * 2);
      const res = await s.app.inject({
        method: 'POST',
        url: `/v1/tenants/${pool.slug}/promotions`,
        headers: auth(s.tokens.sre),
        payload: { targetTier: 'silo' },
      });
      expect(res.statusCode, res.body).toBe(202);
      expect(await waitForOperation(s, res.json().operation.id, 120_000)).toMatchObject({
        status: 'succeeded',
      });
      await load.more(WORKERS * 2);
    } finally {
      await load.stop();
    }
    expect(load.failures).toEqual([]);
    const d = await connectionOf(s, pool.slug);
    expect(d.tier).toBe('silo');
    // Read in the silo itself, as its own login, outside the client.
    const c = new pg.Client(d);
    await c.connect();
    try {
      const { rows } = await c.query<{ email: string; n: number }>(
        `SELECT email, count(*)::int AS n FROM users WHERE email LIKE '%@load' GROUP BY email`,
      );
      expect(rows.every((r) => r.n === 1)).toBe(true);
      expect(new Set(rows.map((r) => r.email))).toEqual(new Set(load.acked.get(pool.slug)));
    } finally {
      await c.end();
    }
    const retried = await client.metrics.registry.getSingleMetricAsString('tenantry_client_retries_total');
    expect(retried).toMatch(/reason="frozen"/);
    await client.close();
  });
});
