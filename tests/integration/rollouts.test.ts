import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { arrayLiteral } from '../../control-plane/src/db/rollouts.js';
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
import { copyTemplates, restartStack, type TemplatesCopy, VERSION_2 } from '../helpers/templates.js';
import { getTenant, pauseAt, promote } from './promotion-helpers.js';
import { attempt, type Intruder, secretsOf, type Victim } from './red-team-shared.js';

/**
 * Fleet schema rollouts (docs/rollouts.md) on real Postgres, every tier. A fleet is onboarded at
 * version 1 from a copy of the templates; version 2 (a column, an index, and a check that tenants with
 * an upper-case email fail) is then added and the control plane restarted on it, as an operator
 * deploys one. Three tenants hold an upper-case email: the data-dependent failure.
 */
let s: TestStack;
let tpl: TemplatesCopy;
const id = rand(3);
const slug = (x: string) => `ro-${x}-${id}`;
type T = { slug: string; id: string; tier: 'pool' | 'bridge' | 'silo' };
const fleet: T[] = [];
const BAD = [slug('bad-b'), slug('bad-s'), slug('bad-b2')];
const PROMOTED = slug('promo');
/** Promoted bridge→silo before the rollout: its bridge schema is kept for the rollback window. */
const WINDOW = slug('win');
let windowPromotion: string;

const api = (method: 'GET' | 'POST', url: string, payload?: object, token = s.tokens.sre) =>
  s.app.inject({ method, url, headers: auth(token), ...(payload ? { payload } : {}) });

async function seed(t: T, email: string) {
  const d = await connectionOf(s, t.slug);
  const c = await tenantClient(d);
  try {
    await c.query('BEGIN');
    if (d.tenantSetting) await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, d.tenantId]);
    await c.query(`INSERT INTO users (tenant_id, email, name) VALUES ($1, $2, 'owner')`, [t.id, email]);
    await c.query('COMMIT');
  } finally {
    await c.end();
  }
}

/** The schema version the data plane records for a tenant's placement (the pool's for a pool tenant). */
async function catalogVersion(t: { slug: string; tier: string }): Promise<number | null> {
  const name = tenantObjectName(t.slug);
  const [db, schema] =
    t.tier === 'pool' ? [s.dataDb, 'pool'] : t.tier === 'bridge' ? [s.dataDb, name] : [name, 'app'];
  const rows = await superQuery<{ version: number }>(
    db,
    'SELECT version FROM tenantry_meta.schema_versions WHERE schema_name = $1',
    [schema],
  );
  return rows[0]?.version ?? null;
}

async function hasNickname(t: { slug: string; tier: string }): Promise<boolean> {
  const name = tenantObjectName(t.slug);
  const [db, schema] =
    t.tier === 'pool' ? [s.dataDb, 'pool'] : t.tier === 'bridge' ? [s.dataDb, name] : [name, 'app'];
  const rows = await superQuery(
    db,
    `SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'users' AND column_name = 'nickname'`,
    [schema],
  );
  return rows.length === 1;
}

type RolloutBody = { status: string; tenants: { slug: string; status: string; deferrals: number }[] };
async function waitRollout(rid: string, until: (r: RolloutBody) => boolean, timeoutMs = 60_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const res = await api('GET', `/v1/rollouts/${rid}?limit=1000`);
    expect(res.statusCode).toBe(200);
    const r = res.json();
    if (until(r)) return r;
    if (Date.now() > end) throw new Error(`rollout ${rid} still ${r.status}: ${res.body}`);
    await new Promise((x) => setTimeout(x, 50));
  }
}
const settled = (r: { status: string }) => r.status !== 'running';

type FindingT = {
  tenantSlug: string | null;
  category: string;
  field: string;
  resource: string;
  name: string;
};
/** Findings on what a template version touches (schemas, tables, policies) that are not pending rollouts. */
const schemaDrift = (findings: FindingT[]) => {
  const mine = new Set(fleet.map((t) => t.slug));
  return findings.filter(
    (f) =>
      f.category !== 'pending-rollout' &&
      ['schema', 'table', 'policy', 'default-privileges'].includes(f.resource) &&
      (f.tenantSlug === null || mine.has(f.tenantSlug)),
  );
};

