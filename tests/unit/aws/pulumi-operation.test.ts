/**
 * operation.ts over its seam (PulumiStackApi), driven directly: the pinned versions, the stack
 * settings hand-off, recovery from a killed run, stale locks, and what an offboarding `up` targets.
 * The seam's LocalWorkspace side (workspace.ts) needs a Pulumi CLI, which these machines do not have.
 */
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { classifyPulumiError } from '../../../control-plane/src/engine/pulumi/errors.js';
import {
  type ExportedState,
  isSafePending,
  type OperationIo,
  type PendingOperation,
  type PulumiStackApi,
  runOperation,
} from '../../../control-plane/src/engine/pulumi/operation.js';
import type { PulumiJob } from '../../../control-plane/src/engine/pulumi/runner.js';
import { PINNED_VERSIONS } from '../../../control-plane/src/engine/pulumi/version.js';
import { workspaceOptions } from '../../../control-plane/src/engine/pulumi/workspace.js';
import { exportResourceUrns } from '../../../stacks/common/names.js';

const STACK = 'tenant-acme';
const urn = (type: string, name: string) => `urn:pulumi:${STACK}::tenantry::${type}::${name}`;

function job(extra: Partial<PulumiJob> = {}): PulumiJob {
  return {
    op: 'up',
    projectName: 'tenantry',
    stackName: STACK,
    workDir: '/tmp/tenantry-test/stacks/tenant-acme',
    backendUrl: 'file:///tmp/tenantry-test/state',
    envVars: {},
    config: { 'aws:region': { value: 'eu-west-1', secret: false } },
    input: { tenantId: '00000000-0000-4000-8000-000000000000', slug: 'acme', tier: 'bridge' },
    policyPacks: [],
    pins: { ...PINNED_VERSIONS },
    staleLock: { maxAgeMs: 3_600_000, hostname: os.hostname() },
    ...extra,
  };
}

/** A scripted stack: records every call; `lockedBy` makes mutating calls fail as the DIY backend does. */
function scripted(
  opts: {
    version?: string;
    plugins?: { name: string; version: string; kind: string }[];
    settings?: Record<string, string>;
    state?: ExportedState;
    lockedBy?: { pid: number; at: Date };
  } = {},
) {
  const calls: string[] = [];
  let locked = opts.lockedBy;
  let state: ExportedState = opts.state ?? {
    version: 3,
    deployment: { resources: [], pending_operations: [] },
  };
  const guard = () => {
    if (!locked) return;
    const e = new Error(
      `error: the stack is currently locked by 1 lock(s).\n  /b/.pulumi/locks/organization/tenantry/${STACK}/x.json: created by root@${os.hostname()} (pid ${locked.pid}) at ${locked.at.toISOString()}\n`,
    );
    e.name = 'ConcurrentUpdateError';
    throw e;
  };
  let upTarget: string[] | undefined;
  const stack: PulumiStackApi = {
    pulumiVersion: opts.version ?? PINNED_VERSIONS.cli,
    listPlugins: async () =>
      opts.plugins ?? [{ name: 'aws', version: PINNED_VERSIONS.awsPlugin, kind: 'resource' }],
    stackSettings: async () => {
      calls.push('settings');
      return opts.settings ?? {};
    },
    getAllConfig: async () => ({ 'aws:region': { value: 'eu-west-1', secret: false } }),
    setAllConfig: async () => void calls.push('setAllConfig'),
    removeAllConfig: async () => void calls.push('removeAllConfig'),
    exportStack: async () => {
      calls.push('export');
      return state;
    },
    importStack: async (s) => {
      calls.push('import');
      guard();
      state = s;
    },
    cancel: async () => {
      calls.push('cancel');
      locked = undefined;
    },
    refresh: async () => {
      calls.push('refresh');
      guard();
    },
    up: async (o) => {
      calls.push('up');
      guard();
      upTarget = o.target;
      return { summary: {}, outputs: {} };
    },
    preview: async () => {
      calls.push('preview');
      return { summary: {} };
    },
    destroy: async () => {
      calls.push('destroy');
      guard();
      return { summary: {} };
    },
  };
  return { stack, calls, state: () => state, target: () => upTarget };
}

