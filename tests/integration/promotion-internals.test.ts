import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../control-plane/src/dataplane/dataplane.js';
import type { PromotionParams } from '../../control-plane/src/domain/ports.js';
import { LocalEngine } from '../../control-plane/src/engine/local.js';
import { Metrics } from '../../control-plane/src/lib/metrics.js';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import { LocalKeyStore, loadRootKey } from '../../control-plane/src/local/keystore.js';
import { BinaryRowCounter } from '../../control-plane/src/promotion/binary-copy.js';
import { replicationNames } from '../../control-plane/src/promotion/replication.js';
import { freezeTenant, unfreezeTenant } from '../../control-plane/src/providers/postgres/index.js';
import { OperationExecutor } from '../../control-plane/src/worker/executor.js';
import {
  adminUrl,
  auth,
  connectionOf,
  rand,
  startStack,
  superQuery,
  type TestStack,
} from '../helpers/runtime.js';
import {
  asTenant,
  type Descriptor,
  getOperation,
  objectName,
  promotionLeftovers,
} from './promotion-helpers.js';

/**
 * Promotion internals against real Postgres, driven by engines built here with small limits (no
 * worker runs in this stack: every operation is run by hand, by the executor under test). The
 * tenant template gains a table with a serial key, so sequences are exercised too.
 */
let s: TestStack;
let templatesDir: string;
const dps: DataPlane[] = [];

beforeAll(async () => {
  templatesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-tpl-'));
  const root = path.resolve(import.meta.dirname, '../../templates');
  const tiers = JSON.parse(fs.readFileSync(path.join(root, 'tiers.json'), 'utf8'));
  tiers.templateVersion = 2;
  fs.writeFileSync(path.join(templatesDir, 'tiers.json'), JSON.stringify(tiers));
  fs.mkdirSync(path.join(templatesDir, 'tenant-schema'));
  fs.copyFileSync(
    path.join(root, 'tenant-schema/0001_init.sql'),
    path.join(templatesDir, 'tenant-schema/0001_init.sql'),
  );
  fs.writeFileSync(
    path.join(templatesDir, 'tenant-schema/0002_events.sql'),
    `CREATE TABLE events (tenant_id uuid NOT NULL, id bigserial NOT NULL, kind text NOT NULL, PRIMARY KEY (tenant_id, id));`,
  );
  s = await startStack({
    TENANTRY_ROLE: 'api',
    TENANTRY_TEMPLATES_DIR: templatesDir,
    TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: '600000',
  });
  plain = rig();
});
afterAll(async () => {
  await s?.close();
  await Promise.all(dps.map((d) => d.close()));
  fs.rmSync(templatesDir, { recursive: true, force: true });
});

/** An engine on the stack's data plane and key store, with its own promotion limits, and its executor. */
function rig(promotion: Record<string, unknown> = {}) {
  const dp = new DataPlane(adminUrl(s.dataDb));
  dps.push(dp);
  const keys = new LocalKeyStore(s.runtime.services.db, loadRootKey(s.config.dataDir));
  const tpl = loadTemplates(templatesDir);
  const engine = new LocalEngine(dp, keys, tpl.catalog, tpl.tenantSchema, { promotion });
  const exec = new OperationExecutor(
    s.runtime.services.db,
    engine,
    pino({ level: 'silent' }),
    new Metrics(s.runtime.services.db),
    { maxAttempts: 3, leaseMs: 10_000 },
  );
  return { engine, exec };
}
let plain: ReturnType<typeof rig>;

async function onboard(tier: 'pool' | 'bridge') {
  const slug = `in-${tier}-${rand(3)}`;
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: auth(s.tokens['sales-ops']),
    payload: { slug, name: slug, tier },
  });
  const { tenant, operation } = res.json();
  await s.runtime.executor.run(operation.id);
  return { slug, id: tenant.id as string, d: await connectionOf(s, slug) };
}

async function promote(slug: string, targetTier: string, exec?: OperationExecutor) {
  const res = await s.app.inject({
    method: 'POST',
    url: `/v1/tenants/${slug}/promotions`,
    headers: auth(s.tokens.sre),
    payload: { targetTier },
  });
  const id: string = res.json().operation.id;
  await (exec ?? plain.exec).run(id).catch(() => undefined);
  return id;
}

