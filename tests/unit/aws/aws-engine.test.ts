import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { EngineEvent } from '@pulumi/pulumi/automation/index.js';
import { mockClient } from 'aws-sdk-client-mock';
import { parse } from 'pg-connection-string';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Semaphore } from '../../../control-plane/src/aws/semaphore.js';
import { TenantryError } from '../../../control-plane/src/domain/errors.js';
import {
  tenantObjectName,
  tenantSecretName,
  tenantStackName,
} from '../../../control-plane/src/domain/naming.js';
import type { StepContext, StepTenant } from '../../../control-plane/src/domain/ports.js';
import type { Tier } from '../../../control-plane/src/domain/tiers.js';
import { AwsEngine, type AwsEngineOptions, adminUrl } from '../../../control-plane/src/engine/aws.js';
import { fullyQualifiedStackName } from '../../../control-plane/src/engine/pulumi/naming.js';
import type { PulumiJob, PulumiResult, RunOptions } from '../../../control-plane/src/engine/pulumi/runner.js';
import { TEST_PLATFORM } from '../../fixtures/platform.js';

const platform = TEST_PLATFORM;
/**
 * One Secrets Manager mock for the file (a second mockClient of the same class would replace it). The
 * promotion tests below set the routing descriptor the engine reads through it, and one makes Secrets
 * Manager fail, which the emulator never does; the engine's reads themselves run on the emulator in
 * tests/aws/aws-engine.test.ts.
 */
const secretsMock = mockClient(SecretsManagerClient);

const tenant = (
  tier: Tier,
  slug = `${tier}-co`,
  id = '0a1b2c3d-0000-4000-8000-00000000000a',
): StepTenant => ({
  id,
  slug,
  tier,
  templateVersion: 1,
});

interface Recorded {
  job: PulumiJob;
  opts: RunOptions;
}

/** A stand-in for the child process: records each job, replays events, answers with `result`. */
function fakeRunner(
  answer: (job: PulumiJob) => Partial<PulumiResult> | Error = () => ({}),
  events: EngineEvent[] = [],
  delayMs = 0,
) {
  const jobs: Recorded[] = [];
  let active = 0;
  let peak = 0;
  const runner = async (job: PulumiJob, opts: RunOptions): Promise<PulumiResult> => {
    jobs.push({ job, opts });
    active++;
    peak = Math.max(peak, active);
    try {
      for (const e of events) opts.onEvent?.(e);
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      const a = answer(job);
      if (a instanceof Error) throw a;
      return { summary: {}, outputs: {}, ...a };
    } finally {
      active--;
    }
  };
  return { runner, jobs, peak: () => peak };
}

function engine(extra: Partial<AwsEngineOptions> = {}): AwsEngine {
  return new AwsEngine({
    backendUrl: 'file:///var/lib/tenantry/state',
    envVars: { PATH: '/usr/bin' },
    aws: { region: 'eu-west-1' },
    platform,
    workspaceRoot: '/var/lib/tenantry/pulumi',
    concurrency: 16,
    timeoutMs: 600_000,
    programVersion: '1.0.0+template.1',
    ...extra,
  });
}

function ctx(t: StepTenant, step: string, extra: Partial<StepContext> = {}): StepContext {
  return {
    operationId: 'op_test',
    kind: 'onboard',
    step,
    tenant: t,
    signal: new AbortController().signal,
    ...extra,
  };
}