async function sweep(): Promise<{ status: string; findings: FindingT[] }> {
  const run = await api('POST', '/v1/drift-runs');
  expect(run.statusCode).toBe(202);
  for (;;) {
    const body = (await api('GET', `/v1/drift-runs/${run.json().id}`)).json();
    if (body.status !== 'queued' && body.status !== 'running') return body;
    await new Promise((x) => setTimeout(x, 50));
  }
}

beforeAll(async () => {
  tpl = copyTemplates();
  s = await startStack({ TENANTRY_TEMPLATES_DIR: tpl.dir });
  const plan: [string, T['tier'], boolean][] = [
    [slug('p1'), 'pool', false],
    [slug('p2'), 'pool', false],
    [slug('b1'), 'bridge', false],
    [slug('b2'), 'bridge', false],
    [PROMOTED, 'bridge', false],
    [WINDOW, 'bridge', false],
    [slug('s1'), 'silo', false],
    [BAD[0] as string, 'bridge', true],
    [BAD[1] as string, 'silo', true],
    [BAD[2] as string, 'bridge', true],
  ];
  for (const [sl, tier, bad] of plan) {
    const t = { ...(await onboard(s, tier, sl)), tier };
    fleet.push(t);
    await seed(t, bad ? `Owner-${sl}@Example.COM` : `owner-${sl}@example.com`);
  }
  const p = await promote(s, WINDOW, 'silo');
  windowPromotion = p.json().operation.id;
  expect((await waitForOperation(s, windowPromotion, 60_000)).status).toBe('succeeded');
  (fleet.find((t) => t.slug === WINDOW) as T).tier = 'silo';
  // The new version is deployed: the file lands in the templates directory, the control plane restarts.
  tpl.addVersion(2, 'nicknames', VERSION_2);
  s = await restartStack(s);
}, 180_000);

afterAll(async () => {
  await s?.close();
  tpl?.remove();
});

describe('before any rollout', () => {
  it("a start does not migrate the pool's shared tables; drift reports every tenant as pending rollout, not drift", async () => {
    expect(await catalogVersion({ slug: 'x-x-x', tier: 'pool' })).toBe(1);
    const body = await sweep();
    expect(body.status).toBe('succeeded');
    const pending = body.findings.filter((f) => f.category === 'pending-rollout');
    expect(new Set(pending.map((f) => f.tenantSlug))).toEqual(new Set([...fleet.map((t) => t.slug), null]));
    // Nothing a template version touches (schemas, tables, policies) is reported as drift.
    expect(schemaDrift(body.findings)).toEqual([]);
  });
});

describe('a rollout with onError pause', () => {
  it('stops after the canary when a canary tenant fails on its data; the next wave never starts', async () => {
    const res = await api('POST', '/v1/rollouts', {
      toVersion: 2,
      waves: [{ name: 'canary', slugs: [BAD[0], slug('b1')], parallelism: 2 }, { name: 'rest' }],
    });
    expect(res.statusCode).toBe(202);
    const r = await waitRollout(res.json().id, settled);
    expect(r.status).toBe('paused');
    expect(r.pauseReason).toBe('failures passed maxFailures (1 > 0)');
    const [canary, rest] = r.waves;
    expect(canary.counts).toMatchObject({ failed: 1, succeeded: 1, pending: 0, running: 0 });
    expect(rest.startedAt).toBeNull();
    expect(rest.counts.pending).toBe(fleet.length - 2);
    const failed = r.tenants.find((t: { slug: string }) => t.slug === BAD[0]);
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatch(/users_email_lowercase/);
    // The pool's shared tables moved first, once, as the platform step.
    expect(r.platform).toMatchObject({ status: 'succeeded', fromVersion: 1, version: 2 });
    expect(await catalogVersion({ slug: slug('p1'), tier: 'pool' })).toBe(2);
    // The failed tenant's schema is untouched: its migration rolled back whole.
    expect(await catalogVersion({ slug: BAD[0] as string, tier: 'bridge' })).toBe(1);
    expect(await hasNickname({ slug: BAD[0] as string, tier: 'bridge' })).toBe(false);
    expect(await catalogVersion({ slug: slug('b1'), tier: 'bridge' })).toBe(2);

    // Cancelled: the tenants not started stay at version 1, recorded as skipped.
    const cancel = await api('POST', `/v1/rollouts/${r.id}/cancel`);
    expect(cancel.statusCode).toBe(200);
    expect(cancel.json().status).toBe('cancelled');
    expect(cancel.json().progress.skipped).toBe(fleet.length - 2);
    expect(await catalogVersion({ slug: slug('b2'), tier: 'bridge' })).toBe(1);
  });
});

