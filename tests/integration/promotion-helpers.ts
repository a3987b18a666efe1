import type pg from 'pg';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import type { LocalEngine } from '../../control-plane/src/engine/local.js';
import type { FaultHook } from '../../control-plane/src/promotion/local.js';
import {
  auth,
  type connectionOf,
  superQuery,
  type TestStack,
  tenantClient,
  waitForOperation,
} from '../helpers/runtime.js';

/** Shared by the promotion test files (tests/helpers belongs to another area). */
export type Descriptor = Awaited<ReturnType<typeof connectionOf>>;

/** Tenant object names come from the one naming function. */
export const objectName = tenantObjectName;

/** A non-negative whole number, what a promotion reports as a byte count or a duration in ms (null is neither). */
export const isCount = (n: unknown): boolean => Number.isInteger(n) && (n as number) >= 0;

export const promote = (s: TestStack, slug: string, targetTier: string, token = s.tokens.sre) =>
  s.app.inject({
    method: 'POST',
    url: `/v1/tenants/${slug}/promotions`,
    headers: auth(token),
    payload: { targetTier },
  });

export const rollback = (s: TestStack, slug: string, promoId: string, token = s.tokens.sre) =>
  s.app.inject({
    method: 'POST',
    url: `/v1/tenants/${slug}/promotions/${promoId}/rollback`,
    headers: auth(token),
  });

export async function getOperation(s: TestStack, id: string) {
  const res = await s.app.inject({ method: 'GET', url: `/v1/operations/${id}`, headers: auth(s.tokens.sre) });
  // biome-ignore lint/suspicious/noExplicitAny: the API's JSON, asserted on by the tests
  return res.json() as Record<string, any>;
}

export async function getTenant(s: TestStack, slug: string) {
  const res = await s.app.inject({ method: 'GET', url: `/v1/tenants/${slug}`, headers: auth(s.tokens.sre) });
  // biome-ignore lint/suspicious/noExplicitAny: the API's JSON, asserted on by the tests
  return res.json() as Record<string, any>;
}

/** Promotes and waits for the operation to end. */
export async function promoteAndWait(s: TestStack, slug: string, tier: string) {
  const res = await promote(s, slug, tier);
  if (res.statusCode !== 202) throw new Error(`promote ${slug}: ${res.statusCode} ${res.body}`);
  const id: string = res.json().operation.id;
  return { id, op: await waitForOperation(s, id, 60_000) };
}

export async function seedPool(s: TestStack, tenantId: string, n: number) {
  await superQuery(
    s.dataDb,
    `WITH u AS (INSERT INTO pool.users (tenant_id, email, name) SELECT $1, 'u' || g || '@x', 'n' || g FROM generate_series(1, $2) g RETURNING id)
     INSERT INTO pool.documents (tenant_id, owner_id, title, body) SELECT $1, id, 't', repeat('b', 50) FROM u`,
    [tenantId, n],
  );
  await superQuery(
    s.dataDb,
    `INSERT INTO pool.settings (tenant_id, key, value) SELECT $1, 'k' || g, '{"a":1}' FROM generate_series(1, 10) g`,
    [tenantId],
  );
}

/** The stack's engine (local target), for in-process fault hooks. */
export const engineOf = (s: TestStack) => s.runtime.services.engine as unknown as LocalEngine;

type Handler = { tenantId: string; point: string; fn: (ctx: Parameters<FaultHook>[1]) => Promise<void> };
const handlers = new WeakMap<TestStack, Set<Handler>>();

/**
 * Runs `fn` the first time a promotion of `tenantId` reaches the named point inside a step (once).
 * Resolves `reached` when it ran; `clear()` removes it if it never did.
 */
export function atPoint(
  s: TestStack,
  tenantId: string,
  point: string,
  fn: (ctx: Parameters<FaultHook>[1]) => Promise<void> = async () => {},
): { reached: Promise<void>; clear(): void } {
  let set = handlers.get(s);
  if (!set) {
    const all = new Set<Handler>();
    set = all;
    handlers.set(s, all);
    engineOf(s).setFaultHook(async (p, ctx) => {
      for (const h of [...all]) {
        if (h.point === p && h.tenantId === ctx.tenantId) {
          all.delete(h);
          await h.fn(ctx);
        }
      }
    });
  }
  let resolve: () => void = () => {};
  const reached = new Promise<void>((r) => {
    resolve = r;
  });
  const h: Handler = {
    tenantId,
    point,
    fn: async (ctx) => {
      try {
        await fn(ctx);
      } finally {
        resolve();
      }
    },
  };
  set.add(h);
  return { reached, clear: () => set.delete(h) };
}

/** A gate: the promotion pauses at `point` until `open()` is called; `reached` once it is there. */
export function pauseAt(s: TestStack, tenantId: string, point: string) {
  let open: () => void = () => {};
  const gate = new Promise<void>((r) => {
    open = r;
  });
  let arrived: () => void = () => {};
  const reached = new Promise<void>((r) => {
    arrived = r;
  });
  const hook = atPoint(s, tenantId, point, () => {
    arrived();
    return gate;
  });
  return {
    reached,
    open() {
      open();
      hook.clear();
    },
  };
}

/** Runs `fn` in a transaction on the tenant's own descriptor (tenant context set on the pool). */
export async function asTenant<T>(d: Descriptor, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = await tenantClient(d);
  try {
    await c.query('BEGIN');
    if (d.tenantSetting) await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, d.tenantId]);
    const out = await fn(c);
    await c.query('COMMIT');
    return out;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Rows of the promotion's bookkeeping (tenant key values) left in any database. */
export async function promotionLeftovers(s: TestStack, slug: string): Promise<number> {
  let n = 0;
  const dbs = [s.dataDb];
  const silo = objectName(slug);
  if ((await superQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [silo])).length > 0)
    dbs.push(silo);
  for (const db of dbs) {
    for (const table of ['promotion_touched', 'promotion_applied']) {
      const exists = await superQuery(db, 'SELECT to_regclass($1) IS NOT NULL AS ok', [
        `tenantry_meta.${table}`,
      ]);
      if (!exists[0]?.ok) continue;
      const rows = await superQuery<{ n: number }>(
        db,
        `SELECT count(*)::int AS n FROM tenantry_meta.${table}`,
      );
      n += rows[0]?.n ?? 0;
    }
  }
  return n;
}