describe('AwsEngine steps', () => {
  it('onboards with one up and offboards by unprotecting before destroying', () => {
    const e = engine();
    expect(e.steps('onboard')).toEqual(['stack-up']);
    expect(e.steps('offboard')).toEqual(['stack-unprotect', 'stack-destroy']);
    expect(e.rollsBackFailedOnboarding).toBe(false);
  });

  it('unprotects with the offboarding flag and the deletion-protection policy disabled, then destroys', async () => {
    const f = fakeRunner();
    const e = engine({ runner: f.runner });
    const t = tenant('silo');
    expect(await e.runStep(ctx(t, 'stack-unprotect', { kind: 'offboard' }))).toBeUndefined();
    expect(await e.runStep(ctx(t, 'stack-destroy', { kind: 'offboard' }))).toEqual({
      programVersion: null,
      stack: null,
    });
    const [unprotect, destroy] = f.jobs.map((j) => j.job);
    expect(unprotect).toMatchObject({ op: 'unprotect', input: { tier: 'silo', offboarding: true } });
    expect(unprotect?.policyPackConfig).toEqual({
      'tenantry-rds-deletion-protection': { enforcementLevel: 'disabled' },
    });
    expect(destroy).toMatchObject({ op: 'destroy', policyPacks: [] });
  });

  it('runs the policy pack (by absolute path) with every up and preview, never with offboarding relaxed otherwise', () => {
    const e = engine();
    const up = e.jobFor('up', tenant('pool'));
    expect(up.policyPacks).toEqual([path.resolve('stacks/policy')]);
    expect(up.policyPackConfig).toBeUndefined();
    expect(up.input.offboarding).toBeUndefined();
    expect(e.jobFor('preview-refresh', tenant('pool')).policyPacks).toEqual(up.policyPacks);
    expect(engine({ policyPackDir: null }).jobFor('up', tenant('pool')).policyPacks).toEqual([]);
  });

  it('requires a CLI that does not lock DIY stacks for a refreshing preview, only for drift checks', () => {
    const e = engine();
    expect(e.jobFor('preview-refresh', tenant('pool')).minCliVersionForPreview).toBe('3.229.0');
    expect(e.jobFor('up', tenant('pool')).minCliVersionForPreview).toBeUndefined();
    const cloud = engine({ backendUrl: 'https://api.pulumi.com' });
    expect(cloud.jobFor('preview-refresh', tenant('pool')).minCliVersionForPreview).toBeUndefined();
  });

  it('hands the program the control plane’s templates directory', () => {
    const dir = path.resolve('templates');
    expect(engine({ templatesDir: dir }).jobFor('up', tenant('pool')).input.templatesDir).toBe(dir);
  });
});

