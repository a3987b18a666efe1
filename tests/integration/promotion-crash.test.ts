import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { crashScratch, endCrashScratch } from '../helpers/crash.js';
import { adminUrl, rand, superQuery } from '../helpers/runtime.js';
import { isRunning, kill9, startServer } from '../helpers/server.js';

/**
 * kill -9 the control plane at named points inside promotion, rollback, abort and cleanup steps
 * (in the middle of their work, not before it), with a writer on each tenant throughout; restart
 * it; in the end every promotion has finished or failed cleanly, and every write acknowledged to a
 * writer is in the tenant's final placement exactly once, and nothing else.
 *
 * The control plane pauses FAULT_MS at each named point after recording it on the operation (so
 * the writers overlap every phase), and holds at the one point the hold file names until the test
 * kills it there: the kill lands at that point however slow the machine, never past it. One
 * process lifetime per case: the next case starts while the previous one resumes (and is killed
 * again wherever it is, which it must survive too).
 */
const ADMIN = `tnt_${rand(24)}`;
const FAULT_MS = '150';
let controlDb: string;
let dataDb: string;
let dataDir: string;
let port: number;
let child: ChildProcess | undefined;

/** Names the one fault point where an operation waits until the test kills the process there. */
let holdFile: string;
const hold = (point: string) => fs.writeFileSync(holdFile, point);

const env = (windowMs: string) => ({
  TENANTRY_FAULT_HOLD_FILE: holdFile,
  DATABASE_URL: adminUrl(controlDb),
  TENANTRY_DATAPLANE_URL: adminUrl(dataDb),
  TENANTRY_DATA_DIR: dataDir,
  TENANTRY_ADMIN_TOKEN: ADMIN,
  TENANTRY_OPERATION_LEASE_MS: '1500',
  TENANTRY_FAULT_STEP_DELAY_MS: FAULT_MS,
  TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: windowMs,
});
const api = async (p: string, init: RequestInit = {}) =>
  fetch(`http://127.0.0.1:${port}${p}`, {
    ...init,
    headers: {
      authorization: `Bearer ${ADMIN}`,
      'content-type': 'application/json',
      ...(init.headers ?? {}),
    },
  });

interface OpRow {
  status: string;
  steps: { name: string; status: string }[];
  progress: Record<string, unknown>;
  error: string | null;
}
async function op(id: string): Promise<OpRow> {
  const rows = await superQuery<OpRow>(
    controlDb,
    'SELECT status, steps, progress, error FROM operations WHERE id = $1',
    [id],
  );
  return rows[0]!;
}
async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 45_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
const atPoint = (id: string, point: string) =>
  until(`${id} at ${point}`, async () =>
    (await op(id)).progress.faultPoint === point ? true : undefined,
  ).catch(async (e: unknown) => {
    // Say where the operation is instead, so a failure names its cause.
    const o = await op(id);
    throw new Error(
      `${(e as Error).message}; it is ${o.status} at ${JSON.stringify(o.steps.map((x) => `${x.name}:${x.status}`))}, error ${o.error}`,
    );
  });
const ended = (id: string) =>
  until(`${id} to end`, async () => {
    const o = await op(id);
    return ['succeeded', 'failed'].includes(o.status) ? o : undefined;
  });

async function restart(windowMs = '600000') {
  if (isRunning(child)) await kill9(child);
  hold(''); // the next lifetime resumes past the point this one was killed at
  child = await startServer(port, env(windowMs));
}

interface Descriptor {
  tier: string;
  host: string;
  port: number;
  database: string;
  schema: string;
  user: string;
  password: string;
  tenantSetting?: string;
}

