import type { ResourceValidationArgs, ResourceValidationPolicy } from '@pulumi/policy';
import { describe, expect, it } from 'vitest';
import { KEY_ROOT_ADMIN_ACTIONS, tenantKeyPolicy } from '../../stacks/common/key-policy.js';
import {
  kmsRootFallback,
  kmsRotation,
  noOpenSecurityGroups,
  policies,
  providerAccountCheck,
  rdsDeletionProtection,
  rdsEncrypted,
  rdsNotPublic,
  rdsProduction,
  requiredTags,
  secretsUseKms,
  snapshotCopyEncrypted,
} from '../../stacks/policy/policies.js';
import { stackUrnPrefix } from '../helpers/urns.js';

const TAGS = {
  'tenantry:tenant-id': '0b6c1a9e-3f9f-4c3e-9a57-5e0f4a1c2b3d',
  'tenantry:tier': 'silo',
  'tenantry:managed-by': 'tenantry',
};
const KEY_ARN = 'arn:aws:kms:eu-west-1:111111111111:key/0b6c1a9e-3f9f-4c3e-9a57-5e0f4a1c2b3d';

function fakeArgs(type: string, props: Record<string, unknown>): ResourceValidationArgs {
  return {
    type,
    props,
    urn: `${stackUrnPrefix('policy-co')}${type}::r`,
    name: 'r',
    opts: {} as ResourceValidationArgs['opts'],
    stackTags: new Map(),
    isType: () => false,
    asType: () => undefined,
    getConfig: <T extends object>() => ({}) as T,
    notApplicable: (reason?: string): never => {
      throw new Error(`not applicable: ${reason}`);
    },
  };
}

async function violations(policy: ResourceValidationPolicy, type: string, props: Record<string, unknown>) {
  const found: string[] = [];
  const validate = policy.validateResource;
  const all = Array.isArray(validate) ? validate : validate ? [validate] : [];
  expect(all.length).toBeGreaterThan(0);
  for (const v of all) await v(fakeArgs(type, props), (message) => found.push(message));
  return found;
}

const goodRds = {
  storageEncrypted: true,
  kmsKeyId: KEY_ARN,
  publiclyAccessible: false,
  deletionProtection: true,
  skipFinalSnapshot: false,
  finalSnapshotIdentifier: 'tenantry-acme-final',
  multiAz: true,
  allocatedStorage: 20,
  maxAllocatedStorage: 200,
  backupRetentionPeriod: 7,
  performanceInsightsEnabled: true,
  performanceInsightsKmsKeyId: KEY_ARN,
  enabledCloudwatchLogsExports: ['postgresql', 'upgrade'],
  monitoringInterval: 60,
  monitoringRoleArn: 'arn:aws:iam::111111111111:role/tenant-acme-monitoring',
  tags: TAGS,
};

const keyPolicy = (accountRootArn = 'arn:aws:iam::111111111111:root') =>
  tenantKeyPolicy({
    adminPrincipalArns: ['arn:aws:iam::111111111111:role/tenantry-admin'],
    dataPlaneRoleArn: 'arn:aws:iam::111111111111:role/tenantry-dataplane',
    region: 'eu-west-1',
    accountRootArn,
  });