describe('a rollout with onError continue', () => {
  let rid: string;
  let late: { pool: T; bridge: T };
  let writes: { acknowledged: string[]; failed: number };

  it('parks the 3 failing tenants and finishes everything else, while a promotion and onboardings run', async () => {
    const promoted = fleet.find((t) => t.slug === PROMOTED) as T;
    // The rollout holds before its second wave until the promotion is under way.
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let atRest: () => void = () => {};
    const reachedRest = new Promise<void>((r) => {
      atRest = r;
    });
    s.runtime.rollouts?.setFaultHook(async (point) => {
      if (point !== 'rollout:wave:rest') return;
      atRest();
      await gate;
    });
    const res = await api('POST', '/v1/rollouts', {
      toVersion: 2,
      onError: 'continue',
      waves: [
        { name: 'canary', slugs: [slug('p1'), slug('s1')], parallelism: 1 },
        { name: 'rest', parallelism: 4 },
      ],
    });
    expect(res.statusCode).toBe(202);
    rid = res.json().id;
    await reachedRest;

    // Onboardings started during the rollout get the newest version, on every tier.
    late = {
      pool: { ...(await onboard(s, 'pool', slug('late-p'))), tier: 'pool' },
      bridge: { ...(await onboard(s, 'bridge', slug('late-b'))), tier: 'bridge' },
    };
    for (const t of [late.pool, late.bridge]) {
      expect((await getTenant(s, t.slug)).templateVersion).toBe(2);
      expect(await catalogVersion(t)).toBe(2);
    }

    // A promotion of a tenant still at version 1, with a writer running through it.
    const d = await connectionOf(s, PROMOTED);
    const hold = pauseAt(s, promoted.id, 'catch-up:start');
    const p = await promote(s, PROMOTED, 'silo');
    expect(p.statusCode).toBe(202);
    const promoOp = p.json().operation.id;
    writes = { acknowledged: [], failed: 0 };
    let writing = true;
    const writer = (async () => {
      let i = 0;
      while (writing) {
        const email = `w${i++}-${PROMOTED}@example.com`;
        const desc = await connectionOf(s, PROMOTED).catch(() => d);
        const c = await tenantClient(desc).catch(() => null);
        if (!c) {
          writes.failed++;
          continue;
        }
        try {
          await c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, $2)`, [promoted.id, email]);
          writes.acknowledged.push(email);
        } catch {
          writes.failed++;
        } finally {
          await c.end().catch(() => undefined);
        }
      }
    })();
    try {
      await hold.reached;
      release();
      // The rollout reaches the tenant while its promotion is in flight: deferred, never run beside it.
      const deferred = await waitRollout(rid, (r) =>
        r.tenants.some((t: { slug: string; deferrals: number }) => t.slug === PROMOTED && t.deferrals > 0),
      );
      const row = deferred.tenants.find((t: { slug: string }) => t.slug === PROMOTED);
      expect(row.status).toBe('pending');
      expect(row.note).toBe(`waiting for operation ${promoOp} (promote)`);
      hold.open();
      expect((await waitForOperation(s, promoOp, 60_000)).status).toBe('succeeded');
    } finally {
      release();
      hold.open();
      writing = false;
      await writer;
      s.runtime.rollouts?.setFaultHook(undefined);
    }

    const r = await waitRollout(rid, settled);
    expect(r.status).toBe('completed');
    const byStatus = (st: string) =>
      r.tenants.filter((t: { status: string }) => t.status === st).map((t: { slug: string }) => t.slug);
    expect(byStatus('parked').sort()).toEqual([...BAD].sort());
    for (const t of r.tenants.filter((x: { status: string }) => x.status === 'parked'))
      expect(t.error).toMatch(/users_email_lowercase/);
    expect(byStatus('failed')).toEqual([]);
    expect(byStatus('pending')).toEqual([]);
    // b1 moved in the paused rollout already; the late onboardings were built at version 2.
    expect(byStatus('skipped')).toEqual(expect.arrayContaining([slug('b1')]));
    expect(r.verification).toMatchObject({ mismatchCount: 0, mismatched: [] });
    expect(r.verification.checked).toBeGreaterThanOrEqual(fleet.length);
  }, 120_000);

  it('the promoted tenant ends at the new version on its new tier, with no lost write', async () => {
    const t = await getTenant(s, PROMOTED);
    expect(t.tier).toBe('silo');
    expect(t.templateVersion).toBe(2);
    expect(await catalogVersion({ slug: PROMOTED, tier: 'silo' })).toBe(2);
    expect(await hasNickname({ slug: PROMOTED, tier: 'silo' })).toBe(true);
    expect(writes.acknowledged.length).toBeGreaterThan(0);
    const rows = await superQuery<{ email: string }>(
      tenantObjectName(PROMOTED),
      'SELECT email FROM app.users',
    );
    const present = new Set(rows.map((x) => x.email));
    expect(writes.acknowledged.filter((e) => !present.has(e))).toEqual([]);
  });

  it('every other tenant of every tier reached version 2: ledger, record and catalog agree', async () => {
    const ok = [...fleet, late.pool, late.bridge].filter((t) => !BAD.includes(t.slug));
    for (const t of ok) {
      const tier = t.slug === PROMOTED ? 'silo' : t.tier;
      expect({ slug: t.slug, version: (await getTenant(s, t.slug)).templateVersion }).toEqual({
        slug: t.slug,
        version: 2,
      });
      expect({ slug: t.slug, catalog: await catalogVersion({ slug: t.slug, tier }) }).toEqual({
        slug: t.slug,
        catalog: 2,
      });
      expect(await hasNickname({ slug: t.slug, tier })).toBe(true);
    }
    for (const sl of BAD) {
      const t = fleet.find((x) => x.slug === sl) as T;
      expect((await getTenant(s, sl)).templateVersion).toBe(1);
      expect(await catalogVersion(t)).toBe(1);
    }
  });

  it("plans its batches with statistics that know this rollout's ledger (analyzed before the first batch)", async () => {
    // The second rollout's id is a value the ledger's statistics never saw: without an ANALYZE the
    // planner takes it for about one row, and the runner's set-based statements scan the rollout's
    // whole ledger for each row they write (docs/benchmarks.md, Rollouts).
    const [actual] = await superQuery<{ n: number }>(
      s.controlDb,
      'SELECT count(*)::int AS n FROM rollout_tenants WHERE rollout_id = $1',
      [rid],
    );
    const [explained] = await superQuery<{ 'QUERY PLAN': { Plan: { 'Plan Rows': number } }[] }>(
      s.controlDb,
      `EXPLAIN (FORMAT JSON) SELECT * FROM rollout_tenants WHERE rollout_id = '${rid.replaceAll("'", '')}'`,
    );
    expect(actual?.n).toBeGreaterThan(5);
    expect(explained?.['QUERY PLAN'][0]?.Plan['Plan Rows']).toBeGreaterThanOrEqual((actual?.n ?? 0) / 2);
  });

  it('every tenant result and every rollout action is audited', async () => {
    const audit = (await api('GET', '/v1/audit?limit=1000')).json().items as {
      action: string;
      tenantSlug: string | null;
      details: { rolloutId?: string };
    }[];
    const ofRollout = audit.filter((a) => a.details.rolloutId === rid);
    const actions = new Set(ofRollout.map((a) => a.action));
    for (const a of [
      'rollout.create',
      'rollout.started',
      'rollout.wave.started',
      'rollout.wave.finished',
      'rollout.completed',
    ])
      expect(actions).toContain(a);
    const parked = ofRollout.filter((a) => a.action === 'rollout.tenant.parked').map((a) => a.tenantSlug);
    expect(parked.sort()).toEqual([...BAD].sort());
    const succeeded = ofRollout
      .filter((a) => a.action === 'rollout.tenant.succeeded')
      .map((a) => a.tenantSlug);
    expect(succeeded).toEqual(expect.arrayContaining([slug('p1'), slug('b2'), slug('s1'), PROMOTED]));
    expect(new Set(succeeded).size).toBe(succeeded.length);
  });
});

describe("a promotion's rollback window", () => {
  it('the kept source moved with the tenant, so a rollback after the rollout lands on the same version', async () => {
    // The bridge schema kept for the window is at version 2 too (the rollout migrated it with the silo).
    expect(await catalogVersion({ slug: WINDOW, tier: 'bridge' })).toBe(2);
    expect(await hasNickname({ slug: WINDOW, tier: 'bridge' })).toBe(true);
    const back = await api('POST', `/v1/tenants/${WINDOW}/promotions/${windowPromotion}/rollback`);
    expect(back.statusCode).toBe(202);
    expect((await waitForOperation(s, back.json().operation.id, 60_000)).status).toBe('succeeded');
    const t = await getTenant(s, WINDOW);
    expect({ tier: t.tier, version: t.templateVersion }).toEqual({ tier: 'bridge', version: 2 });
    const d = await connectionOf(s, WINDOW);
    const c = await tenantClient(d);
    try {
      const rows = await c.query('SELECT email, nickname FROM users');
      expect(rows.rows).toEqual([{ email: `owner-${WINDOW}@example.com`, nickname: null }]);
    } finally {
      await c.end();
    }
  });
});

describe('the red-team attacks at version 2', () => {
  it('no tenant reaches another tenant’s rows, new column included, across pool, bridge and silo', async () => {
    const tenants = [slug('p1'), slug('p2'), slug('b2'), slug('s1')].map(
      (sl) => fleet.find((t) => t.slug === sl) as T,
    );
    const victims = new Map<string, Victim & { t: T; database: string; schema: string }>();
    for (const t of tenants) {
      const d = await connectionOf(s, t.slug);
      const userId = crypto.randomUUID();
      const c = await tenantClient(d);
      try {
        await c.query('BEGIN');
        if (d.tenantSetting) await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, d.tenantId]);
        await c.query(`INSERT INTO users (tenant_id, id, email, nickname) VALUES ($1, $2, $3, $4)`, [
          t.id,
          userId,
          `v2-${t.slug}@example.com`,
          `secret nick ${t.slug}`,
        ]);
        await c.query('COMMIT');
      } finally {
        await c.end();
      }
      victims.set(t.slug, {
        id: t.id,
        userId,
        email: `v2-${t.slug}@example.com`,
        settingKey: `secret nick ${t.slug}`,
        t,
        database: d.database,
        schema: d.schema ?? 'pool',
      });
    }
    for (const a of tenants) {
      const d = await connectionOf(s, a.slug);
      const intruder: Intruder = { id: a.id, conn: d };
      for (const b of victims.values()) {
        if (b.t.slug === a.slug) continue;
        const q = `${b.schema}.users`;
        const out = await attempt(
          intruder,
          [
            [`SELECT email, nickname FROM ${q} WHERE tenant_id = $1`, [b.id]],
            [`SELECT email FROM ${q} WHERE nickname = $1`, [b.settingKey]],
            [`UPDATE ${q} SET nickname = 'pwned' WHERE tenant_id = $1`, [b.id]],
            [`DELETE FROM ${q} WHERE tenant_id = $1`, [b.id]],
            [`INSERT INTO ${q} (tenant_id, email, nickname) VALUES ($1, 'intruder@x', 'x')`, [b.id]],
          ],
          b.database,
        );
        for (const o of out) {
          expect(o.rows).toBe(0);
          for (const secret of secretsOf(b)) expect(o.refused ?? '').not.toContain(secret);
        }
        // Every attempt on another placement is refused; on the shared pool, RLS returns nothing and
        // refuses the write (WITH CHECK).
        if (b.t.tier !== 'pool' || a.tier !== 'pool') expect(out.every((o) => o.refused !== null)).toBe(true);
        else expect(out[4]?.refused).toMatch(/row-level security/);
      }
    }
  });

  it('tenant_id leads every index at version 2, and the pool keeps one forced policy per table', async () => {
    const leading = async (db: string, schema: string) =>
      superQuery<{ index: string; first: string }>(
        db,
        `SELECT i.relname AS index, a.attname AS first FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = x.indkey[0]
          WHERE n.nspname = $1`,
        [schema],
      );
    for (const [db, schema] of [
      [s.dataDb, 'pool'],
      [s.dataDb, tenantObjectName(slug('b2'))],
      [tenantObjectName(slug('s1')), 'app'],
    ] as const) {
      const idx = await leading(db, schema);
      expect(idx.map((i) => i.index)).toContain('users_nickname_idx');
      expect(idx.filter((i) => i.first !== 'tenant_id')).toEqual([]);
    }
    const policies = await superQuery<{ t: string; forced: boolean; n: number }>(
      s.dataDb,
      `SELECT c.relname AS t, c.relforcerowsecurity AS forced, (SELECT count(*)::int FROM pg_policy p WHERE p.polrelid = c.oid) AS n
         FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = 'pool' AND c.relkind = 'r'`,
    );
    expect(policies.filter((p) => !p.forced || p.n !== 1)).toEqual([]);
  });
});