/** Inserts one row at a time through the tenant's descriptor, following it; remembers what was acknowledged. */
class Writer {
  readonly acked = new Set<string>();
  private stop = false;
  private n = 0;
  private done: Promise<void> = Promise.resolve();
  constructor(
    readonly slug: string,
    readonly tenantId: string,
  ) {}
  start() {
    this.done = this.loop();
    return this;
  }
  private async descriptor(): Promise<Descriptor> {
    for (;;) {
      const d = await api(`/v1/tenants/${this.slug}/connection`)
        .then((r) => (r.ok ? (r.json() as Promise<Descriptor>) : undefined))
        .catch(() => undefined);
      if (d) return d;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  private async loop() {
    while (!this.stop) {
      const d = await this.descriptor();
      const c = new pg.Client({
        host: d.host,
        port: d.port,
        database: d.database,
        user: d.user,
        password: d.password,
      });
      c.on('error', () => {});
      try {
        await c.connect();
        while (!this.stop) {
          const email = `w${++this.n}-${this.slug}`;
          await c.query('BEGIN');
          if (d.tenantSetting)
            await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, this.tenantId]);
          await c.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [this.tenantId, email]);
          await c.query('COMMIT');
          this.acked.add(email);
          await new Promise((r) => setTimeout(r, 25));
        }
      } catch {
        // Frozen, moved, or revoked: follow the descriptor again.
        await new Promise((r) => setTimeout(r, 50));
      } finally {
        await c.end().catch(() => undefined);
      }
    }
  }
  async finish() {
    this.stop = true;
    await this.done;
  }
}

interface Tenant {
  slug: string;
  id: string;
  tier: 'pool' | 'bridge';
  writer?: Writer;
}
const SEED = 200;

async function onboard(tier: 'pool' | 'bridge'): Promise<Tenant> {
  const slug = `pc-${rand(3)}`;
  const created = await (
    await api('/v1/tenants', { method: 'POST', body: JSON.stringify({ slug, name: 'x', tier }) })
  ).json();
  return { slug, id: created.tenant.id, tier, opId: created.operation.id } as Tenant & { opId: string };
}
async function seed(t: Tenant) {
  const schema = t.tier === 'pool' ? 'pool' : tenantObjectName(t.slug);
  await superQuery(
    dataDb,
    `INSERT INTO ${schema}.users (tenant_id, email) SELECT $1, 'seed' || g FROM generate_series(1, ${SEED}) g`,
    [t.id],
  );
}
async function promote(t: Tenant, targetTier: string): Promise<string> {
  const res = await api(`/v1/tenants/${t.slug}/promotions`, {
    method: 'POST',
    body: JSON.stringify({ targetTier }),
  });
  expect(res.status).toBe(202);
  return (await res.json()).operation.id;
}
async function rollback(t: Tenant, promoId: string): Promise<string> {
  const res = await api(`/v1/tenants/${t.slug}/promotions/${promoId}/rollback`, {
    method: 'POST',
    body: '{}',
  });
  expect(res.status).toBe(202);
  return (await res.json()).operation.id;
}

/** The tenant's users where its descriptor points now, read as the superuser. */
async function finalEmails(t: Tenant): Promise<{ tier: string; emails: string[] }> {
  const d: Descriptor = await (await api(`/v1/tenants/${t.slug}/connection`)).json();
  const rows = await superQuery<{ email: string }>(
    d.database,
    `SELECT email FROM ${d.schema}.users WHERE tenant_id = $1`,
    [t.id],
  );
  return { tier: d.tier, emails: rows.map((r) => r.email) };
}

beforeAll(async () => {
  ({ controlDb, dataDb, dataDir, holdFile, port } = await crashScratch('pcrash'));
});
afterAll(async () => {
  // The control and data databases, the silo template and the silos of the tenants promoted here.
  await endCrashScratch(child, { controlDb, dataDb, dataDir });
});