describe('the Tenantry policy pack', () => {
  it('is mandatory throughout', () => {
    expect(policies).toHaveLength(11);
    for (const p of policies) expect(p.enforcementLevel).toBe('mandatory');
  });

  it('accepts an RDS instance as the silo program writes it', async () => {
    for (const p of policies)
      expect(await violations(p, 'aws:rds/instance:Instance', goodRds), p.name).toEqual([]);
  });

  it('rejects unencrypted RDS and RDS encrypted with the default key', async () => {
    expect(
      await violations(rdsEncrypted, 'aws:rds/instance:Instance', { ...goodRds, storageEncrypted: false }),
    ).toEqual(['storageEncrypted must be true.']);
    const { kmsKeyId: _omit, ...defaultKey } = goodRds;
    expect(await violations(rdsEncrypted, 'aws:rds/instance:Instance', defaultKey)).toHaveLength(1);
  });

  it('rejects a publicly accessible instance', async () => {
    expect(
      await violations(rdsNotPublic, 'aws:rds/instance:Instance', { ...goodRds, publiclyAccessible: true }),
    ).toEqual(['publiclyAccessible must be false.']);
  });

  it('rejects RDS without deletion protection or without a final snapshot', async () => {
    expect(
      await violations(rdsDeletionProtection, 'aws:rds/instance:Instance', {
        ...goodRds,
        deletionProtection: false,
      }),
    ).toEqual(['deletionProtection must be true.']);
    expect(
      await violations(rdsDeletionProtection, 'aws:rds/instance:Instance', {
        ...goodRds,
        skipFinalSnapshot: true,
      }),
    ).toEqual(['skipFinalSnapshot must be false.']);
  });

  it.each([
    [{ multiAz: false }, 'multiAz must be true.'],
    [
      { maxAllocatedStorage: undefined },
      'maxAllocatedStorage must be above allocatedStorage (storage autoscaling).',
    ],
    [
      { maxAllocatedStorage: 20 },
      'maxAllocatedStorage must be above allocatedStorage (storage autoscaling).',
    ],
    [{ backupRetentionPeriod: 1 }, 'backupRetentionPeriod must be 7 days or more.'],
    [{ performanceInsightsEnabled: false }, 'performanceInsightsEnabled must be true.'],
    [
      { performanceInsightsKmsKeyId: undefined },
      'performanceInsightsKmsKeyId must name the tenant key (not the aws/rds default key).',
    ],
    [{ enabledCloudwatchLogsExports: ['upgrade'] }, 'enabledCloudwatchLogsExports must include postgresql.'],
    [{ monitoringInterval: 0 }, 'monitoringInterval must be above 0 (enhanced monitoring).'],
    [{ monitoringRoleArn: undefined }, 'monitoringRoleArn must be set with enhanced monitoring.'],
  ])('rejects an RDS instance without each production setting: %o', async (change, message) => {
    expect(await violations(rdsProduction, 'aws:rds/instance:Instance', { ...goodRds, ...change })).toEqual([
      message,
    ]);
  });

  it('requires the account root as the key’s fallback administrator, never as a user of it', async () => {
    const key = (policy: string) => ({ enableKeyRotation: true, policy, tags: TAGS });
    expect(await violations(kmsRootFallback, 'aws:kms/key:Key', key(keyPolicy()))).toEqual([]);
    const withoutRoot = JSON.parse(keyPolicy()) as { Statement: { Sid: string }[] };
    withoutRoot.Statement = withoutRoot.Statement.filter((s) => s.Sid !== 'AccountRootFallbackAdministrator');
    expect(await violations(kmsRootFallback, 'aws:kms/key:Key', key(JSON.stringify(withoutRoot)))).toEqual([
      'the key policy must name the account root as fallback administrator.',
    ]);
    const rootUses = JSON.parse(keyPolicy()) as { Statement: { Sid: string; Action: string[] }[] };
    for (const s of rootUses.Statement)
      if (s.Sid === 'AccountRootFallbackAdministrator') s.Action = [...KEY_ROOT_ADMIN_ACTIONS, 'kms:Decrypt'];
    expect(await violations(kmsRootFallback, 'aws:kms/key:Key', key(JSON.stringify(rootUses)))).toEqual([
      'the account root must not use the key: kms:Decrypt.',
    ]);
  });

  it('refuses a provider limited to an account that skips looking its account up (it would not start)', async () => {
    const provider = (skip: unknown) => ({
      region: 'eu-west-1',
      allowedAccountIds: JSON.stringify(['222222222222']),
      skipRequestingAccountId: skip,
    });
    expect(await violations(providerAccountCheck, 'pulumi:providers:aws', provider('false'))).toEqual([]);
    for (const skip of ['true', true]) {
      expect(await violations(providerAccountCheck, 'pulumi:providers:aws', provider(skip))).toEqual([
        'skipRequestingAccountId must be false where allowedAccountIds is set.',
      ]);
    }
    // The default provider, not limited to an account, may skip the lookup (pulumi-aws#873).
    expect(
      await violations(providerAccountCheck, 'pulumi:providers:aws', {
        region: 'eu-west-1',
        skipRequestingAccountId: 'true',
      }),
    ).toEqual([]);
  });

  it('requires an exported snapshot to be re-encrypted with a customer-managed key', async () => {
    const copy = { sourceDbSnapshotIdentifier: 'arn:aws:rds:eu-west-1:222222222222:snapshot:x', tags: TAGS };
    expect(
      await violations(snapshotCopyEncrypted, 'aws:rds/snapshotCopy:SnapshotCopy', {
        ...copy,
        kmsKeyId: KEY_ARN,
      }),
    ).toEqual([]);
    expect(await violations(snapshotCopyEncrypted, 'aws:rds/snapshotCopy:SnapshotCopy', copy)).toEqual([
      'kmsKeyId must name the platform archive key.',
    ]);
  });

  it('requires rotation on symmetric keys only', async () => {
    expect(await violations(kmsRotation, 'aws:kms/key:Key', { enableKeyRotation: true, tags: TAGS })).toEqual(
      [],
    );
    expect(await violations(kmsRotation, 'aws:kms/key:Key', { enableKeyRotation: false })).toEqual([
      'enableKeyRotation must be true.',
    ]);
    expect(await violations(kmsRotation, 'aws:kms/key:Key', { customerMasterKeySpec: 'RSA_2048' })).toEqual(
      [],
    );
  });

  it('requires secrets to name a KMS key', async () => {
    expect(
      await violations(secretsUseKms, 'aws:secretsmanager/secret:Secret', { kmsKeyId: KEY_ARN }),
    ).toEqual([]);
    expect(await violations(secretsUseKms, 'aws:secretsmanager/secret:Secret', {})).toHaveLength(1);
  });

  it('requires the three Tenantry tags on taggable resources and ignores untaggable ones', async () => {
    expect(await violations(requiredTags, 'aws:kms/key:Key', { tags: TAGS })).toEqual([]);
    expect(
      await violations(requiredTags, 'aws:secretsmanager/secret:Secret', {
        tags: { 'tenantry:tier': 'pool' },
      }),
    ).toEqual(['missing tags: tenantry:tenant-id, tenantry:managed-by.']);
    expect(
      await violations(requiredTags, 'aws:rds/instance:Instance', {
        tags: { ...TAGS, 'tenantry:managed-by': 'someone' },
      }),
    ).toEqual(['tenantry:managed-by must be "tenantry".']);
    expect(await violations(requiredTags, 'aws:kms/alias:Alias', {})).toEqual([]);
  });

  it('rejects any security group rule open to 0.0.0.0/0 or ::/0, in every rule shape', async () => {
    const sg = (ingress: Record<string, unknown>[]) => ({ ingress, egress: [], tags: TAGS });
    expect(
      await violations(
        noOpenSecurityGroups,
        'aws:ec2/securityGroup:SecurityGroup',
        sg([{ cidrBlocks: ['10.0.0.0/16'] }]),
      ),
    ).toEqual([]);
    expect(
      await violations(
        noOpenSecurityGroups,
        'aws:ec2/securityGroup:SecurityGroup',
        sg([{ cidrBlocks: ['0.0.0.0/0'] }]),
      ),
    ).toEqual(['security group rule opens to 0.0.0.0/0.']);
    expect(
      await violations(noOpenSecurityGroups, 'aws:ec2/securityGroup:SecurityGroup', {
        ingress: [],
        egress: [{ ipv6CidrBlocks: ['::/0'] }],
      }),
    ).toEqual(['security group rule opens to ::/0.']);
    expect(
      await violations(noOpenSecurityGroups, 'aws:ec2/securityGroupRule:SecurityGroupRule', {
        cidrBlocks: ['0.0.0.0/0'],
      }),
    ).toHaveLength(1);
    expect(
      await violations(noOpenSecurityGroups, 'aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule', {
        cidrIpv4: '0.0.0.0/0',
      }),
    ).toHaveLength(1);
  });
});

describe('the policy pack against what the programs create', () => {
  it('finds no violation in any resource of any tier', async () => {
    const { runTierProgram, tenantInput } = await import('./harness.js');
    for (const tier of ['pool', 'bridge', 'silo', 'account'] as const) {
      const input = tenantInput(
        tier,
        `policy-${tier}`,
        tier === 'account' ? { accountEmailSuffix: 'c0ffee00beef' } : {},
      );
      const run = await runTierProgram(tier, input);
      for (const r of run.resources) {
        for (const p of policies)
          expect(await violations(p, r.type, r.inputs), `${p.name} on ${r.type} ${r.name}`).toEqual([]);
      }
      // Offboarding's own run, with the deletion-protection rule off as the engine runs it (the
      // account tier's exports its last snapshot: both new resources pass).
      const leaving = await runTierProgram(tier, { ...input, offboarding: true });
      for (const r of leaving.resources) {
        for (const p of policies.filter((x) => x !== rdsDeletionProtection))
          expect(
            await violations(p, r.type, r.inputs),
            `${p.name} on ${r.type} ${r.name} (offboarding)`,
          ).toEqual([]);
      }
    }
  });
});