describe('retrying parked tenants', () => {
  it('completes them once their data is fixed, and the fleet has nothing pending', async () => {
    const r0 = (await api('GET', '/v1/rollouts?limit=1')).json().items[0];
    for (const sl of BAD) {
      const t = fleet.find((x) => x.slug === sl) as T;
      const [db, schema] =
        t.tier === 'silo' ? [tenantObjectName(sl), 'app'] : [s.dataDb, tenantObjectName(sl)];
      await superQuery(db, `UPDATE ${schema}.users SET email = lower(email)`);
      const retry = await api('POST', `/v1/rollouts/${r0.id}/tenants/${sl}/retry`);
      expect(retry.statusCode).toBe(202);
    }
    const r = await waitRollout(r0.id, settled);
    expect(r.status).toBe('completed');
    expect(r.progress).toMatchObject({ parked: 0, failed: 0, pending: 0, running: 0 });
    for (const sl of BAD) {
      const t = fleet.find((x) => x.slug === sl) as T;
      expect(await catalogVersion(t)).toBe(2);
      expect((await getTenant(s, sl)).templateVersion).toBe(2);
    }
    const after = await sweep();
    expect(after.status).toBe('succeeded');
    expect(after.findings.filter((f) => f.category === 'pending-rollout')).toEqual([]);
    expect(schemaDrift(after.findings)).toEqual([]);
  });
});