describe('AwsEngine.runStep', () => {
  it('records only plain outputs (the child already dropped secret ones), the program version and the stack', async () => {
    const f = fakeRunner(() => ({
      outputs: {
        keyArn: 'arn:aws:kms:eu-west-1:111111111111:key/k',
        port: 5432,
        nested: { a: 1 },
        list: [1],
      },
    }));
    const e = engine({ runner: f.runner });
    const out = await e.runStep(ctx(tenant('pool'), 'stack-up'));
    expect(out).toEqual({
      keyArn: 'arn:aws:kms:eu-west-1:111111111111:key/k',
      port: 5432,
      programVersion: e.programVersion,
      stack: tenantStackName('pool-co'),
    });
  });

  it('turns engine events into resource progress, skipping steps that change nothing', async () => {
    const meta = (op: string, urn: string) => ({ op, urn, type: urn.split('::')[2] ?? '', provider: '' });
    const events = [
      {
        sequence: 1,
        timestamp: 0,
        resourcePreEvent: { metadata: meta('create', 'urn:pulumi:s::tenantry::aws:kms/key:Key::k') },
      },
      {
        sequence: 2,
        timestamp: 0,
        resourcePreEvent: { metadata: meta('same', 'urn:pulumi:s::tenantry::aws:kms/alias:Alias::a') },
      },
      {
        sequence: 3,
        timestamp: 0,
        resOutputsEvent: { metadata: meta('create', 'urn:pulumi:s::tenantry::aws:kms/key:Key::k') },
      },
    ] as EngineEvent[];
    const f = fakeRunner(() => ({}), events);
    const seen: unknown[] = [];
    await engine({ runner: f.runner }).runStep(
      ctx(tenant('pool'), 'stack-up', { onResourceEvent: (p) => seen.push(p) }),
    );
    expect(seen).toEqual([
      { resource: 'aws:kms/key:Key::k', action: 'create', status: 'running' },
      { resource: 'aws:kms/key:Key::k', action: 'create', status: 'succeeded' },
    ]);
  });

  it('retries a timed-out run but not a cancelled one', async () => {
    const timedOut = Object.assign(new Error('the operation timed out after 10 ms'), {
      name: 'TimeoutError',
    });
    const e1 = engine({ runner: fakeRunner(() => timedOut).runner });
    await expect(e1.runStep(ctx(tenant('pool'), 'stack-up'))).rejects.toMatchObject({ retryable: true });
    const cancelled = Object.assign(new Error('the operation was cancelled'), { name: 'AbortError' });
    const e2 = engine({ runner: fakeRunner(() => cancelled).runner });
    await expect(e2.runStep(ctx(tenant('pool'), 'stack-up'))).rejects.toMatchObject({ retryable: false });
  });

  it('reports a lock held by a dead process of this host as a stale lock, terminal and with its holder', async () => {
    const lock = new Error(
      `code: 255\nerror: the stack is currently locked by 1 lock(s).\n  file:///var/lib/tenantry/state/.pulumi/locks/${fullyQualifiedStackName('pool-co')}/1.json: created by tenantry@${os.hostname()} (pid 4194305) at ${new Date().toISOString()}`,
    );
    lock.name = 'ConcurrentUpdateError';
    const e = engine({ runner: fakeRunner(() => lock).runner });
    const err = (await e.runStep(ctx(tenant('pool'), 'stack-up')).catch((x: unknown) => x)) as TenantryError;
    expect(err).toBeInstanceOf(TenantryError);
    expect(err.retryable).toBe(false);
    expect(err.context.pulumiErrorKind).toBe('stale-lock');
    expect(err.message).toContain(`tenantry@${os.hostname()} pid 4194305`);
  });

  it('calls a fresh lock of a live process a concurrent update, and retries it', async () => {
    const lock = new Error(
      `error: the stack is currently locked by 1 lock(s).\n  file:///s/1.json: created by tenantry@${os.hostname()} (pid ${process.pid}) at ${new Date().toISOString()}`,
    );
    lock.name = 'ConcurrentUpdateError';
    const e = engine({ runner: fakeRunner(() => lock).runner });
    await expect(e.runStep(ctx(tenant('pool'), 'stack-up'))).rejects.toMatchObject({
      retryable: true,
      context: { pulumiErrorKind: 'concurrent-update' },
    });
  });
});

