import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Tier } from '../../../control-plane/src/domain/tiers.js';
import {
  buildJob,
  type JobSettings,
  UNPROTECT_POLICY_CONFIG,
} from '../../../control-plane/src/engine/pulumi/job.js';
import { rdsDeletionProtection } from '../../../stacks/policy/policies.js';
import { TEST_PLATFORM } from '../../fixtures/platform.js';

const POLICY_PACK = path.resolve('stacks/policy');

function settings(extra: Partial<JobSettings> = {}): JobSettings {
  return {
    backendUrl: 'file:///var/lib/tenantry/state',
    envVars: { PATH: '/usr/bin' },
    aws: { region: 'eu-west-1' },
    platform: TEST_PLATFORM,
    workspaceRoot: '/var/lib/tenantry/pulumi',
    templatesDir: path.resolve('templates'),
    policyPacks: [POLICY_PACK],
    accountEmailSuffix: () => 'abcdef012345',
    ...extra,
  };
}

const tenant = { id: '0a1b2c3d-0000-4000-8000-00000000000a', slug: 'stager' };

describe('buildJob with a staged placement', () => {
  it.each([
    ['pool', 'bridge'],
    ['pool', 'silo'],
    ['bridge', 'silo'],
  ] as const)('stages %s → %s: the source program, with stagedTier, every policy enforced', (from, to) => {
    const job = buildJob('up', tenant, from, settings(), { tier: to });
    expect(job.input).toMatchObject({ tier: from, stagedTier: to, slug: 'stager', tenantId: tenant.id });
    expect(job.input.discardStaged).toBeUndefined();
    expect(job.input.offboarding).toBeUndefined();
    expect(job.policyPacks).toEqual([POLICY_PACK]);
    expect(job.policyPackConfig).toBeUndefined();
    // The stack config is the source tier's: the staged tier is no config, only program input.
    expect(job.config['tenantry:tier']).toEqual({ value: from, secret: false });
    expect(Object.keys(job.config).some((k) => /stag/i.test(k))).toBe(false);
  });

  it('discards with discardStaged and only the deletion-protection rule disabled, for that run only', () => {
    const discard = buildJob('up', tenant, 'pool', settings(), { tier: 'silo', discard: true });
    expect(discard.input).toMatchObject({ tier: 'pool', stagedTier: 'silo', discardStaged: true });
    expect(discard.input.offboarding).toBeUndefined();
    expect(discard.policyPacks).toEqual([POLICY_PACK]);
    expect(discard.policyPackConfig).toEqual(UNPROTECT_POLICY_CONFIG);
    expect(discard.policyPackConfig).toEqual({
      [rdsDeletionProtection.name]: { enforcementLevel: 'disabled' },
    });
    // The up that follows (the source program alone) deletes the staged placement under every policy.
    const unstage = buildJob('up', tenant, 'pool', settings());
    expect(unstage.input.stagedTier).toBeUndefined();
    expect(unstage.input.discardStaged).toBeUndefined();
    expect(unstage.policyPackConfig).toBeUndefined();
    // `discard: false` is a plain stage.
    const stage = buildJob('up', tenant, 'pool', settings(), { tier: 'silo', discard: false });
    expect(stage.input.discardStaged).toBeUndefined();
    expect(stage.policyPackConfig).toBeUndefined();
  });

  it('sets no policy pack config for a discard run without policy packs', () => {
    const job = buildJob('up', tenant, 'bridge', settings({ policyPacks: [] }), {
      tier: 'silo',
      discard: true,
    });
    expect(job.input.discardStaged).toBe(true);
    expect(job.policyPacks).toEqual([]);
    expect(job.policyPackConfig).toBeUndefined();
  });

  it('leaves jobs without a stage as they were', () => {
    const up = buildJob('up', tenant, 'silo', settings());
    expect(up.input).toEqual({
      tenantId: tenant.id,
      slug: 'stager',
      tier: 'silo',
      templatesDir: path.resolve('templates'),
    });
    expect(up.policyPackConfig).toBeUndefined();
    const unprotect = buildJob('unprotect', tenant, 'silo', settings());
    expect(unprotect.input.offboarding).toBe(true);
    expect(unprotect.policyPackConfig).toEqual(UNPROTECT_POLICY_CONFIG);
    expect(buildJob('destroy', tenant, 'silo', settings()).policyPacks).toEqual([]);
  });

  it('refuses what the programs would refuse, before any child runs', () => {
    const stage = (from: Tier, to: Tier) => () => buildJob('up', tenant, from, settings(), { tier: to });
    expect(stage('silo', 'bridge')).toThrow(/only a pool or bridge tenant stages/);
    expect(stage('pool', 'pool')).toThrow(/cannot stage a pool placement/);
    expect(stage('bridge', 'pool')).toThrow(/cannot stage/);
    expect(stage('account', 'silo')).toThrow(/only a pool or bridge tenant stages/);
    expect(stage('pool', 'account')).toThrow(/cannot stage/);
    expect(() => buildJob('unprotect', tenant, 'pool', settings(), { tier: 'silo' })).toThrow(/never stages/);
    expect(() => buildJob('destroy', tenant, 'pool', settings(), { tier: 'silo', discard: true })).toThrow(
      /never stages/,
    );
  });
});