describe('binary COPY row counter', () => {
  it('counts the tuples of a binary COPY stream however it is chunked, and reports every N rows', async () => {
    const c = new pg.Client({ connectionString: adminUrl(s.dataDb) });
    await c.connect();
    const { to } = await import('pg-copy-streams');
    const chunks: Buffer[] = [];
    await pipeline(
      c.query(
        to(
          `COPY (SELECT g, repeat('x', g % 50), CASE WHEN g % 3 = 0 THEN NULL ELSE g END, '' FROM generate_series(1, 1003) g) TO STDOUT (FORMAT binary)`,
        ),
      ),
      new Writable({
        write(chunk, _e, done) {
          chunks.push(chunk);
          done();
        },
      }),
    );
    await c.end();
    const whole = Buffer.concat(chunks);
    for (const size of [1, 3, 7, 64, 4096, whole.length]) {
      const seen: number[] = [];
      const counter = new BinaryRowCounter(250, (n) => seen.push(n));
      const parts = Array.from({ length: Math.ceil(whole.length / size) }, (_, i) =>
        whole.subarray(i * size, (i + 1) * size),
      );
      await pipeline(
        Readable.from(parts),
        counter,
        new Writable({
          write(_c, _e, done) {
            done();
          },
        }),
      );
      expect(counter.rows).toBe(1003);
      expect(seen).toEqual([250, 500, 750, 1000]);
    }
  });
});

describe('copy progress', () => {
  it('reports rows copied while a table is being copied, not only when it is done', async () => {
    const { engine } = rig({ copyProgressRows: 10 });
    const t = await onboard('pool');
    await superQuery(
      s.dataDb,
      `INSERT INTO pool.users (tenant_id, email) SELECT $1, 'u' || g FROM generate_series(1, 35) g`,
      [t.id],
    );
    const operationId = `op_${randomUUID().replaceAll('-', '').slice(0, 28)}`;
    const params: PromotionParams = { fromTier: 'pool', toTier: 'silo' };
    const seen: number[] = [];
    const progress: Record<string, unknown> = {};
    const ctx = (step: string) => ({
      operationId,
      kind: 'promote' as const,
      step,
      tenant: { id: t.id, slug: t.slug, tier: 'pool' as const, templateVersion: 2 },
      signal: new AbortController().signal,
      params: { ...params },
      progress,
      report: async (patch: Record<string, unknown>) => {
        Object.assign(progress, patch);
        const users = (patch.rowsCopied as Record<string, number> | undefined)?.users;
        if (users !== undefined && seen.at(-1) !== users) seen.push(users);
      },
    });
    try {
      for (const step of ['provision', 'replication', 'copy']) await engine.runStep(ctx(step));
      expect(seen).toEqual([10, 20, 30, 35]);
    } finally {
      await engine.runStep(ctx('abort'));
    }
    expect(
      await superQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [objectName(t.slug)]),
    ).toHaveLength(0);
  });
});

describe('the change stream', () => {
  it('keeps a row whose key changes while a TOASTed column stays as it was', async () => {
    const t = await onboard('pool');
    const big = `(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 250) g)`;
    const [doc] = await superQuery<{ id: string; sum: string }>(
      s.dataDb,
      `WITH u AS (INSERT INTO pool.users (tenant_id, email) VALUES ($1, 'owner@x') RETURNING id)
       INSERT INTO pool.documents (tenant_id, owner_id, title, body) SELECT $1, u.id, 'big', ${big} FROM u
       RETURNING id, md5(body) AS sum`,
      [t.id],
    );
    // Stored out of line: an UPDATE that leaves it alone sends it as "unchanged".
    const [toast] = await superQuery<{ n: number }>(
      s.dataDb,
      `SELECT pg_column_size(body) AS n FROM pool.documents WHERE tenant_id = $1`,
      [t.id],
    );
    expect(toast!.n).toBeGreaterThan(2000);
    const newId = randomUUID();
    plain.engine.setFaultHook(async (point, ctx) => {
      if (point !== 'catch-up:start' || ctx.tenantId !== t.id) return;
      await superQuery(s.dataDb, `UPDATE pool.documents SET id = $2, title = 'moved' WHERE tenant_id = $1`, [
        t.id,
        newId,
      ]);
    });
    let id: string;
    try {
      id = await promote(t.slug, 'silo');
    } finally {
      plain.engine.setFaultHook(undefined);
    }
    const op = await getOperation(s, id);
    expect(op.error).toBeUndefined();
    expect(op.status).toBe('succeeded');
    const rows = await superQuery<{ id: string; title: string; sum: string }>(
      objectName(t.slug),
      'SELECT id, title, md5(body) AS sum FROM app.documents',
    );
    expect(rows).toEqual([{ id: newId, title: 'moved', sum: doc!.sum }]);
  });

  it('replays a batch applied but not yet acknowledged (crash) without applying it twice', async () => {
    const t = await onboard('pool');
    await superQuery(s.dataDb, `INSERT INTO pool.users (tenant_id, email) VALUES ($1, 'seed@x')`, [t.id]);
    let failed = false;
    plain.engine.setFaultHook(async (point, ctx) => {
      if (ctx.tenantId !== t.id) return;
      if (point === 'catch-up:start' && !failed) {
        // Inside one batch: a user, deleted, and a new user holding the same (unique) email.
        await superQuery(
          s.dataDb,
          `INSERT INTO pool.users (tenant_id, email, name) VALUES ($1, 'e@x', 'first')`,
          [t.id],
        );
        await superQuery(s.dataDb, `DELETE FROM pool.users WHERE tenant_id = $1 AND email = 'e@x'`, [t.id]);
        await superQuery(
          s.dataDb,
          `INSERT INTO pool.users (tenant_id, email, name) VALUES ($1, 'e@x', 'second')`,
          [t.id],
        );
      }
      if (point === 'apply:before-advance' && !failed) {
        failed = true; // the connection drops after the target committed, before the slot moved on
        throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
      }
    });
    let id: string;
    try {
      id = await promote(t.slug, 'silo'); // fails retryably at the fault, requeued
      expect((await getOperation(s, id)).status).toBe('queued');
      await plain.exec.run(id);
    } finally {
      plain.engine.setFaultHook(undefined);
    }
    const op = await getOperation(s, id);
    expect(op.error).toBeUndefined();
    expect(op.status).toBe('succeeded');
    expect(failed).toBe(true);
    const rows = await superQuery<{ email: string; name: string }>(
      objectName(t.slug),
      'SELECT email, name FROM app.users ORDER BY email',
    );
    expect(rows).toEqual([
      { email: 'e@x', name: 'second' },
      { email: 'seed@x', name: '' },
    ]);
  });
});

