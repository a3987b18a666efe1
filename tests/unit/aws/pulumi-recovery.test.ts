/**
 * A Pulumi run killed mid-`up` (kill -9 of its process) and the next run's recovery, through the
 * runner's real child protocol and operation.ts, over a stand-in for the CLI's DIY backend
 * (tests/fixtures/pulumi-recovery-child.ts). No Pulumi CLI runs here: what has never run against a
 * real engine is listed in docs/aws.md.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { classifyPulumiError } from '../../../control-plane/src/engine/pulumi/errors.js';
import { type PulumiJob, runPulumi } from '../../../control-plane/src/engine/pulumi/runner.js';

const childPath = path.resolve('tests/fixtures/pulumi-recovery-child.ts');
const DYNAMIC = 'pulumi-nodejs:dynamic:Resource';
const urn = (type: string, name: string) => `urn:pulumi:tenant-acme::tenantry::${type}::${name}`;
const dirs: string[] = [];

afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function job(stateDir: string, env: Record<string, string>): PulumiJob {
  return {
    op: 'up',
    projectName: 'tenantry',
    stackName: 'tenant-acme',
    workDir: stateDir,
    backendUrl: `file://${stateDir}`,
    envVars: { PATH: process.env.PATH ?? '/usr/bin:/bin', STATE_DIR: stateDir, ...env },
    config: {},
    input: { tenantId: '00000000-0000-4000-8000-000000000000', slug: 'acme', tier: 'bridge' },
    policyPacks: [],
    pins: { cli: '3.248.0', awsPlugin: '7.48.0' },
    staleLock: { maxAgeMs: 3_600_000, hostname: os.hostname() },
  };
}

/** Runs an `up` and kills its process (SIGKILL) once it has written its pending operations. */
async function killMidUp(stateDir: string, resources: string): Promise<unknown> {
  let pid: number | undefined;
  let killed!: () => void;
  const sawEvent = new Promise<void>((resolve) => {
    killed = resolve;
  });
  const run = runPulumi(job(stateDir, { STUB_HANG: '1', STUB_RESOURCES: resources }), {
    timeoutMs: 60_000,
    childPath,
    onEvent: (e) => {
      pid = (e as unknown as { pid: number }).pid;
      killed();
    },
  }).catch((e: unknown) => e);
  await sawEvent;
  process.kill(pid as number, 'SIGKILL');
  return run;
}

const calls = (dir: string) => fs.readFileSync(path.join(dir, 'calls.log'), 'utf8').trim().split('\n');
const state = (dir: string) =>
  JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as {
    deployment: { resources: { urn: string }[]; pending_operations: unknown[] };
  };

describe('a run killed mid-up', () => {
  it('is recovered by the next run: the dead run’s lock cancelled, its safe pending operations cleared, a refresh, then the up', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-recovery-'));
    dirs.push(dir);
    const role = urn(`tenantry:tenant:PostgresResource$${DYNAMIC}`, 'tenant-acme-pg-role');
    const err = await killMidUp(dir, `${DYNAMIC}=${role}`);
    // The killed run: a crash, retried by the executor; it left its lock and a pending creation.
    expect(classifyPulumiError(err)).toEqual({ kind: 'child-crashed', retryable: true });
    expect(fs.existsSync(path.join(dir, 'lock.json'))).toBe(true);
    expect(state(dir).deployment.pending_operations).toHaveLength(1);

    const r = await runPulumi(job(dir, { STUB_RESOURCES: `${DYNAMIC}=${role}` }), {
      timeoutMs: 60_000,
      childPath,
    });
    expect(r.summary).toEqual({ create: 1 });
    // import refused by the stale lock, the lock cancelled, the import again, the refresh, the up.
    expect(calls(dir)).toEqual(['up', 'import', 'cancel', 'import', 'refresh', 'up']);
    expect(state(dir).deployment).toMatchObject({ pending_operations: [], resources: [{ urn: role }] });
    expect(fs.existsSync(path.join(dir, 'lock.json'))).toBe(false);
  });

  it('stops for an operator when the killed run was creating a cloud resource that may exist, naming it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-recovery-'));
    dirs.push(dir);
    const rds = urn('aws:rds/instance:Instance', 'tenant-acme-db-instance');
    await killMidUp(dir, `aws:rds/instance:Instance=${rds}`);
    const err = await runPulumi(job(dir, {}), { timeoutMs: 60_000, childPath }).catch((e: unknown) => e);
    expect(classifyPulumiError(err)).toEqual({ kind: 'pending-operations', retryable: false });
    expect((err as Error).message).toContain(rds);
    expect((err as Error).message).toMatch(/pulumi refresh --clear-pending-creates/);
    // Nothing was touched: the operator finds the state as the killed run left it.
    expect(calls(dir)).toEqual(['up']);
    expect(state(dir).deployment.pending_operations).toHaveLength(1);
  });
});

describe('the stack’s settings, through the child protocol', () => {
  const kms = { secretsProvider: 'awskms://alias/tenantry-state?region=eu-west-1', encryptedKey: 'AQICAHh…' };

  it('are handed to the parent, which persists them before the child goes on', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-settings-'));
    dirs.push(dir);
    fs.writeFileSync(path.join(dir, 'settings.json'), JSON.stringify(kms));
    const saved: unknown[] = [];
    await runPulumi(job(dir, {}), {
      timeoutMs: 60_000,
      childPath,
      onStackSettings: async (settings) => {
        // The child waits: nothing ran on the stack yet.
        expect(fs.existsSync(path.join(dir, 'calls.log'))).toBe(false);
        saved.push(settings);
      },
    });
    expect(saved).toEqual([kms]);
    expect(calls(dir)).toEqual(['up']);
  });

  it('stop the run when the parent cannot persist them', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-settings-'));
    dirs.push(dir);
    fs.writeFileSync(path.join(dir, 'settings.json'), JSON.stringify(kms));
    const err = await runPulumi(job(dir, {}), {
      timeoutMs: 60_000,
      childPath,
      onStackSettings: async () => Promise.reject(new Error('control database unavailable')),
    }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/could not be saved: control database unavailable/);
    expect(fs.existsSync(path.join(dir, 'calls.log'))).toBe(false);
  });
});