describe('AwsEngine promotion', () => {
  const params = { fromTier: 'pool', toTier: 'silo' } as const;
  const STAGED = {
    tier: 'silo',
    host: 'db.internal',
    port: 5432,
    database: tenantObjectName('movers'),
    schema: 'app',
    user: tenantObjectName('movers'),
  };
  /** The tenant's secret says `routed`; the shared cluster's admin secret is there. */
  const secretsSay = (routed: Record<string, unknown>) => {
    secretsMock.reset();
    secretsMock.on(GetSecretValueCommand, { SecretId: tenantSecretName('movers') }).resolves({
      ARN: `arn:aws:secretsmanager:eu-west-1:111111111111:secret:${tenantSecretName('movers')}`,
      SecretString: JSON.stringify(routed),
    });
    secretsMock
      .on(GetSecretValueCommand, { SecretId: TEST_PLATFORM.sharedCluster?.adminSecretName })
      .resolves({
        ARN: 'arn:aws:secretsmanager:eu-west-1:111111111111:secret:shared',
        SecretString: JSON.stringify({
          username: 'admin',
          password: 'pw',
          host: 'shared.internal',
          dbname: 'tenantry_data',
        }),
      });
  };
  const ROUTED_TO_POOL = { host: 'shared.internal', database: 'tenantry_data', schema: 'pool' };
  afterEach(() => secretsMock.reset());

  it('stages the target in the source program, moves the rows, then ups the target program', () => {
    const e = engine();
    expect(e.promotionSteps(params)).toEqual([
      'stack-stage',
      'prepare-target',
      'replication',
      'copy',
      'indexes',
      'catch-up',
      'verify-full',
      'freeze',
      'drain',
      'verify',
      'stack-up',
      'release',
    ]);
    expect(e.promotionAbortSteps(params)).toEqual(['abort-data', 'stack-discard', 'stack-unstage']);
  });

  it('runs each promotion `up` with the right program and stage, on the same stack', async () => {
    const staged = {
      stagedTier: 'silo',
      stagedHost: 'db.internal',
      stagedPort: 5432,
      stagedDatabase: tenantObjectName('movers'),
      stagedSchema: 'app',
      stagedUser: tenantObjectName('movers'),
      stagedAdminSecretArn: 'arn:aws:secretsmanager:eu-west-1:111111111111:secret:rds!db-1',
    };
    const f = fakeRunner((job) =>
      job.input.stagedTier && !job.input.discardStaged ? { outputs: staged } : {},
    );
    const e = engine({ runner: f.runner });
    secretsSay(ROUTED_TO_POOL);
    const t = tenant('pool', 'movers'); // the recorded tier stays the source one during the promotion
    const reports: Record<string, unknown>[] = [];
    const report = async (p: Record<string, unknown>) => {
      reports.push(p);
    };
    for (const step of ['stack-stage', 'stack-up', 'stack-discard', 'stack-unstage']) {
      await e.runStep(ctx(t, step, { kind: 'promote', params: { ...params }, report }));
    }
    const [stage, up, discard, unstage] = f.jobs.map((j) => j.job);
    expect(stage).toMatchObject({
      op: 'up',
      stackName: tenantStackName('movers'),
      input: { tier: 'pool', stagedTier: 'silo' },
    });
    expect(stage?.input.discardStaged).toBeUndefined();
    expect(up).toMatchObject({ op: 'up', input: { tier: 'silo' } });
    expect(up?.input.stagedTier).toBeUndefined();
    expect(up?.config['tenantry:tier']?.value).toBe('silo');
    expect(discard).toMatchObject({ input: { tier: 'pool', stagedTier: 'silo', discardStaged: true } });
    expect(unstage?.input).toMatchObject({ tier: 'pool' });
    expect(unstage?.input.stagedTier).toBeUndefined();
    expect(new Set(f.jobs.map((j) => j.job.workDir)).size).toBe(1);
    // The staged placement goes to the operation's progress (no credential in it); the flip is timed.
    expect(reports[0]).toEqual({ target: { ...STAGED, adminSecretArn: staged.stagedAdminSecretArn } });
    expect(Object.keys(reports[1] ?? {})).toEqual(['cutoverAt']);
  });

  it('never undoes a promotion past its flip, nor when its routing cannot be read', async () => {
    const f = fakeRunner();
    const e = engine({ runner: f.runner });
    const t = tenant('pool', 'movers');
    const progress = { target: { ...STAGED } };
    const undo = (step: string, p: Record<string, unknown>) =>
      e.runStep(ctx(t, step, { kind: 'promote', params: { ...p }, progress }));
    secretsSay({ ...STAGED }); // the flipping up wrote the silo's descriptor
    for (const step of ['abort-data', 'stack-discard', 'stack-unstage']) {
      await expect(undo(step, params)).rejects.toMatchObject({ context: { forwardOnly: true } });
    }
    secretsMock.reset();
    secretsMock
      .on(GetSecretValueCommand)
      .rejects(Object.assign(new Error('throttled'), { name: 'InternalServiceError' }));
    await expect(undo('stack-discard', params)).rejects.toMatchObject({
      message: expect.stringMatching(/routing could not be read/),
      context: { forwardOnly: true },
    });
    // A rollback routed back to the pool is not returned to the silo by its abort.
    secretsSay(ROUTED_TO_POOL);
    const back = { fromTier: 'silo', toTier: 'pool', rollbackOf: 'op_promo', promotedTo: STAGED };
    await expect(undo('stack-current', back)).rejects.toMatchObject({ context: { forwardOnly: true } });
    expect(f.jobs).toEqual([]); // no `up` ran
  });

  it('fails the staging step when the stack reports no staged placement', async () => {
    const e = engine({ runner: fakeRunner().runner });
    await expect(
      e.runStep(ctx(tenant('pool', 'movers'), 'stack-stage', { kind: 'promote', params: { ...params } })),
    ).rejects.toThrow(/no staged placement/);
  });

  it('rolls back by moving the rows back, then flipping with the original program, the current one staged', async () => {
    const f = fakeRunner();
    const e = engine({ runner: f.runner });
    const back = { fromTier: 'silo', toTier: 'pool', rollbackOf: 'op_promo' } as const;
    expect(e.promotionRollback).toBe(true);
    expect(e.promotionSteps(back)).toEqual([
      'freeze-target',
      'restore',
      'verify-restore',
      'stack-back',
      'release-back',
      'stack-discard',
      'stack-unstage',
    ]);
    expect(e.promotionAbortSteps(back)).toEqual(['abort-rollback-data', 'stack-current']);
    const t = tenant('silo', 'movers');
    secretsSay({ ...STAGED }); // still routed to the silo: the rollback's abort may return to it
    for (const step of ['stack-back', 'stack-discard', 'stack-unstage', 'stack-current']) {
      await e.runStep(ctx(t, step, { kind: 'promote', params: { ...back } }));
    }
    expect(
      f.jobs.map((j) => [
        j.job.input.tier,
        j.job.input.stagedTier ?? null,
        j.job.input.discardStaged ?? false,
      ]),
    ).toEqual([
      ['pool', 'silo', false],
      ['pool', 'silo', true],
      ['pool', null, false],
      ['silo', null, false],
    ]);
  });

  it('refuses a promotion without distinct tiers', () => {
    expect(() => engine().promotionSteps({ fromTier: 'pool', toTier: 'pool' })).toThrow(/distinct/);
  });
});

