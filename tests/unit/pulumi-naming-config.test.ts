import { describe, expect, it } from 'vitest';
import { buildStackConfig } from '../../control-plane/src/engine/pulumi/config.js';
import {
  fullyQualifiedStackName,
  stackName,
  stackWorkspaceDir,
} from '../../control-plane/src/engine/pulumi/naming.js';
import { type PlatformSettings, parsePlatformSettings } from '../../stacks/common/config.js';

const platform: PlatformSettings = parsePlatformSettings(
  (k) =>
    ({
      adminRoleArn: 'arn:aws:iam::111111111111:role/tenantry-control-plane',
      dataPlaneRoleArn: 'arn:aws:iam::111111111111:role/tenantry-data-plane',
      keyDeletionWindowDays: '14',
      sharedClusterSecretName: 'tenantry/platform/shared-cluster-admin',
      dbSubnetGroupName: 'tenantry-private',
      vpcSecurityGroupIds: '["sg-0123456789abcdef0"]',
      accountEmailDomain: 'tenants.example.com',
      accountParentOuId: 'ou-ab12-cdef3456',
      accountAvailabilityZones: '["eu-west-1a","eu-west-1b"]',
    })[k],
);

describe('stack naming and workspaces', () => {
  it('names stacks through the domain function and qualifies them for DIY backends', () => {
    expect(stackName('acme')).toBe('tenant-acme');
    expect(fullyQualifiedStackName('acme')).toBe('organization/tenantry/tenant-acme');
    expect(fullyQualifiedStackName('acme', 'my-org')).toBe('my-org/tenantry/tenant-acme');
  });

  it('gives every stack its own directory under the root', () => {
    expect(stackWorkspaceDir('/var/lib/tenantry/pulumi', 'acme')).toBe(
      '/var/lib/tenantry/pulumi/stacks/tenant-acme',
    );
    expect(stackWorkspaceDir('/r', 'acme')).not.toBe(stackWorkspaceDir('/r', 'acme-2'));
  });

  it('refuses slugs that are not slugs (no path tricks) and relative roots', () => {
    expect(() => stackWorkspaceDir('/r', '../etc')).toThrow(/slug/);
    expect(() => stackWorkspaceDir('relative/root', 'acme')).toThrow(/absolute/);
  });
});

describe('buildStackConfig', () => {
  const input = {
    tenantId: '0b6c1a9e-3f9f-4c3e-9a57-5e0f4a1c2b3d',
    slug: 'acme',
    tier: 'account' as const,
    accountEmailSuffix: '0a1b2c3d4e5f',
  };

  it('produces the whole config in one object: aws skip flags, endpoints, platform and tenant values', () => {
    const config = buildStackConfig({
      input,
      platform,
      aws: { region: 'eu-west-1', endpoints: { kms: 'http://localhost:4566', rds: 'http://localhost:4566' } },
    });
    const values = Object.fromEntries(Object.entries(config).map(([k, v]) => [k, v.value]));
    expect(values).toMatchObject({
      'aws:region': 'eu-west-1',
      'aws:skipCredentialsValidation': 'true',
      'aws:skipMetadataApiCheck': 'true',
      'aws:skipRequestingAccountId': 'true',
      'tenantry:tenantId': input.tenantId,
      'tenantry:slug': 'acme',
      'tenantry:tier': 'account',
      'tenantry:accountEmailSuffix': '0a1b2c3d4e5f',
      'tenantry:keyDeletionWindowDays': '14',
      'tenantry:vpcSecurityGroupIds': '["sg-0123456789abcdef0"]',
    });
    expect(JSON.parse(values['aws:endpoints'] ?? '')).toEqual([
      { kms: 'http://localhost:4566' },
      { rds: 'http://localhost:4566' },
    ]);
    for (const v of Object.values(config)) expect(typeof v.value).toBe('string');
  });

  it('reads back through the program’s parser to the same settings', () => {
    const config = buildStackConfig({ input, platform, aws: { region: 'eu-west-1' } });
    const reparsed = parsePlatformSettings((k) => config[`tenantry:${k}`]?.value);
    expect(reparsed).toEqual(platform);
    expect(config['aws:endpoints']).toBeUndefined();
  });

  it('fails before Pulumi starts on an out-of-range deletion window or an open CIDR', () => {
    expect(() =>
      buildStackConfig({
        input,
        platform: { ...platform, keyDeletionWindowDays: 3 },
        aws: { region: 'eu-west-1' },
      }),
    ).toThrow(/keyDeletionWindowDays/);
    const open = {
      ...platform,
      account: {
        ...(platform.account as NonNullable<PlatformSettings['account']>),
        dbIngressCidrs: ['0.0.0.0/0'],
      },
    };
    expect(() => buildStackConfig({ input, platform: open, aws: { region: 'eu-west-1' } })).toThrow(
      /0\.0\.0\.0\/0/,
    );
  });

  it('rejects a non-http endpoint', () => {
    expect(() =>
      buildStackConfig({
        input,
        platform,
        aws: { region: 'eu-west-1', endpoints: { kms: 'file:///etc/passwd' } },
      }),
    ).toThrow(/http/);
  });
});

describe('parsePlatformSettings', () => {
  const base: Record<string, string> = {
    adminRoleArn: 'arn:aws:iam::111111111111:role/a',
    dataPlaneRoleArn: 'arn:aws:iam::111111111111:role/d',
  };
  const parse = (extra: Record<string, string>) => parsePlatformSettings((k) => ({ ...base, ...extra })[k]);

  it.each(['6', '31', '7.5', 'x'])('rejects a key deletion window of %s', (v) => {
    expect(() => parse({ keyDeletionWindowDays: v })).toThrow(/keyDeletionWindowDays.*7 to 30/);
  });

  it('accepts the bounds and defaults to 30', () => {
    expect(parse({ keyDeletionWindowDays: '7' }).keyDeletionWindowDays).toBe(7);
    expect(parse({}).keyDeletionWindowDays).toBe(30);
  });

  it('rejects a role that is not an IAM role ARN and a malformed security group', () => {
    expect(() => parse({ adminRoleArn: 'arn:aws:iam::111111111111:user/bob' })).toThrow(/adminRoleArn/);
    expect(() => parse({ dbSubnetGroupName: 'x', vpcSecurityGroupIds: '["sg-nothex!"]' })).toThrow(
      /security group/,
    );
  });

  it('requires one subnet per availability zone for the account network', () => {
    expect(() =>
      parse({
        accountEmailDomain: 'example.com',
        accountParentOuId: 'ou-ab12-cdef3456',
        accountAvailabilityZones: '["eu-west-1a"]',
      }),
    ).toThrow(/one CIDR per availability zone/);
  });
});
