import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Db } from '../../control-plane/src/db/db.js';
import { findOperation, findTenantBySlug } from '../../control-plane/src/db/repo.js';
import { TenantryError } from '../../control-plane/src/domain/errors.js';
import type { ConnectionDescriptor, Engine, StepContext } from '../../control-plane/src/domain/ports.js';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import { Metrics } from '../../control-plane/src/lib/metrics.js';
import { TenantService } from '../../control-plane/src/services/tenants.js';
import { OperationExecutor } from '../../control-plane/src/worker/executor.js';
import { adminUrl, dropDatabases, rand, superQuery } from '../helpers/runtime.js';

/** An Engine whose steps fail on cue: the executor's state machine against the real control database. */
class ScriptedEngine implements Engine {
  readonly target = 'local' as const;
  calls: string[] = [];
  failures = new Map<string, Error[]>();
  /** Runs inside a step, before it succeeds or fails. */
  onStep: ((ctx: StepContext) => Promise<void>) | undefined;
  constructor(
    readonly rollsBackFailedOnboarding = true,
    readonly promotionMovesRows = true,
    readonly promotionRollback = true,
  ) {}
  supportsTier(tier: Tier) {
    return tier !== 'account';
  }
  steps(kind: 'onboard' | 'offboard') {
    return kind === 'onboard' ? ['key', 'role', 'schema'] : ['schema', 'role', 'key'];
  }
  async runStep(ctx: StepContext) {
    this.calls.push(`${ctx.kind}:${ctx.step}`);
    await this.onStep?.(ctx);
    const next = this.failures.get(ctx.step)?.shift();
    if (next) throw next;
    return { [ctx.step]: ctx.kind === 'onboard' ? 'done' : null };
  }
  promotionSteps() {
    return ['provision'];
  }
  promotionAbortSteps() {
    return ['abort'];
  }
  async cleanupPromotion() {}
  async sweepPromotionOrphans() {
    return [];
  }
  async connection(): Promise<ConnectionDescriptor> {
    throw new Error('unused');
  }
  async close() {}
}

let db: Db;
let dbName: string;
let engine: ScriptedEngine;
let svc: TenantService;
let exec: OperationExecutor;
const actor = { actor: { id: 'tok_test', name: 'test', role: 'admin' }, requestId: 'req' };

beforeAll(async () => {
  dbName = `cp_exec_${rand()}`;
  await superQuery('postgres', `CREATE DATABASE ${dbName} TEMPLATE ${inject('templateDb')}`);
  db = new Db(adminUrl(dbName), 4);
  engine = new ScriptedEngine();
  svc = new TenantService(db, engine, { templateVersion: 1, maxAttempts: 3 });
  exec = new OperationExecutor(db, engine, pino({ level: 'silent' }), new Metrics(db), {
    maxAttempts: 3,
    leaseMs: 1000,
  });
});
afterAll(async () => {
  await db?.close();
  if (dbName) await dropDatabases([dbName]);
});

async function create(service = svc) {
  const slug = `ex-${rand(3)}`;
  const out = await service.create(actor, { slug, name: 'x', tier: 'bridge' });
  return { slug, opId: out.body.operation.id };
}

/** Another runner takes the operation over (as the reaper and a second worker would after a stall). */
const stealLease = (opId: string) =>
  db.query(
    `UPDATE operations SET lease_owner = 'someone-else', lease_expires_at = now() + interval '1 hour' WHERE id = $1`,
    [opId],
  );

async function activeTenant() {
  const { slug, opId } = await create();
  await exec.run(opId);
  return slug;
}

const auditOf = async (opId: string) =>
  (
    await db.query<{ action: string }>(`SELECT action FROM audit_log WHERE operation_id = $1 ORDER BY id`, [
      opId,
    ])
  ).rows.map((r) => r.action);

