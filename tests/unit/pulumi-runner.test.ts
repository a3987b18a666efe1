import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tenantStackName } from '../../control-plane/src/domain/naming.js';
import { classifyPulumiError, isPidAlive } from '../../control-plane/src/engine/pulumi/errors.js';
import { stackWorkspaceDir } from '../../control-plane/src/engine/pulumi/naming.js';
import {
  type PulumiJob,
  PulumiPool,
  type PulumiRunner,
  runPulumi,
} from '../../control-plane/src/engine/pulumi/runner.js';

/** The runner's process handling, against a stand-in child (tests/fixtures/pulumi-child-stub.ts). */
const childPath = path.resolve('tests/fixtures/pulumi-child-stub.ts');
const job = (stackName: string, envVars: Record<string, string> = {}): PulumiJob => ({
  op: 'up',
  projectName: 'tenantry',
  stackName,
  workDir: '/tmp',
  backendUrl: 'file:///tmp',
  envVars: { PATH: '/usr/local/bin:/usr/bin:/bin', ...envVars },
  config: {},
  input: { tenantId: '00000000-0000-4000-8000-000000000000', slug: 'acme', tier: 'pool' },
  policyPacks: [],
});

interface Pids {
  child: number;
  cli: number;
}
const pidsOf = (events: unknown[]) =>
  (events.find((e) => (e as { pids?: Pids }).pids) as { pids: Pids }).pids;

/** Gone: no such process, or a zombie (killed, waiting to be reaped by whoever inherited it). */
function gone(pid: number): boolean {
  if (!isPidAlive(pid)) return true;
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

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

  it('reports a child that dies without a result as a crash, kills what it left running, and retries it', async () => {
    const events: unknown[] = [];
    const err = await runPulumi(job('tenant-crash'), {
      timeoutMs: 20_000,
      childPath,
      onEvent: (e) => events.push(e),
    }).catch((e: unknown) => e);
    expect(String(err)).toMatch(/exited \(3\)/);
    expect(classifyPulumiError(err)).toEqual({ kind: 'child-crashed', retryable: true });
    const { cli } = pidsOf(events);
    await waitFor(() => gone(cli), 2_000);
  });

  it('times out: asks the child to cancel, settles after it exited with its CLI gone, and retries', async () => {
    const events: unknown[] = [];
    const t0 = Date.now();
    const err = await runPulumi(job('tenant-hang'), {
      timeoutMs: 1_500,
      graceMs: 500,
      childPath,
      onEvent: (e) => events.push(e),
    }).catch((e: unknown) => e);
    expect(String(err)).toMatch(/timed out/);
    expect(classifyPulumiError(err)).toEqual({ kind: 'timeout', retryable: true });
    const { child, cli } = pidsOf(events);
    expect(gone(child)).toBe(true);
    await waitFor(() => gone(cli), 2_000);
    expect(Date.now() - t0).toBeLessThan(15_000);
  });

  it('kills the whole process group of a child that ignores cancellation, after the grace period', async () => {
    const events: unknown[] = [];
    const ac = new AbortController();
    const p = runPulumi(job('tenant-hang', { STUB_IGNORE_CANCEL: '1' }), {
      timeoutMs: 60_000,
      graceMs: 800,
      childPath,
      signal: ac.signal,
      onEvent: (e) => events.push(e),
    });
    await waitFor(() => events.length > 0);
    const { child, cli } = pidsOf(events);
    const t0 = Date.now();
    ac.abort();
    const err = await p.catch((e: unknown) => e);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(700); // it got its grace period
    expect(err).toMatchObject({ name: 'AbortError' });
    expect(classifyPulumiError(err)).toEqual({ kind: 'cancelled', retryable: false });
    expect(gone(child)).toBe(true);
    await waitFor(() => gone(cli), 2_000);
  });

  it('gives the child only the environment it is handed, never the control plane’s', async () => {
    process.env.DATABASE_URL = 'postgres://tenantry:secret@db/tenantry';
    process.env.TENANTRY_ADMIN_TOKEN = 'tnt_admin_secret';
    try {
      const r = await runPulumi(job('tenant-env', { PULUMI_CONFIG_PASSPHRASE: 'p' }), {
        timeoutMs: 20_000,
        childPath,
      });
      const env = r.outputs.env as string[];
      expect(env).toEqual(expect.arrayContaining(['PATH', 'PULUMI_CONFIG_PASSPHRASE']));
      expect(env).not.toContain('DATABASE_URL');
      expect(env).not.toContain('TENANTRY_ADMIN_TOKEN');
      // Node's own IPC variables are the only additions.
      expect(
        env.filter((k) => !['PATH', 'PULUMI_CONFIG_PASSPHRASE'].includes(k) && !k.startsWith('NODE_')),
      ).toEqual([]);
    } finally {
      delete process.env.DATABASE_URL;
      delete process.env.TENANTRY_ADMIN_TOKEN;
    }
  });
});

describe('the real child process', () => {
  it('creates the stack workspace and delivers its error before exiting (here: no pulumi CLI on its PATH)', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'tenantry-runner-'));
    const workDir = stackWorkspaceDir(root, 'acme');
    try {
      const err = await runPulumi(
        { ...job(tenantStackName('acme')), workDir, envVars: { PATH: '/nonexistent', HOME: root } },
        { timeoutMs: 50_000 },
      ).then(
        () => new Error('expected the run to fail'),
        (e: unknown) => e as Error,
      );
      // A message lost to an early exit would surface as "exited (1) without a result".
      expect(err.message).not.toMatch(/without a result/);
      expect(err).toMatchObject({ name: 'CommandError' });
      expect(err.message).toMatch(/pulumi version/);
      expect(existsSync(workDir)).toBe(true);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('PulumiPool', () => {
  /** Wraps the real runner with a counter of runs in flight (a run ends when its child has exited). */
  function counting(): { runner: PulumiRunner; peak: () => number } {
    let active = 0;
    let peak = 0;
    return {
      runner: async (j, o) => {
        active++;
        peak = Math.max(peak, active);
        try {
          return await runPulumi(j, o);
        } finally {
          active--;
        }
      },
      peak: () => peak,
    };
  }

  it('bounds concurrency: never more children at once than its limit', async () => {
    const c = counting();
    const pool = new PulumiPool(2, c.runner);
    await Promise.all(
      Array.from({ length: 5 }, () => pool.run(job('tenant-slow'), { timeoutMs: 20_000, childPath })),
    );
    expect(c.peak()).toBe(2);
  });

  it('keeps a slot until the cancelled child has exited, so the next run never overlaps it', async () => {
    const c = counting();
    const pool = new PulumiPool(1, c.runner);
    const events: unknown[] = [];
    const ac = new AbortController();
    const first = pool
      .run(job('tenant-hang', { STUB_IGNORE_CANCEL: '1' }), {
        timeoutMs: 60_000,
        graceMs: 800,
        childPath,
        signal: ac.signal,
        onEvent: (e) => events.push(e),
      })
      .catch((e: unknown) => e);
    await waitFor(() => events.length > 0);
    const { child } = pidsOf(events);
    let childAliveWhenSecondStarted: boolean | undefined;
    const second = pool.run(job('tenant-ok'), {
      timeoutMs: 20_000,
      childPath,
      onEvent: () => {
        childAliveWhenSecondStarted ??= !gone(child);
      },
    });
    ac.abort();
    await first;
    await second;
    expect(childAliveWhenSecondStarted).toBe(false);
    expect(c.peak()).toBe(1);
  });
});
