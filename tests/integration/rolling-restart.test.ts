import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, createFleet, type Fleet, type Proc, untilOperationsEnd } from '../helpers/fleet.js';
import { superQuery } from '../helpers/runtime.js';
import { isRunning, kill9, signal } from '../helpers/server.js';

/**
 * SIGTERM as a rolling restart sends it: the process answers /readyz 503 at once, keeps serving for
 * TENANTRY_SHUTDOWN_DELAY_MS (a load balancer takes it out meanwhile), finishes its in-flight requests,
 * and hands the operations still running after TENANTRY_DRAIN_TIMEOUT_MS back to the queue, where
 * another process takes them up at once instead of waiting for their lease to expire.
 */
let fleet: Fleet;
beforeAll(async () => {
  fleet = await createFleet('rr');
});
afterAll(async () => {
  await fleet?.drop();
});

const onboard = async (base: string, slug: string, tier: string) => {
  const res = await call(base, fleet.adminToken, '/v1/tenants', {
    method: 'POST',
    body: JSON.stringify({ slug, name: slug, tier }),
  });
  return {
    status: res.status,
    body: (await res.json()) as { operation?: { id: string }; tenant?: { id: string } },
  };
};

describe('SIGTERM to a worker', () => {
  it('hands its running operation back to the queue before it exits, and another worker finishes it', async () => {
    const hold = path.join(fleet.dir, 'hold-drain');
    fs.writeFileSync(hold, 'step:schema');
    // A lease far longer than the test's bounds: only the hand-back can requeue the operation in time.
    const lease = { TENANTRY_OPERATION_LEASE_MS: '600000' };
    const api = await fleet.start({ ...lease, TENANTRY_ROLE: 'api' });
    const w1 = await fleet.start({
      ...lease,
      TENANTRY_ROLE: 'worker',
      TENANTRY_FAULT_HOLD_FILE: hold,
      TENANTRY_SHUTDOWN_TIMEOUT_MS: '10000',
      TENANTRY_DRAIN_TIMEOUT_MS: '500',
    });
    const slug = `${fleet.prefix}-held`;
    const { status, body } = await onboard(api.base, slug, 'bridge');
    expect(status).toBe(202);
    const opId = body.operation?.id as string;
    for (let i = 0; ; i++) {
      const [op] = await superQuery<{ progress: { faultPoint?: string } }>(
        fleet.controlDb,
        'SELECT progress FROM operations WHERE id = $1',
        [opId],
      );
      if (op?.progress.faultPoint === 'step:schema') break;
      if (i > 600) throw new Error('the operation never reached its held step');
      await new Promise((r) => setTimeout(r, 50));
    }

    await signal(w1.proc, 'SIGTERM');
    expect(w1.proc.exitCode).toBe(0);
    // Back in the queue, its lease released, its attempt given back; the step in flight is re-run.
    const [back] = await superQuery<{ status: string; lease_owner: string | null; attempts: number }>(
      fleet.controlDb,
      'SELECT status, lease_owner, attempts FROM operations WHERE id = $1',
      [opId],
    );
    expect(back).toEqual({ status: 'queued', lease_owner: null, attempts: 0 });

    fs.writeFileSync(hold, '');
    const w2 = await fleet.start({ ...lease, TENANTRY_ROLE: 'worker' });
    const [done] = await untilOperationsEnd(fleet.controlDb, [opId], 30_000);
    expect(done?.status).toBe('succeeded');
    expect(
      await superQuery(
        fleet.controlDb,
        `SELECT count(*)::int AS n FROM audit_log WHERE action = 'operation.onboard.succeeded' AND tenant_slug = $1`,
        [slug],
      ),
    ).toEqual([{ n: 1 }]);
    for (const p of [api, w2]) await signal(p.proc, 'SIGTERM');
  });
});

interface Outcome {
  target: string;
  kind: 'onboard' | 'descriptor';
  status: number;
  error?: string;
  operationId?: string;
  /** Sent while its target was draining (after its SIGTERM), or in flight then. */
  duringDrain: boolean;
}