function io(saved: unknown[] = [], calls?: string[]): OperationIo {
  return {
    onEvent: () => undefined,
    saveStackSettings: async (s) => {
      calls?.push('save-settings');
      saved.push(s);
    },
    signal: new AbortController().signal,
    policyOptions: () => ({}),
  };
}

const run = (s: ReturnType<typeof scripted>, j = job(), o = io()) =>
  runOperation({ open: async () => s.stack }, j, o);

describe('pinned versions', () => {
  it('refuses another CLI version before touching the stack, saying which to install', async () => {
    const s = scripted({ version: '3.230.0' });
    const err = await run(s).catch((e: unknown) => e);
    expect(classifyPulumiError(err)).toEqual({ kind: 'cli-version', retryable: false });
    expect((err as Error).message).toContain(`Pulumi CLI ${PINNED_VERSIONS.cli} exactly, and found 3.230.0`);
    expect(s.calls).toEqual([]);
  });

  it('refuses another (or a missing) aws plugin, never installing one during an operation', async () => {
    for (const plugins of [[], [{ name: 'aws', version: '7.1.0', kind: 'resource' }]]) {
      const s = scripted({ plugins });
      const err = await run(s).catch((e: unknown) => e);
      expect(classifyPulumiError(err)).toEqual({ kind: 'cli-version', retryable: false });
      expect((err as Error).message).toContain(`aws plugin ${PINNED_VERSIONS.awsPlugin}`);
      expect(s.calls).toEqual([]);
    }
  });
});

describe('stack settings', () => {
  const kms = { secretsProvider: 'awskms://alias/tenantry-state?region=eu-west-1', encryptedKey: 'AQICAHh…' };

  it('hands new settings to the parent before anything runs on the stack, and waits for them to be saved', async () => {
    const s = scripted({ settings: kms });
    const saved: unknown[] = [];
    await run(s, job(), io(saved, s.calls));
    expect(saved).toEqual([kms]);
    expect(s.calls.indexOf('save-settings')).toBeLessThan(s.calls.indexOf('up'));
  });

  it('saves nothing when the stack’s settings are those the job brought', async () => {
    const s = scripted({ settings: kms });
    const saved: unknown[] = [];
    await run(s, job({ stackSettings: kms }), io(saved));
    expect(saved).toEqual([]);
  });

  it('does not run when the settings cannot be saved', async () => {
    const s = scripted({ settings: kms });
    const failing: OperationIo = {
      ...io(),
      saveStackSettings: async () => Promise.reject(new Error('db down')),
    };
    await expect(run(s, job(), failing)).rejects.toThrow('db down');
    expect(s.calls).not.toContain('up');
  });

  it('writes the persisted settings (and the job’s config) into the workspace, the persisted provider first', () => {
    const opts = workspaceOptions(job({ secretsProvider: 'passphrase', stackSettings: kms }));
    expect(opts.secretsProvider).toBe(kms.secretsProvider);
    expect(opts.stackSettings).toEqual({ [STACK]: { ...kms, config: { 'aws:region': 'eu-west-1' } } });
    // A stack not created yet: the configured provider, which its creation applies.
    const fresh = workspaceOptions(job({ secretsProvider: 'passphrase' }));
    expect(fresh.secretsProvider).toBe('passphrase');
    expect(fresh.stackSettings).toBeUndefined();
  });
});