describe('account operations', () => {
  it('never runs more than 5 account-tier stacks at once, whatever the Pulumi concurrency', async () => {
    const f = fakeRunner(() => ({}), [], 60);
    const e = engine({ runner: f.runner, concurrency: 16 });
    const accounts = Array.from({ length: 12 }, (_, i) =>
      tenant('account', `acct-${i}`, `0a1b2c3d-0000-4000-8000-${String(i).padStart(12, '0')}`),
    );
    await Promise.all([
      ...accounts.slice(0, 8).map((t) => e.runStep(ctx(t, 'stack-up'))),
      ...accounts.slice(8).map((t) => e.previewRefresh(t)),
    ]);
    expect(f.jobs).toHaveLength(12);
    expect(f.peak()).toBe(5);
  });

  it('does not hold other tiers to that bound', async () => {
    const f = fakeRunner(() => ({}), [], 60);
    const e = engine({ runner: f.runner, concurrency: 16 });
    await Promise.all(
      Array.from({ length: 8 }, (_, i) => e.runStep(ctx(tenant('silo', `silo-${i}`), 'stack-up'))),
    );
    expect(f.peak()).toBe(8);
  });
});

describe('program version', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('appends a content hash of the programs and templates, which changes with the tenant template', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-templates-'));
    dirs.push(dir);
    cpSync(path.resolve('templates'), dir, { recursive: true });
    const before = engine({ templatesDir: dir }).programVersion;
    expect(before).toMatch(/^1\.0\.0\+template\.1\.program\.[0-9a-f]{12}$/);
    expect(engine({ templatesDir: dir }).programVersion).toBe(before);
    expect(engine({ templatesDir: dir, programVersion: '1.0.0' }).programVersion).toMatch(
      /^1\.0\.0\+program\.[0-9a-f]{12}$/,
    );
    writeFileSync(path.join(dir, 'tenant-schema', '0001_changed.sql'), '-- another statement\n');
    expect(engine({ templatesDir: dir }).programVersion).not.toBe(before);
  });
});