describe('operation executor', () => {
  it('runs every step in order, records progress and outputs, and activates the tenant', async () => {
    engine.calls = [];
    const { slug, opId } = await create();
    await exec.run(opId);
    expect(engine.calls).toEqual(['onboard:key', 'onboard:role', 'onboard:schema']);
    const op = await findOperation(db, opId);
    expect(op?.status).toBe('succeeded');
    expect(op?.steps.map((s) => s.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    const t = await findTenantBySlug(db, slug);
    expect(t?.status).toBe('active');
    expect(t?.outputs).toMatchObject({ key: 'done', role: 'done', schema: 'done' });
  });

  it('requeues on a retryable error and resumes at the failed step, not from the start', async () => {
    engine.calls = [];
    engine.failures.set('role', [Object.assign(new Error('connection reset'), { code: 'ECONNRESET' })]);
    const { slug, opId } = await create();
    await expect(exec.run(opId)).rejects.toThrow('connection reset');
    const mid = await findOperation(db, opId);
    expect(mid?.status).toBe('queued');
    expect(mid?.steps.map((s) => s.status)).toEqual(['succeeded', 'pending', 'pending']);
    expect(mid?.steps[1]?.error).toContain('connection reset');
    // Key's record waited (the interval) and went before the run was handed back, with its output.
    expect(await findTenantBySlug(db, slug)).toMatchObject({
      status: 'provisioning',
      outputs: { key: 'done' },
    });
    await exec.run(opId);
    expect(engine.calls).toEqual(['onboard:key', 'onboard:role', 'onboard:role', 'onboard:schema']);
    expect((await findOperation(db, opId))?.status).toBe('succeeded');
  });

  it("writes an onboarding's step records at most once per interval: a short one writes only its claim and its end", async () => {
    engine.calls = [];
    const { slug, opId } = await create();
    const log = `reclog_${rand(3)}`;
    await db.query(
      `CREATE TABLE ${log} (n serial, status text, steps jsonb);
       CREATE FUNCTION ${log}() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO ${log} (status, steps) VALUES (NEW.status, NEW.steps); RETURN NEW; END $$;
       CREATE TRIGGER ${log} BEFORE UPDATE ON operations FOR EACH ROW WHEN (NEW.id = '${opId}')
         EXECUTE FUNCTION ${log}();`,
    );
    try {
      await exec.run(opId);
      const writes = await db.query<{ status: string; steps: { status: string }[] }>(
        `SELECT status, steps FROM ${log} ORDER BY n`,
      );
      // The claim, then the end with every step: no step record in between.
      expect(writes.rows.map((r) => [r.status, r.steps.map((x) => x.status).join(',')])).toEqual([
        ['running', 'pending,pending,pending'],
        ['succeeded', 'succeeded,succeeded,succeeded'],
      ]);
      // The end carried every step's outputs to the tenant.
      expect((await findTenantBySlug(db, slug))?.outputs).toMatchObject({
        key: 'done',
        role: 'done',
        schema: 'done',
      });
    } finally {
      await db.query(`DROP TRIGGER ${log} ON operations; DROP FUNCTION ${log}(); DROP TABLE ${log}`);
    }
  });

  it("records a slow onboarding step's start, and the steps before it with their outputs, within the interval", async () => {
    engine.calls = [];
    let release = () => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    engine.onStep = async (ctx) => {
      if (ctx.step === 'role') await held;
    };
    try {
      const { slug, opId } = await create();
      const run = exec.run(opId);
      const until = Date.now() + 5000;
      let seen: string[] = [];
      while (Date.now() < until) {
        seen = ((await findOperation(db, opId))?.steps ?? []).map((x) => `${x.name}:${x.status}`);
        if (seen[1] === 'role:running') break;
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(seen).toEqual(['key:succeeded', 'role:running', 'schema:pending']);
      expect((await findTenantBySlug(db, slug))?.outputs).toMatchObject({ key: 'done' });
      release();
      await run;
      expect((await findOperation(db, opId))?.status).toBe('succeeded');
    } finally {
      engine.onStep = undefined;
      release();
    }
  });

  it('runs a step again when its record fails behind the next step, and again when the run hands it back', async () => {
    // Step records are written behind the steps (worker/step-records.ts); with recordEveryMs 0 each
    // step's goes as it ends. Role's record fails, with a retryable error, while schema runs, and
    // again when the run records what waits before handing itself back: the run is handed back with
    // role pending, its output never on the tenant, and role runs again.
    const exec = new OperationExecutor(db, engine, pino({ level: 'silent' }), new Metrics(db), {
      maxAttempts: 3,
      leaseMs: 1000,
      recordEveryMs: 0,
    });
    engine.calls = [];
    const { slug, opId } = await create();
    const seq = `flaky_${rand(3)}`;
    await db.query(`CREATE SEQUENCE ${seq}`);
    await db.query(
      `CREATE FUNCTION ${seq}() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.steps @> '[{"name": "role", "status": "succeeded"}]'
            AND NOT OLD.steps @> '[{"name": "role", "status": "succeeded"}]'
            AND nextval('${seq}') <= 2 THEN
           RAISE EXCEPTION 'role record lost' USING ERRCODE = '40001';
         END IF;
         RETURN NEW;
       END $$;
       CREATE TRIGGER ${seq} BEFORE UPDATE ON operations FOR EACH ROW WHEN (NEW.id = '${opId}')
         EXECUTE FUNCTION ${seq}();`,
    );
    try {
      await expect(exec.run(opId)).rejects.toThrow('role record lost');
      const mid = await findOperation(db, opId);
      expect(mid?.status).toBe('queued');
      expect(mid?.steps.map((s) => s.status)).toEqual(['succeeded', 'pending', 'pending']);
      expect((await findTenantBySlug(db, slug))?.outputs).not.toHaveProperty('role');
      await exec.run(opId);
      expect(engine.calls).toEqual([
        'onboard:key',
        'onboard:role',
        'onboard:schema',
        'onboard:role',
        'onboard:schema',
      ]);
      expect((await findOperation(db, opId))?.status).toBe('succeeded');
      expect((await findTenantBySlug(db, slug))?.outputs).toMatchObject({
        key: 'done',
        role: 'done',
        schema: 'done',
      });
    } finally {
      await db.query(`DROP TRIGGER ${seq} ON operations; DROP FUNCTION ${seq}(); DROP SEQUENCE ${seq}`);
    }
  });

  it('a run whose lease was requeued while it stalled stops, when the new run is in the same process', async () => {
    // Run A stalls in its first step past its lease; the reaper requeues the operation and run B of
    // the same executor (another worker slot) claims it. A's lease is its run's own, so its heartbeat
    // fails and it stops at the next step instead of running beside B (it ran role and schema again
    // when the lease belonged to the process).
    engine.calls = [];
    let n = 0;
    let releaseA = () => {};
    let releaseB = () => {};
    const heldA = new Promise<void>((r) => {
      releaseA = r;
    });
    const heldB = new Promise<void>((r) => {
      releaseB = r;
    });
    engine.onStep = async (ctx) => {
      n++;
      if (n === 1) await heldA;
      if (n === 3 && ctx.step === 'role') await heldB;
    };
    try {
      const { opId } = await create();
      const a = exec.run(opId).catch((e: unknown) => e);
      while (engine.calls.length < 1) await new Promise((r) => setTimeout(r, 10));
      // What the reaper does to a lease that expired.
      await db.query(
        `UPDATE operations SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL WHERE id = $1`,
        [opId],
      );
      const b = exec.run(opId);
      while (engine.calls.length < 3) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 800)); // A's heartbeats (every lease/3) find the lease gone
      releaseA();
      expect(String(await a)).toContain('lease lost');
      releaseB();
      await b;
      expect(engine.calls).toEqual(['onboard:key', 'onboard:key', 'onboard:role', 'onboard:schema']);
      expect((await findOperation(db, opId))?.status).toBe('succeeded');
    } finally {
      engine.onStep = undefined;
      releaseA();
      releaseB();
    }
  });

  it('fails a terminal error with its reason, rolls back through the offboard steps, and marks the tenant failed', async () => {
    engine.calls = [];
    engine.failures.set('schema', [new TenantryError('PROVIDER_FAILED', 'template does not apply')]);
    const { slug, opId } = await create();
    await exec.run(opId);
    const op = await findOperation(db, opId);
    expect(op?.status).toBe('failed');
    expect(op?.error).toContain('template does not apply');
    expect(op?.steps.map((s) => `${s.name}:${s.status}`)).toEqual([
      'key:succeeded',
      'role:succeeded',
      'schema:failed',
      'rollback:schema:succeeded',
      'rollback:role:succeeded',
      'rollback:key:succeeded',
    ]);
    expect((await findTenantBySlug(db, slug))?.status).toBe('failed');
    const audit = await db.query<{ action: string }>(`SELECT action FROM audit_log WHERE operation_id = $1`, [
      opId,
    ]);
    expect(audit.rows.map((r) => r.action)).toContain('operation.onboard.failed');
  });

  it('gives up cleanly after maxAttempts retryable failures', async () => {
    engine.failures.set(
      'key',
      Array.from({ length: 10 }, () => Object.assign(new Error('too many connections'), { code: '53300' })),
    );
    const { slug, opId } = await create();
    for (let i = 0; i < 3; i++) await exec.run(opId).catch(() => undefined);
    await exec.run(opId);
    const op = await findOperation(db, opId);
    expect(op?.status).toBe('failed');
    expect((await findTenantBySlug(db, slug))?.status).toBe('failed');
    engine.failures.clear();
  });

  it('does not run an operation another live runner holds, and reaps an expired lease', async () => {
    const { opId } = await create();
    await db.query(
      `UPDATE operations SET status = 'running', lease_owner = 'someone-else', lease_expires_at = now() + interval '1 hour' WHERE id = $1`,
      [opId],
    );
    engine.calls = [];
    await exec.run(opId);
    expect(engine.calls).toEqual([]);
    expect(await exec.reapExpiredLeases()).not.toContain(opId);
    await db.query(`UPDATE operations SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, [
      opId,
    ]);
    expect(await exec.reapExpiredLeases()).toContain(opId);
    const job = await db.query(`SELECT 1 FROM graphile_worker._private_jobs WHERE key = $1`, [opId]);
    expect(job.rows).toHaveLength(1);
    await exec.run(opId);
    expect((await findOperation(db, opId))?.status).toBe('succeeded');
  });

  it('refuses a second active operation for one tenant at the database level', async () => {
    const { slug } = await create();
    await expect(svc.offboard(actor, slug, slug)).rejects.toMatchObject({ code: 'OPERATION_IN_PROGRESS' });
  });

  it('a runner that lost its lease neither compensates nor fails the operation', async () => {
    engine.calls = [];
    engine.failures.set('schema', [new TenantryError('PROVIDER_FAILED', 'template does not apply')]);
    const { slug, opId } = await create();
    engine.onStep = async (ctx) => {
      if (ctx.step === 'schema') await stealLease(opId);
    };
    try {
      await exec.run(opId);
    } finally {
      engine.onStep = undefined;
      engine.failures.clear();
    }
    expect(engine.calls).toEqual(['onboard:key', 'onboard:role', 'onboard:schema']);
    const op = await db.query<{ status: string; lease_owner: string }>(
      'SELECT status, lease_owner FROM operations WHERE id = $1',
      [opId],
    );
    expect(op.rows[0]).toEqual({ status: 'running', lease_owner: 'someone-else' });
    expect((await findTenantBySlug(db, slug))?.status).toBe('provisioning');
    expect(await auditOf(opId)).not.toContain('operation.onboard.failed');
  });

  it('a runner that lost its lease does not record a promotion it finished', async () => {
    const slug = await activeTenant();
    const promo = await svc.promote(actor, slug, 'silo');
    const opId = promo.body.operation.id;
    engine.onStep = async (ctx) => {
      if (ctx.step === 'provision') await stealLease(opId);
    };
    try {
      await exec.run(opId);
    } finally {
      engine.onStep = undefined;
    }
    expect((await findOperation(db, opId))?.status).toBe('running');
    expect((await findTenantBySlug(db, slug))?.tier).toBe('bridge');
    expect(await auditOf(opId)).not.toContain('tenant.promotion.cutover');
  });

  it('a promotion that fails past its routing flip is not aborted, and resumes from the failed step', async () => {
    const slug = await activeTenant();
    const promo = await svc.promote(actor, slug, 'silo');
    const opId = promo.body.operation.id;
    engine.calls = [];
    engine.failures.set('provision', [
      new TenantryError('PROVIDER_FAILED', 'grants failed after the flip', {
        context: { forwardOnly: true },
      }),
    ]);
    await exec.run(opId);
    expect(engine.calls).toEqual(['promote:provision']); // no abort step ran
    const failed = await findOperation(db, opId);
    expect(failed?.status).toBe('failed');
    expect(failed?.error).toMatch(/resume it/);
    expect(failed?.progress.resumable).toBe(true);
    expect(failed?.steps.map((x) => `${x.name}:${x.status}`)).toEqual(['provision:failed']);
    expect((await findTenantBySlug(db, slug))?.status).toBe('active');
    // Nothing else may start on the tenant until it is resumed.
    await expect(svc.offboard(actor, slug, slug)).rejects.toMatchObject({ code: 'OPERATION_IN_PROGRESS' });
    const resumed = await svc.resume(actor, opId);
    expect(resumed.operation).toMatchObject({ status: 'queued', attempts: 0 });
    expect(resumed.operation.steps.map((x) => `${x.name}:${x.status}`)).toEqual(['provision:pending']);
    const job = await db.query(`SELECT 1 FROM graphile_worker._private_jobs WHERE key = $1`, [opId]);
    expect(job.rows).toHaveLength(1);
    await exec.run(opId);
    expect((await findOperation(db, opId))?.status).toBe('succeeded');
    expect((await findTenantBySlug(db, slug))?.tier).toBe('silo');
    expect(await auditOf(opId)).toEqual(
      expect.arrayContaining(['operation.promote.failed', 'operation.resume', 'tenant.promotion.cutover']),
    );
  });

  it('refuses a promotion on a target that would only re-provision (routing to an empty placement)', async () => {
    const reprovisionOnly = new ScriptedEngine(false, false);
    const svc3 = new TenantService(db, reprovisionOnly, { templateVersion: 1, maxAttempts: 3 });
    const { slug, opId } = await create(svc3);
    await exec.run(opId);
    expect((await findTenantBySlug(db, slug))?.status).toBe('active');
    await expect(svc3.promote(actor, slug, 'silo')).rejects.toMatchObject({
      code: 'PROMOTION_NOT_AVAILABLE_ON_TARGET',
    });
    // Nothing was queued or audited for it.
    const { rows } = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM operations o JOIN tenants t ON t.id = o.tenant_id WHERE t.slug = $1 AND o.kind = 'promote'`,
      [slug],
    );
    expect(rows[0]?.n).toBe(0);
  });

  it('refuses a rollback on a target that cannot move the rows back, queuing nothing', async () => {
    const noRollback = new ScriptedEngine(false, true, false);
    const svc3 = new TenantService(db, noRollback, { templateVersion: 1, maxAttempts: 3 });
    const exec3 = new OperationExecutor(db, noRollback, pino({ level: 'silent' }), new Metrics(db), {
      maxAttempts: 3,
      leaseMs: 1000,
    });
    const { slug, opId } = await create(svc3);
    await exec3.run(opId);
    const promo = await svc3.promote(actor, slug, 'silo');
    await exec3.run(promo.body.operation.id);
    expect((await findOperation(db, promo.body.operation.id))?.status).toBe('succeeded');
    await expect(svc3.rollback(actor, slug, promo.body.operation.id)).rejects.toMatchObject({
      code: 'ROLLBACK_NOT_AVAILABLE_ON_TARGET',
    });
    const { rows } = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM operations WHERE params->>'rollbackOf' = $1`,
      [promo.body.operation.id],
    );
    expect(rows[0]?.n).toBe(0);
  });

  it('an onboarding the engine does not roll back is kept and resumes from its failed step', async () => {
    const keeping = new ScriptedEngine(false);
    const svc2 = new TenantService(db, keeping, { templateVersion: 1, maxAttempts: 3 });
    const exec2 = new OperationExecutor(db, keeping, pino({ level: 'silent' }), new Metrics(db), {
      maxAttempts: 3,
      leaseMs: 1000,
    });
    keeping.failures.set('role', [new TenantryError('PROVIDER_FAILED', 'quota exceeded')]);
    const { slug, opId } = await create(svc2);
    await exec2.run(opId);
    const failed = await findOperation(db, opId);
    expect(failed?.status).toBe('failed');
    expect(failed?.steps.map((x) => `${x.name}:${x.status}`)).toEqual([
      'key:succeeded',
      'role:failed',
      'schema:pending',
    ]);
    expect((await findTenantBySlug(db, slug))?.status).toBe('failed');
    await svc2.resume(actor, opId);
    expect((await findTenantBySlug(db, slug))?.status).toBe('provisioning');
    keeping.calls = [];
    await exec2.run(opId);
    expect(keeping.calls).toEqual(['onboard:role', 'onboard:schema']);
    expect((await findOperation(db, opId))?.status).toBe('succeeded');
    expect((await findTenantBySlug(db, slug))?.status).toBe('active');
  });

  it('refuses to resume what is in flight, succeeded, or was undone, with 409 codes', async () => {
    const { opId } = await create();
    await expect(svc.resume(actor, opId)).rejects.toMatchObject({ code: 'OPERATION_IN_PROGRESS' });
    await exec.run(opId);
    await expect(svc.resume(actor, opId)).rejects.toMatchObject({
      code: 'OPERATION_NOT_RESUMABLE',
      message: expect.stringMatching(/is succeeded; only a failed operation/),
    });
    engine.failures.set('schema', [new TenantryError('PROVIDER_FAILED', 'template does not apply')]);
    const rolled = await create();
    await exec.run(rolled.opId);
    await expect(svc.resume(actor, rolled.opId)).rejects.toMatchObject({
      code: 'OPERATION_NOT_RESUMABLE',
      message: expect.stringMatching(/its failure was undone/),
    });
    await expect(svc.resume(actor, `op_${'0'.repeat(28)}`)).rejects.toMatchObject({
      code: 'OPERATION_NOT_FOUND',
    });
  });

  it('writes the resource events a step emitted faster than the throttle when the step ends', async () => {
    const { opId } = await create();
    engine.onStep = async (ctx) => {
      if (ctx.step !== 'key') return;
      for (const status of ['running', 'running', 'succeeded'])
        ctx.onResourceEvent?.({ resource: 'aws:kms:Key', action: 'create', status });
    };
    try {
      await exec.run(opId);
    } finally {
      engine.onStep = undefined;
    }
    const op = await findOperation(db, opId);
    expect(((op?.progress.resources ?? []) as { status: string }[]).map((r) => r.status)).toEqual([
      'running',
      'running',
      'succeeded',
    ]);
  });
});