describe('recovery from a killed run', () => {
  const pending = (type: string, resourceType: string, name: string): PendingOperation => ({
    type,
    resource: { urn: urn(resourceType, name), type: resourceType },
  });

  it('knows which pending operations are safe to clear', () => {
    expect(isSafePending(pending('updating', 'aws:rds/instance:Instance', 'db'))).toBe(true);
    expect(isSafePending(pending('deleting', 'aws:secretsmanager/secret:Secret', 's'))).toBe(true);
    expect(isSafePending(pending('creating', 'pulumi-nodejs:dynamic:Resource', 'role'))).toBe(true);
    expect(isSafePending(pending('creating', 'pulumi:providers:aws', 'p'))).toBe(true);
    expect(isSafePending(pending('creating', 'tenantry:tenant:Silo', 'silo'))).toBe(true);
    expect(isSafePending(pending('creating', 'aws:rds/instance:Instance', 'db'))).toBe(false);
    expect(isSafePending(pending('creating', 'aws:secretsmanager/secret:Secret', 's'))).toBe(false);
  });

  it('writes nothing when no run was interrupted', async () => {
    const s = scripted();
    await run(s);
    expect(s.calls).toEqual(['settings', 'export', 'up']);
  });

  it('leaves a lock held by a live process alone: a concurrent update, retried later', async () => {
    const s = scripted({
      lockedBy: { pid: process.pid, at: new Date() },
      state: {
        version: 3,
        deployment: { pending_operations: [pending('updating', 'aws:kms/key:Key', 'k')] },
      },
    });
    const err = await run(s).catch((e: unknown) => e);
    expect(classifyPulumiError(err, { maxAgeMs: 3_600_000 })).toMatchObject({
      kind: 'concurrent-update',
      retryable: true,
    });
    expect(s.calls).not.toContain('cancel');
  });

  it('cancels a lock older than any operation, even from another host', async () => {
    const s = scripted({ lockedBy: { pid: process.pid, at: new Date(Date.now() - 2 * 3_600_000) } });
    await run(s);
    expect(s.calls).toEqual(['settings', 'export', 'up', 'cancel', 'up']);
  });

  it('is not run by a drift check, which writes nothing', async () => {
    const s = scripted({
      state: {
        version: 3,
        deployment: { pending_operations: [pending('creating', 'aws:kms/key:Key', 'k')] },
      },
    });
    await run(s, job({ op: 'preview-refresh' }));
    expect(s.calls).toEqual(['settings', 'preview']);
  });
});

describe('what an offboarding up targets', () => {
  const resources = (types: string[]) =>
    types
      .map((type, i) => ({ type, urn: urn(type, `r${i}`) }))
      .concat([
        { type: 'pulumi:pulumi:Stack', urn: `urn:pulumi:${STACK}::tenantry::pulumi:pulumi:Stack::${STACK}` },
      ]);

  it('adds the export of the last snapshot for an account tenant with a database', async () => {
    const inState = resources(['aws:organizations/account:Account', 'aws:rds/instance:Instance']);
    const s = scripted({ state: { version: 3, deployment: { resources: inState, pending_operations: [] } } });
    await run(s, job({ op: 'unprotect', input: { ...job().input, tier: 'account' } }));
    expect(s.target()).toEqual([
      inState[0]?.urn,
      inState[1]?.urn,
      ...exportResourceUrns(STACK, 'tenantry', 'acme'),
    ]);
  });

  it('adds nothing for an account tenant without a database, nor for another tier', async () => {
    const noDb = resources(['aws:organizations/account:Account']);
    const a = scripted({ state: { version: 3, deployment: { resources: noDb, pending_operations: [] } } });
    await run(a, job({ op: 'unprotect', input: { ...job().input, tier: 'account' } }));
    expect(a.target()).toEqual([noDb[0]?.urn]);
    const silo = resources(['aws:rds/instance:Instance']);
    const b = scripted({ state: { version: 3, deployment: { resources: silo, pending_operations: [] } } });
    await run(b, job({ op: 'unprotect', input: { ...job().input, tier: 'silo' } }));
    expect(b.target()).toEqual([silo[0]?.urn]);
  });
});