describe('adminUrl', () => {
  it('carries any username and password through intact, and asks for verified TLS', () => {
    const password = `p@ss:w/rd%?#&= "'\\`;
    const url = adminUrl(
      { username: 'ad min@x', password, host: 'db.internal', port: 6432, dbname: 'shared' },
      true,
    );
    const parsed = parse(url);
    expect(parsed).toMatchObject({
      user: 'ad min@x',
      password,
      host: 'db.internal',
      port: '6432',
      database: 'shared',
    });
    expect(new URL(url).searchParams.get('sslmode')).toBe('verify-full');
    expect(new URL(adminUrl({ username: 'a', password: 'b', host: 'h' }, false)).search).toBe('');
  });

  it('refuses a secret without credentials, without echoing it', () => {
    let message = '';
    try {
      adminUrl({ username: 'admin', host: 'h', token: 'sekrit' }, true);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/username, password and host/);
    expect(message).not.toContain('sekrit');
  });
});

describe('what every run is given', () => {
  it('runs with the stack’s persisted settings, the pinned versions and what makes a lock stale, and persists what the child reports', async () => {
    const kms = {
      secretsProvider: 'awskms://alias/tenantry-state?region=eu-west-1',
      encryptedKey: 'AQICAHh…',
    };
    const store = new Map<string, Record<string, string>>([[tenantStackName('pool-co'), kms]]);
    const saved: [string, unknown][] = [];
    const f = fakeRunner();
    const e = engine({
      runner: async (job, opts) => {
        await opts.onStackSettings?.({ ...kms, encryptedKey: 'rotated' });
        return f.runner(job, opts);
      },
      stackSettings: {
        get: async (stack) => store.get(stack) ?? null,
        save: async (stack, s) => void saved.push([stack, s]),
      },
    });
    await e.runStep(ctx(tenant('pool'), 'stack-up'));
    const job = f.jobs[0]?.job;
    expect(job?.stackSettings).toEqual(kms);
    expect(job?.pins).toEqual({ cli: '3.248.0', awsPlugin: '7.48.0' });
    expect(job?.staleLock).toEqual({ maxAgeMs: 600_000 + 60_000, hostname: os.hostname() });
    expect(saved).toEqual([[tenantStackName('pool-co'), { ...kms, encryptedKey: 'rotated' }]]);
  });
});

describe('account closures', () => {
  it('reports the account offboarding leaves open, and queues its closure after the destroy', async () => {
    const f = fakeRunner((job) => (job.op === 'unprotect' ? { outputs: { accountId: '222233334444' } } : {}));
    const queued: unknown[] = [];
    const e = engine({
      runner: f.runner,
      closures: {
        enqueue: async (t, accountId, operationId) => void queued.push([t.slug, accountId, operationId]),
      },
    });
    const t = tenant('account');
    const progress: Record<string, unknown> = {};
    const report = async (patch: Record<string, unknown>) => void Object.assign(progress, patch);
    await e.runStep(ctx(t, 'stack-unprotect', { kind: 'offboard', report }));
    expect(progress).toEqual({ accountId: '222233334444' });
    expect(queued).toEqual([]);
    await e.runStep(ctx(t, 'stack-destroy', { kind: 'offboard', progress }));
    expect(queued).toEqual([['account-co', '222233334444', 'op_test']]);
  });
});