describe('a rolling restart of two processes', () => {
  it('each process in turn gets SIGTERM under load: every request sent to it completes, and no operation is lost', async () => {
    const env = {
      TENANTRY_SHUTDOWN_DELAY_MS: '1500',
      TENANTRY_DRAIN_TIMEOUT_MS: '1000',
      TENANTRY_SHUTDOWN_TIMEOUT_MS: '15000',
      // Operations take a while, so a stopping worker has some running.
      TENANTRY_FAULT_STEP_DELAY_MS: '150',
    };
    const procs: Record<'a' | 'b', Proc> = { a: await fleet.start(env), b: await fleet.start(env) };
    const ports = { a: procs.a.port, b: procs.b.port };
    // Tenants whose descriptors the load reads.
    const seeded: string[] = [];
    const seedOps: string[] = [];
    for (const [i, tier] of ['pool', 'bridge', 'silo'].entries()) {
      const slug = `${fleet.prefix}-seed-${i}`;
      const r = await onboard(procs.a.base, slug, tier);
      expect(r.status).toBe(202);
      seeded.push(slug);
      seedOps.push(r.body.operation?.id as string);
    }
    await untilOperationsEnd(fleet.controlDb, seedOps);

    // The load balancer: round robin over the processes in rotation.
    const inRotation = new Set<'a' | 'b'>(['a', 'b']);
    const draining = new Set<'a' | 'b'>();
    const outcomes: Outcome[] = [];
    let n = 0;
    let onboardingsInPhase = 0;
    let stop = false;
    const send = async (target: 'a' | 'b', only?: Outcome['kind']): Promise<void> => {
      const i = n++;
      const duringDrain = draining.has(target);
      const base = `http://127.0.0.1:${ports[target]}`;
      // Bounded: up to 10 onboardings in each phase of the restart; descriptor reads otherwise.
      const kind = only ?? (i % 4 === 0 && onboardingsInPhase++ < 10 ? 'onboard' : 'descriptor');
      const o: Outcome = { target, kind, status: 0, duringDrain };
      outcomes.push(o);
      try {
        if (kind === 'onboard') {
          const r = await onboard(base, `${fleet.prefix}-${i}`, i % 2 === 0 ? 'pool' : 'bridge');
          o.status = r.status;
          if (r.body.operation) o.operationId = r.body.operation.id;
        } else {
          const r = await call(base, fleet.adminToken, `/v1/tenants/${seeded[i % seeded.length]}/connection`);
          o.status = r.status;
          await r.arrayBuffer();
        }
      } catch (e) {
        o.error = String((e as Error).cause ?? e);
      }
      if (draining.has(target)) o.duringDrain = true;
    };
    let rr = 0;
    const loop = async () => {
      while (!stop) {
        const targets = [...inRotation];
        const t = targets[rr++ % targets.length] as 'a' | 'b';
        await send(t);
      }
    };
    const loops = Array.from({ length: 4 }, () => loop());
    const answered = () => outcomes.filter((o) => o.status !== 0 || o.error).length;
    const untilAnswered = async (count: number) => {
      for (let i = 0; answered() < count; i++) {
        if (i > 2000) throw new Error(`the load stalled at ${answered()} answers`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };

    for (const name of ['a', 'b'] as const) {
      await untilAnswered(answered() + 12);
      // Requests in flight to it at the signal: a burst sent just before, not awaited yet.
      const burst = (
        ['onboard', 'onboard', 'descriptor', 'descriptor', 'descriptor', 'descriptor'] as const
      ).map((kind) => send(name, kind));
      onboardingsInPhase = 0;
      inRotation.delete(name);
      draining.add(name);
      const exited = signal(procs[name].proc, 'SIGTERM');
      // The rest of the load goes to the other process meanwhile.
      await Promise.all([exited, ...burst]);
      expect(procs[name].proc.exitCode).toBe(0);
      draining.delete(name);
      procs[name] = await fleet.start(env, ports[name]);
      inRotation.add(name);
    }
    await untilAnswered(answered() + 12);
    stop = true;
    await Promise.all(loops);

    // Every request completed, the ones sent to a draining process included.
    const failed = outcomes.filter((o) => o.error || o.status >= 300);
    expect(failed).toEqual([]);
    expect(outcomes.filter((o) => o.duringDrain).length).toBeGreaterThanOrEqual(12);
    expect(outcomes.filter((o) => o.kind === 'onboard').length).toBeGreaterThan(10);

    // No operation lost: each accepted onboarding ends succeeded, its tenant active, activated once.
    const ids = outcomes.flatMap((o) => (o.operationId ? [o.operationId] : []));
    const ended = await untilOperationsEnd(fleet.controlDb, ids);
    expect(ended.filter((o) => o.status !== 'succeeded')).toEqual([]);
    const tenants = await superQuery<{ status: string; activations: number }>(
      fleet.controlDb,
      `SELECT t.status, (SELECT count(*)::int FROM audit_log a
                          WHERE a.tenant_id = t.id AND a.action = 'operation.onboard.succeeded') AS activations
         FROM operations o JOIN tenants t ON t.id = o.tenant_id WHERE o.id = ANY($1)`,
      [ids],
    );
    expect(tenants).toHaveLength(ids.length);
    expect(tenants.filter((t) => t.status !== 'active' || t.activations !== 1)).toEqual([]);
    for (const p of Object.values(procs)) if (isRunning(p.proc)) await kill9(p.proc);
  }, 180_000);
});