describe('bad requests', () => {
  const count = async () =>
    (await superQuery<{ n: number }>(s.controlDb, 'SELECT count(*)::int AS n FROM rollouts'))[0]?.n;

  it.each([
    [
      { toVersion: 3 },
      422,
      'ROLLOUT_INVALID',
      /version 3 is not in the template directory, which has versions 1 to 2/,
    ],
    [
      { toVersion: 2, waves: [{ tiers: ['pool'], percent: 10 }] },
      422,
      'ROLLOUT_INVALID',
      /selects by tiers and percent/,
    ],
    [
      { toVersion: 2, waves: [{ slugs: ['no-such-tenant'] }] },
      422,
      'ROLLOUT_INVALID',
      /no live tenant for slug\(s\) no-such-tenant/,
    ],
    [{ toVersion: 2, waves: [{}, { tiers: ['pool'] }] }, 422, 'ROLLOUT_INVALID', /only the last wave may/],
    [{ toVersion: 2, waves: [{ parallelism: 0 }] }, 400, 'VALIDATION_FAILED', /parallelism/],
    [{ toVersion: 2, extra: true }, 400, 'VALIDATION_FAILED', /extra|additional/],
    [{ toVersion: 2, onError: 'ignore' }, 400, 'VALIDATION_FAILED', /pause, continue/],
  ])('%j → %i %s, nothing created', async (body, status, code, message) => {
    const before = await count();
    const res = await api('POST', '/v1/rollouts', body);
    expect(res.statusCode).toBe(status);
    expect(res.json().error.code).toBe(code);
    expect(res.json().error.message).toMatch(message);
    expect(await count()).toBe(before);
  });

  it('refuses a second rollout while one is open, and actions that do not fit the state', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    s.runtime.rollouts?.setFaultHook(async (point) => {
      if (point === 'rollout:platform') await gate;
    });
    const first = await api('POST', '/v1/rollouts', { toVersion: 2 });
    expect(first.statusCode).toBe(202);
    const before = await count();
    const second = await api('POST', '/v1/rollouts', { toVersion: 2 });
    expect(second.statusCode).toBe(409);
    expect(second.json().error.code).toBe('ROLLOUT_IN_PROGRESS');
    expect(await count()).toBe(before);
    const resume = await api('POST', `/v1/rollouts/${first.json().id}/resume`);
    expect(resume.statusCode).toBe(409);
    expect(resume.json().error.code).toBe('ROLLOUT_STATE_CONFLICT');
    release();
    const done = await waitRollout(first.json().id, settled);
    // Everyone is at version 2 already: a no-op rollout.
    expect(done.status).toBe('completed');
    expect(done.progress.skipped).toBe(done.progress.total);
    const pause = await api('POST', `/v1/rollouts/${first.json().id}/pause`);
    expect(pause.statusCode).toBe(409);
    expect(pause.json().error.code).toBe('ROLLOUT_STATE_CONFLICT');
    const missing = await api('GET', `/v1/rollouts/ro_${'0'.repeat(28)}`);
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error.code).toBe('ROLLOUT_NOT_FOUND');
    const viewer = await api('POST', '/v1/rollouts', { toVersion: 2 }, s.tokens['sales-ops']);
    expect(viewer.statusCode).toBe(403);
  });
});