describe('a tenant’s suspension and limit overrides in its stack', () => {
  const suspended = (t: StepTenant, limits?: StepTenant['limits']): StepTenant => ({
    ...t,
    suspended: true,
    ...(limits ? { limits } : {}),
  });
  const stateOf = (job: PulumiJob) => ({
    suspended: job.input.suspended,
    limitOverrides: job.input.limitOverrides,
    config: {
      suspended: job.config['tenantry:suspended']?.value,
      limitOverrides: job.config['tenantry:limitOverrides']?.value,
    },
  });

  it('runs a bridge, silo or account tenant’s suspension, reactivation and limits as steps of its stack, a pool’s on the rows', () => {
    const e = engine();
    for (const tier of ['bridge', 'silo', 'account'] as const) {
      expect(e.lifecycleSteps('suspend', tier)).toEqual(['suspend-logins']);
      expect(e.lifecycleSteps('reactivate', tier)).toEqual(['resume-logins']);
      expect(e.lifecycleSteps('update', tier)).toEqual(['limits']);
    }
    expect(e.lifecycleSteps('suspend', 'pool')).toEqual(['suspend-writes']);
    expect(e.lifecycleSteps('reactivate', 'pool')).toEqual(['resume-writes']);
    expect(() => e.lifecycleSteps('update', 'pool')).toThrow(
      expect.objectContaining({
        code: 'OPERATION_NOT_AVAILABLE_ON_TARGET',
        message: expect.stringMatching(/a pool tenant has none/),
      }),
    );
  });

  it('suspends an account tenant with an up of its stack (an account run) carrying the state, then needs its instance’s admin secret', async () => {
    // The up reports no adminSecretArn (an account stack from before it was an output): the sessions
    // cannot be ended, and the step says why instead of passing.
    const f = fakeRunner(() => ({ outputs: { host: 'db.example', database: 'tenant_account_co' } }));
    let accountRuns = 0;
    const slots = new (class extends Semaphore {
      override run<T>(fn: () => Promise<T>): Promise<T> {
        accountRuns++;
        return super.run(fn);
      }
    })(5);
    const e = engine({ runner: f.runner, accountSemaphore: slots });
    const t = suspended(tenant('account'), { connectionLimit: 9 });
    await expect(e.runStep(ctx(t, 'suspend-logins', { kind: 'suspend' }))).rejects.toMatchObject({
      code: 'PROVIDER_FAILED',
      message: expect.stringMatching(/account's stack outputs name no instance or admin secret/),
    });
    expect(accountRuns).toBe(1);
    expect(f.jobs.map((j) => j.job.op)).toEqual(['up']);
    const job = f.jobs[0]!.job;
    expect(job.input).toMatchObject({
      tier: 'account',
      accountEmailSuffix: AwsEngine.accountEmailSuffix(t.id),
    });
    expect(stateOf(job)).toEqual({
      suspended: true,
      limitOverrides: { connectionLimit: 9 },
      config: { suspended: 'true', limitOverrides: '{"connectionLimit":9}' },
    });
    // Its reactivation: an up with the suspension cleared, nothing to end.
    f.jobs.length = 0;
    await e.runStep(ctx(t, 'resume-logins', { kind: 'reactivate' }));
    expect(stateOf(f.jobs[0]!.job)).toMatchObject({ suspended: undefined, config: { suspended: undefined } });
  });

  it('reactivates with an up of the stack whose config no longer says suspended, its overrides kept', async () => {
    const f = fakeRunner(() => ({ outputs: { user: 'tenant_bridge_co' } }));
    const e = engine({ runner: f.runner });
    // The tenant is recorded suspended until its reactivation succeeds.
    const t = suspended(tenant('bridge'), { connectionLimit: 5 });
    const out = await e.runStep(ctx(t, 'resume-logins', { kind: 'reactivate' }));
    expect(f.jobs).toHaveLength(1);
    const job = f.jobs[0]!.job;
    expect(job).toMatchObject({ op: 'up', input: { tier: 'bridge' } });
    expect(stateOf(job)).toEqual({
      suspended: undefined,
      limitOverrides: { connectionLimit: 5 },
      config: { suspended: undefined, limitOverrides: '{"connectionLimit":5}' },
    });
    expect(out).toMatchObject({ user: 'tenant_bridge_co', stack: tenantStackName('bridge-co') });
  });

  it('applies limit overrides with an up of the stack carrying them (and a standing suspension)', async () => {
    const f = fakeRunner();
    const e = engine({ runner: f.runner });
    const limits = { statementTimeoutMs: 2000, connectionLimit: 7 };
    await e.runStep(
      ctx(tenant('silo'), 'limits', {
        kind: 'update',
        params: { limits },
        tenant: { ...tenant('silo'), limits },
      }),
    );
    await e.runStep(
      ctx(tenant('silo'), 'limits', { kind: 'update', tenant: suspended(tenant('silo'), limits) }),
    );
    expect(f.jobs.map((j) => stateOf(j.job))).toEqual([
      {
        suspended: undefined,
        limitOverrides: limits,
        config: { suspended: undefined, limitOverrides: '{"connectionLimit":7,"statementTimeoutMs":2000}' },
      },
      {
        suspended: true,
        limitOverrides: limits,
        config: { suspended: 'true', limitOverrides: '{"connectionLimit":7,"statementTimeoutMs":2000}' },
      },
    ]);
  });

  it('keeps a suspended tenant suspended, with its overrides, in every other up, offboarding’s and a drift check', async () => {
    const f = fakeRunner();
    const e = engine({ runner: f.runner });
    const t = suspended(tenant('bridge'), { connectionLimit: 2 });
    await e.runStep(ctx(t, 'stack-up', { kind: 'reconcile' }));
    await e.runStep(ctx(t, 'stack-unprotect', { kind: 'offboard' }));
    await e.previewRefresh(t);
    expect(f.jobs.map((j) => j.job.op)).toEqual(['up', 'unprotect', 'preview-refresh']);
    for (const { job } of f.jobs) {
      expect(stateOf(job), job.op).toEqual({
        suspended: true,
        limitOverrides: { connectionLimit: 2 },
        config: { suspended: 'true', limitOverrides: '{"connectionLimit":2}' },
      });
    }
  });

  it('never hands a pool tenant’s state to its stack: the pool login is shared (its suspension is a freeze)', async () => {
    const f = fakeRunner();
    const e = engine({ runner: f.runner });
    await e.runStep(ctx(suspended(tenant('pool')), 'stack-up', { kind: 'reconcile' }));
    expect(stateOf(f.jobs[0]!.job)).toEqual({
      suspended: undefined,
      limitOverrides: undefined,
      config: { suspended: undefined, limitOverrides: undefined },
    });
  });
});

describe.each(['silo', 'account'] as const)('the %s tenant onboarded from an archive', (tier) => {
  it('reports where its `up` put the instance, for the restore steps of the same attempt', async () => {
    const outputs = {
      host: 'db.example',
      port: 5432,
      database: `tenant_${tier}_co`,
      adminSecretArn: 'arn:rds!db',
      ...(tier === 'account' ? { accountId: '222233334444' } : {}),
    };
    const f = fakeRunner(() => ({ outputs }));
    const e = engine({ runner: f.runner });
    const progress: Record<string, unknown> = {};
    const report = async (patch: Record<string, unknown>) => void Object.assign(progress, patch);
    const fromExport = { exportId: 'exp_1', file: 's3://b/exports/x', manifestSha256: 'a'.repeat(64) };
    await e.runStep(ctx(tenant(tier), 'stack-up', { params: { fromExport }, report }));
    expect(progress).toEqual({ stackOutputs: outputs });
    // Without an archive to restore, nothing is reported.
    const other: Record<string, unknown> = {};
    await e.runStep(ctx(tenant(tier), 'stack-up', { report: async (p) => void Object.assign(other, p) }));
    expect(other).toEqual({});
  });
});
