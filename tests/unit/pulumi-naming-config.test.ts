import { describe, expect, it } from 'vitest';
import { tenantStackName } from '../../control-plane/src/domain/naming.js';
import { buildStackConfig, configChanges } from '../../control-plane/src/engine/pulumi/config.js';
import { fullyQualifiedStackName, stackWorkspaceDir } from '../../control-plane/src/engine/pulumi/naming.js';
import { plainOutputs } from '../../control-plane/src/engine/pulumi/outputs.js';
import {
  isDiyBackend,
  isVersionAtLeast,
  programVersion,
} from '../../control-plane/src/engine/pulumi/version.js';
import { type PlatformSettings, parsePlatformSettings } from '../../stacks/common/config.js';
import { TEST_PLATFORM } from '../fixtures/platform.js';

const platform: PlatformSettings = TEST_PLATFORM;

describe('stack naming and workspaces', () => {
  it('names stacks through the domain function and qualifies them for DIY backends', () => {
    expect(tenantStackName('acme')).toBe('tenant-acme');
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

describe('configChanges', () => {
  const v = (value: string, secret = false) => ({ value, secret });

  it('writes nothing when the stack already has the config (a drift check stays read-only)', () => {
    const config = { 'aws:region': v('eu-west-1'), 'tenantry:tier': v('pool') };
    expect(configChanges({ ...config }, config)).toEqual({ set: {}, remove: [] });
  });

  it('sets only what differs (value or secrecy) and removes keys the stack no longer has', () => {
    const current = { 'aws:region': v('eu-west-1'), 'tenantry:tier': v('pool'), 'tenantry:old': v('x') };
    const desired = {
      'aws:region': v('eu-west-1'),
      'tenantry:tier': v('silo'),
      'tenantry:token': v('t', true),
    };
    expect(configChanges(current, desired)).toEqual({
      set: { 'tenantry:tier': v('silo'), 'tenantry:token': v('t', true) },
      remove: ['tenantry:old'],
    });
    expect(configChanges({ 'a:b': v('x', true) }, { 'a:b': v('x') }).set).toEqual({ 'a:b': v('x') });
  });
});

describe('CLI version and backends', () => {
  it.each([
    ['3.229.0', true],
    ['v3.230.1', true],
    ['3.229.0-alpha.1+dev', true],
    ['4.0.0', true],
    ['3.228.9', false],
    ['2.999.0', false],
    ['unknown', false],
  ])('%s is at least 3.229.0: %s', (found, ok) => {
    expect(isVersionAtLeast(found, '3.229.0')).toBe(ok);
  });

  it('knows the DIY backends from Pulumi Cloud', () => {
    expect(isDiyBackend('s3://tenantry-state?region=eu-west-1')).toBe(true);
    expect(isDiyBackend('file:///var/lib/tenantry/state')).toBe(true);
    expect(isDiyBackend('https://api.pulumi.com')).toBe(false);
  });

  it('tags the recorded version with the program hash as semver build metadata', () => {
    expect(programVersion('1.2.0', 'ab'.repeat(32))).toBe('1.2.0+program.abababababab');
    expect(programVersion('1.2.0+template.3', 'cd'.repeat(32))).toBe('1.2.0+template.3.program.cdcdcdcdcdcd');
  });
});

describe('plainOutputs', () => {
  it('drops secret and structured outputs before they leave the child', () => {
    expect(
      plainOutputs({
        keyArn: { value: 'arn:aws:kms:eu-west-1:111111111111:key/k', secret: false },
        port: { value: 5432, secret: false },
        password: { value: 'hunter2', secret: true },
        descriptor: { value: { password: 'hunter2' }, secret: false },
      }),
    ).toEqual({ keyArn: 'arn:aws:kms:eu-west-1:111111111111:key/k', port: 5432 });
  });
});