describe('kill -9 inside promotion steps', () => {
  it('every promotion, rollback, abort and cleanup killed mid-step resumes, losing and duplicating nothing', {
    timeout: 240_000,
  }, async () => {
    await restart();
    const pools = await Promise.all(Array.from({ length: 6 }, () => onboard('pool')));
    const bridges = await Promise.all(Array.from({ length: 1 }, () => onboard('bridge')));
    for (const t of [...pools, ...bridges]) {
      await ended((t as Tenant & { opId: string }).opId);
      await seed(t);
    }
    const [p1, p2, p3, r1, ab, cl] = pools as Tenant[];
    const [b1] = bridges as Tenant[];
    // The promotion the rollback case undoes.
    const r1Promo = await promote(r1!, 'silo');
    expect((await ended(r1Promo)).status).toBe('succeeded');

    const checks: { t: Tenant; opId: string; expect: { status: string; tier: string } }[] = [];
    const kill = async (
      t: Tenant,
      start: () => Promise<string>,
      point: string,
      expect: { status: string; tier: string },
      windowMs?: string,
    ) => {
      t.writer ??= new Writer(t.slug, t.id).start();
      // The operation waits at the point until the kill: it cannot run past it while we look.
      hold(point);
      const opId = await start();
      checks.push({ t, opId, expect });
      await atPoint(opId, point);
      await restart(windowMs);
      return opId;
    };
    const silo = { status: 'succeeded', tier: 'silo' };
    // The slot exists and part of the tenant is copied.
    await kill(p1!, () => promote(p1!, 'silo'), 'copy:after-first-table', silo);
    // A batch committed on the target, the slot not yet advanced past it: replayed, not applied twice.
    await kill(b1!, () => promote(b1!, 'silo'), 'apply:before-advance', silo);
    // Frozen in the database, the step not yet recorded.
    await kill(p2!, () => promote(p2!, 'silo'), 'freeze:after-freeze', silo);
    // Routing flipped to the target, nothing else done yet: finished forward.
    await kill(p3!, () => promote(p3!, 'bridge'), 'cutover:after-flip', {
      status: 'succeeded',
      tier: 'bridge',
    });
    // Rollback: routing flipped back to the pool, the pool still frozen: finished forward too.
    await kill(r1!, () => rollback(r1!, r1Promo), 'cutover-back:after-flip', {
      status: 'succeeded',
      tier: 'pool',
    });
    // A promotion whose verification fails (the target is tampered with behind its back), killed while aborting.
    await kill(
      ab!,
      async () => {
        hold('catch-up:start');
        const id = await promote(ab!, 'silo');
        await atPoint(id, 'catch-up:start');
        const c = new pg.Client({ connectionString: adminUrl(tenantObjectName(ab!.slug)) });
        await c.connect();
        await c.query('SET session_replication_role = replica');
        await c.query(`UPDATE app.users SET name = 'tampered' WHERE email = 'seed1'`);
        await c.end();
        hold('abort:after-unfreeze'); // moves the hold on: the promotion goes on, fails, aborts
        return id;
      },
      'abort:after-unfreeze',
      { status: 'failed', tier: 'pool' },
      // The next lifetime runs with a zero rollback window (for the cleanup case).
      '0',
    );
    // A promotion cut over with a zero rollback window: its cleanup job is killed between batches.
    const clPromo = await kill(
      cl!,
      () => promote(cl!, 'bridge'),
      'cleanup:after-batch',
      { status: 'succeeded', tier: 'bridge' },
      '0',
    );

    for (const c of checks) {
      const o = await ended(c.opId);
      expect({ slug: c.t.slug, status: o.status }).toEqual({ slug: c.t.slug, status: c.expect.status });
      if (c.expect.status === 'failed') {
        expect(o.error).toMatch(/verification failed/);
        expect(o.steps.find((x) => x.name === 'abort')?.status).toBe('succeeded');
      }
    }
    await until('the cleanup to finish', async () =>
      (await op(clPromo)).progress.cleanedUp ? true : undefined,
    );
    for (const t of [p1, p2, p3, b1, r1, ab, cl] as Tenant[]) await t.writer?.finish();
    for (const c of checks) {
      const { tier, emails } = await finalEmails(c.t);
      expect({ slug: c.t.slug, tier }).toEqual({ slug: c.t.slug, tier: c.expect.tier });
      // Exactly the seeded rows and the acknowledged writes: nothing lost, nothing twice, nothing refused let in.
      const expected = [
        ...Array.from({ length: SEED }, (_, i) => `seed${i + 1}`),
        ...c.t.writer!.acked,
      ].sort();
      expect(emails.sort()).toEqual(expected);
      expect(c.t.writer!.acked.size).toBeGreaterThan(0);
    }
    const left = await superQuery<{ n: number }>(
      dataDb,
      'SELECT count(*)::int AS n FROM pool.users WHERE tenant_id = $1',
      [cl!.id],
    );
    expect(left[0]!.n).toBe(0);
    expect(
      await superQuery(
        dataDb,
        `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'tenantry_promo_%'`,
      ),
    ).toEqual([]);
  });
});
