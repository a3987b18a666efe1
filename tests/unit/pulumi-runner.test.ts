import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { type PulumiJob, PulumiPool, runPulumi } from '../../control-plane/src/engine/pulumi/runner.js';

/** The runner's process handling, against a stand-in child (tests/fixtures/pulumi-child-stub.ts). */
const childPath = path.resolve('tests/fixtures/pulumi-child-stub.ts');
const job = (stackName: string): PulumiJob => ({
  op: 'up',
  projectName: 'tenantry',
  stackName,
  workDir: '/tmp',
  backendUrl: 'file:///tmp',
  envVars: {},
  config: {},
  input: { tenantId: '00000000-0000-4000-8000-000000000000', slug: 'acme', tier: 'pool' },
});

describe('runPulumi', () => {
  it('relays engine events and resolves with the result', async () => {
    const events: unknown[] = [];
    const r = await runPulumi(job('tenant-ok'), {
      timeoutMs: 20_000,
      childPath,
      onEvent: (e) => events.push(e),
    });
    expect(r).toEqual({
      summary: { create: 1 },
      outputs: { keyArn: 'arn:aws:kms:eu-west-1:111122223333:key/x' },
    });
    expect(events).toHaveLength(1);
  });

  it('rejects with the child error name, so errors can be classified', async () => {
    await expect(runPulumi(job('tenant-fail'), { timeoutMs: 20_000, childPath })).rejects.toMatchObject({
      name: 'ConcurrentUpdateError',
    });
  });

  it('rejects when the child dies without a result', async () => {
    await expect(runPulumi(job('tenant-crash'), { timeoutMs: 20_000, childPath })).rejects.toThrow(
      /exited \(3\)/,
    );
  });

  it('times out, asks the child to cancel, and kills it after the grace period', async () => {
    const t0 = Date.now();
    await expect(
      runPulumi(job('tenant-hang'), { timeoutMs: 1_500, graceMs: 500, childPath }),
    ).rejects.toThrow(/timed out/);
    expect(Date.now() - t0).toBeLessThan(15_000);
  });

  it('cancels through an AbortSignal', async () => {
    const ac = new AbortController();
    const p = runPulumi(job('tenant-hang'), { timeoutMs: 60_000, childPath, signal: ac.signal });
    setTimeout(() => ac.abort(), 1_000);
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('bounds concurrency', async () => {
    const pool = new PulumiPool(1);
    const order: string[] = [];
    await Promise.all(
      ['a', 'b'].map(async (x) => {
        await pool.run(job('tenant-ok'), { timeoutMs: 20_000, childPath });
        order.push(x);
      }),
    );
    expect(order.sort()).toEqual(['a', 'b']);
  });
});
