import { describe, expect, it } from 'vitest';
import { parsePlatformSettings } from '../../../stacks/common/config.js';

const base: Record<string, string> = {
  adminRoleArn: 'arn:aws:iam::111111111111:role/tenantry-control-plane',
  dataPlaneRoleArn: 'arn:aws:iam::111111111111:role/tenantry-data-plane',
  accountEmailDomain: 'tenants.example.com',
  accountParentOuId: 'ou-ab12-cdef3456',
  accountAvailabilityZones: '["eu-west-1a","eu-west-1b"]',
};
const parse = (extra: Record<string, string>) => parsePlatformSettings((k) => ({ ...base, ...extra })[k]);

describe('the account tier’s archive key', () => {
  it('is required: offboarding copies the last snapshot out of the account under it', () => {
    expect(() => parse({})).toThrow('tenantry:accountArchiveKmsKeyArn: is required');
    expect(() => parse({ accountArchiveKmsKeyArn: 'alias/archive' })).toThrow(/a KMS key ARN/);
    const arn = 'arn:aws:kms:eu-west-1:111111111111:key/0f0f0f0f-1111-4222-8333-444455556666';
    expect(parse({ accountArchiveKmsKeyArn: arn }).account?.archiveKmsKeyArn).toBe(arn);
  });
});