describe('the verification', () => {
  it('reads the silos beside the shared database, at any parallelism, and still finds each placement that drifted', async () => {
    const last = (await api('GET', '/v1/rollouts?limit=1')).json().items[0];
    expect(last.status).toBe('completed');
    const runner = s.runtime.rollouts?.runner;
    if (!runner) throw new Error('the stack has no rollout runner');
    const silo = fleet.find((t) => t.slug === slug('s1')) as T;
    const bridge = fleet.find((t) => t.slug === slug('b2')) as T;
    const drift = (t: T, version: number) =>
      t.tier === 'silo'
        ? superQuery(
            tenantObjectName(t.slug),
            `UPDATE tenantry_meta.schema_versions SET version = $1 WHERE schema_name = 'app'`,
            [version],
          )
        : superQuery(
            s.dataDb,
            'UPDATE tenantry_meta.schema_versions SET version = $1 WHERE schema_name = $2',
            [version, tenantObjectName(t.slug)],
          );
    // Every tenant at version 2 on both sides: nothing to report.
    const clean = await runner.verify({ id: last.id, waves: last.waves });
    expect(clean.mismatchCount).toBe(0);
    expect(clean.checked).toBeGreaterThanOrEqual(fleet.length);
    // A silo and a bridge schema changed behind the ledger's back, after the rollout migrated them.
    await drift(silo, 1);
    await drift(bridge, 1);
    try {
      for (const parallelism of [1, 32]) {
        const v = await runner.verify({
          id: last.id,
          waves: last.waves.map((w: object) => ({ ...w, parallelism })),
        });
        expect(v.checked).toBe(clean.checked);
        expect(v.mismatchCount).toBe(2);
        expect(v.mismatched.sort((a, b) => (a.slug < b.slug ? -1 : 1))).toEqual(
          [
            { slug: silo.slug, tier: 'silo', recorded: 2, actual: 1 },
            { slug: bridge.slug, tier: 'bridge', recorded: 2, actual: 1 },
          ].sort((a, b) => (a.slug < b.slug ? -1 : 1)),
        );
      }
    } finally {
      await drift(silo, 2);
      await drift(bridge, 2);
    }
    expect((await runner.verify({ id: last.id, waves: last.waves })).mismatchCount).toBe(0);
  });
});