describe('replication lag limit', () => {
  it('aborts a promotion whose slot retains more WAL than the limit, during the copy', async () => {
    // No timer tick decides this: the poll interval is far longer than the test, WAL is written on
    // purpose while the slot exists (inside the copy), and the copy's closing measurement must
    // see it and fail the step.
    const { engine, exec } = rig({ maxLagBytes: 1, lagPollMs: 3_600_000 });
    const t = await onboard('pool');
    await superQuery(
      s.dataDb,
      `INSERT INTO pool.users (tenant_id, email) SELECT $1, 'u' || g FROM generate_series(1, 100) g`,
      [t.id],
    );
    let walWritten = false;
    engine.setFaultHook(async (point, ctx) => {
      if (ctx.tenantId !== t.id || point !== 'copy:after-first-table') return;
      await superQuery(s.dataDb, `SELECT pg_logical_emit_message(false, 'test', repeat('x', 1000))`);
      walWritten = true;
    });
    const id = await promote(t.slug, 'silo', exec);
    expect(walWritten).toBe(true);
    const op = await getOperation(s, id);
    expect(op.status).toBe('failed');
    expect(op.error).toMatch(/replication lag: slot .* retains \d+ bytes of WAL, past the 1-byte limit/);
    expect(op.steps.find((x: { name: string }) => x.name === 'copy')?.status).toBe('failed');
    expect(op.steps.find((x: { name: string }) => x.name === 'abort')?.status).toBe('succeeded');
    expect(
      await superQuery(s.dataDb, 'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [
        replicationNames(id).slot,
      ]),
    ).toHaveLength(0);
    expect((await connectionOf(s, t.slug)).tier).toBe('pool');
  });

  it('the sweep drops the slot of a promotion waiting for a retry once it retains too much', async () => {
    const { engine } = rig({ maxLagBytes: 1 });
    const waiting = `op_${'cd'.repeat(14)}`;
    const slot = replicationNames(waiting).slot;
    await superQuery(s.dataDb, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    await superQuery(s.dataDb, `SELECT pg_logical_emit_message(false, 'test', repeat('x', 1000))`);
    // In flight (running): left alone, whatever it holds.
    expect(await engine.sweepPromotionOrphans([waiting], [])).not.toContain(slot);
    // Queued for a retry: dropped.
    expect(await engine.sweepPromotionOrphans([waiting], [waiting])).toContain(slot);
    expect(
      await superQuery(s.dataDb, 'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slot]),
    ).toHaveLength(0);
  });
});

describe('sequences', () => {
  it('follow the tenant to its new placement, and back on rollback', async () => {
    const t = await onboard('pool');
    const other = await onboard('pool');
    // The pool's sequence is shared: other tenants move it too.
    for (const x of [t, other, t])
      await asTenant(x.d, (c) =>
        c.query(`INSERT INTO events (tenant_id, kind) SELECT $1, 'e' FROM generate_series(1, 5)`, [x.id]),
      );
    const id = await promote(t.slug, 'silo');
    expect((await getOperation(s, id)).status).toBe('succeeded');
    const silo = await connectionOf(s, t.slug);
    const maxPool = await superQuery<{ m: string }>(s.dataDb, 'SELECT max(id)::text AS m FROM pool.events');
    const next = await asTenant(silo, (c) =>
      c.query<{ id: string }>(
        `INSERT INTO events (tenant_id, kind) VALUES ($1, 'on-silo') RETURNING id::text`,
        [t.id],
      ),
    );
    expect(BigInt(next.rows[0]!.id)).toBeGreaterThan(BigInt(maxPool[0]!.m));
    await asTenant(silo, (c) =>
      c.query(`INSERT INTO events (tenant_id, kind) SELECT $1, 'x' FROM generate_series(1, 20)`, [t.id]),
    );
    const rb = await s.app.inject({
      method: 'POST',
      url: `/v1/tenants/${t.slug}/promotions/${id}/rollback`,
      headers: auth(s.tokens.sre),
    });
    await plain.exec.run(rb.json().operation.id);
    expect((await getOperation(s, rb.json().operation.id)).status).toBe('succeeded');
    const back = await connectionOf(s, t.slug);
    const maxAll = await superQuery<{ m: string }>(
      s.dataDb,
      'SELECT max(id)::text AS m FROM pool.events WHERE tenant_id = $1',
      [t.id],
    );
    const after = await asTenant(back, (c) =>
      c.query<{ id: string }>(`INSERT INTO events (tenant_id, kind) VALUES ($1, 'back') RETURNING id::text`, [
        t.id,
      ]),
    );
    expect(BigInt(after.rows[0]!.id)).toBeGreaterThan(BigInt(maxAll[0]!.m));
    expect(await promotionLeftovers(s, t.slug)).toBe(0);
  });
});

describe('the write freeze', () => {
  const insert = (d: Descriptor, id: string, email: string) =>
    asTenant(d, (c) => c.query(`INSERT INTO users (tenant_id, email) VALUES ($1, $2)`, [id, email]));

  it('waits for the writers’ older transactions, refuses later writes, and touches no other tenant', async () => {
    const a = await onboard('pool');
    const b = await onboard('pool');
    // A transaction of a's that began (and wrote) before the freeze.
    const open = new pg.Client({
      host: a.d.host,
      port: a.d.port,
      database: a.d.database,
      user: a.d.user,
      password: a.d.password,
    });
    await open.connect();
    await open.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await open.query('SELECT set_config($1, $2, true)', [a.d.tenantSetting, a.id]);
    await open.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'early@x')`, [a.id]);
    let committed = false;
    const spec = { schema: 'pool', tenantId: a.id, reason: 'promotion' as const, writers: [a.d.user] };
    // While it stays open, the freeze gives up (retryably) and lifts itself.
    const db = new pg.Client({ connectionString: adminUrl(s.dataDb) });
    await db.connect();
    try {
      await expect(freezeTenant(db, { ...spec, waitMs: 200 })).rejects.toMatchObject({ code: '55P03' });
      await insert(a.d, a.id, 'still-writable@x');
      const frozen = freezeTenant(db, { ...spec, waitMs: 30_000 }).then(() => committed);
      // Its snapshot predates the freeze: it may still write, and the freeze waits for its commit.
      await open.query(`INSERT INTO users (tenant_id, email) VALUES ($1, 'early-2@x')`, [a.id]);
      committed = true;
      await open.query('COMMIT');
      expect(await frozen).toBe(true);
      await expect(insert(a.d, a.id, 'late@x')).rejects.toThrow(/read-only while it moves to another tier/);
      await expect(
        asTenant(a.d, (c) => c.query(`UPDATE users SET name = 'x' WHERE tenant_id = $1`, [a.id])),
      ).rejects.toMatchObject({ code: '25006' });
      await insert(b.d, b.id, 'other@x');
      // A statement that switches its session to the frozen tenant while it runs: its rows decide.
      await expect(
        asTenant(b.d, (c) =>
          c.query(
            `INSERT INTO users (tenant_id, email) SELECT $1::uuid, 'sneak@x' FROM (SELECT set_config('app.tenant_id', $1, true)) s`,
            [a.id],
          ),
        ),
      ).rejects.toThrow(/read-only while it moves|row-level security/);
      // A session acting for b that writes a's id gets the row-level security error, not a's freeze.
      await expect(insert(b.d, a.id, 'cross@x')).rejects.toThrow(/row-level security/);
      const rows = await superQuery<{ email: string }>(
        s.dataDb,
        'SELECT email FROM pool.users WHERE tenant_id = $1 ORDER BY email',
        [a.id],
      );
      expect(rows.map((r) => r.email)).toEqual(['early-2@x', 'early@x', 'still-writable@x']);
      // The pool role can neither read nor change the freeze.
      await expect(asTenant(a.d, (c) => c.query('DELETE FROM tenantry_meta.frozen_tenants'))).rejects.toThrow(
        /permission denied/,
      );
      await unfreezeTenant(db, 'pool', a.id);
      await insert(a.d, a.id, 'thawed@x');
    } finally {
      await open.end().catch(() => undefined);
      await db.end();
    }
  });
});