describe('the platform step beside the first wave', () => {
  /** Version 3: a check that one pool tenant's row fails; only the pool's shared tables hold it. */
  const VERSION_3 = `ALTER TABLE users ADD COLUMN title text;
ALTER TABLE users ADD CONSTRAINT users_not_blocked CHECK (email <> 'blocked@example.com');
`;

  it("migrates the canary's bridge and silo while the pool's shared tables move; a failed platform step pauses the rollout with its pool tenants pending, and a resume completes it", async () => {
    await seed(fleet.find((t) => t.slug === slug('p2')) as T, 'blocked@example.com');
    tpl.addVersion(3, 'titles', VERSION_3);
    s = await restartStack(s);
    const canary = [slug('b1'), slug('s1'), slug('p1')];
    const migrated = new Set<string>();
    s.runtime.rollouts?.setFaultHook(async (point) => {
      const done = /^rollout:tenant-migrated:(.+)$/.exec(point);
      if (done) migrated.add(done[1] as string);
      // The platform step waits until the canary's bridge and silo are migrated: they need it not.
      if (point === 'rollout:platform')
        for (const until = Date.now() + 30_000; Date.now() < until; ) {
          if (migrated.has(slug('b1')) && migrated.has(slug('s1'))) break;
          await new Promise((x) => setTimeout(x, 20));
        }
    });
    try {
      const res = await api('POST', '/v1/rollouts', {
        toVersion: 3,
        waves: [{ name: 'canary', slugs: canary, parallelism: 2 }, { name: 'rest' }],
      });
      expect(res.statusCode).toBe(202);
      const r = await waitRollout(res.json().id, settled);
      expect(r.status).toBe('paused');
      expect(r.pauseReason).toMatch(/the pool's shared tables failed to migrate: .*users_not_blocked/);
      expect(r.platform.status).toBe('failed');
      expect([...migrated].sort()).toEqual([slug('b1'), slug('s1')].sort());
      const status = (sl: string) => r.tenants.find((t: { slug: string }) => t.slug === sl)?.status;
      expect(canary.map(status)).toEqual(['succeeded', 'succeeded', 'pending']);
      expect(r.waves[1].startedAt).toBeNull();
      expect(await catalogVersion({ slug: slug('b1'), tier: 'bridge' })).toBe(3);
      expect(await catalogVersion({ slug: slug('s1'), tier: 'silo' })).toBe(3);
      expect(await catalogVersion({ slug: slug('p1'), tier: 'pool' })).toBe(2);

      await superQuery(
        s.dataDb,
        `UPDATE pool.users SET email = 'unblocked@example.com' WHERE email = 'blocked@example.com'`,
      );
      expect((await api('POST', `/v1/rollouts/${r.id}/resume`)).statusCode).toBe(200);
      const done = await waitRollout(r.id, settled);
      expect(done.status).toBe('completed');
      expect(done.platform).toMatchObject({ status: 'succeeded', fromVersion: 2, version: 3 });
      expect(done.progress).toMatchObject({ failed: 0, pending: 0, running: 0 });
      expect(done.verification).toMatchObject({ mismatchCount: 0 });
      expect(await catalogVersion({ slug: slug('p1'), tier: 'pool' })).toBe(3);
      expect((await getTenant(s, slug('p1'))).templateVersion).toBe(3);
    } finally {
      s.runtime.rollouts?.setFaultHook(undefined);
    }
  });
});

describe("the ledger's array parameters", () => {
  it('reach Postgres as they were: quotes, backslashes, commas, braces, NULL and the word null', async () => {
    const text = [
      'plain',
      'a "quoted" note',
      'back\\slash\\',
      'a, {b}',
      null,
      'null',
      'NULL',
      '',
      ' spaced ',
    ];
    const [row] = await superQuery<{ t: (string | null)[]; i: number[]; u: string[] }>(
      s.controlDb,
      'SELECT $1::text[] AS t, $2::int[] AS i, $3::uuid[] AS u',
      [arrayLiteral(text), arrayLiteral([1, -2, 30]), arrayLiteral(fleet.slice(0, 2).map((t) => t.id))],
    );
    expect(row?.t).toEqual(text);
    expect(row?.i).toEqual([1, -2, 30]);
    expect(row?.u).toEqual(fleet.slice(0, 2).map((t) => t.id));
  });
});
