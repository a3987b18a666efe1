import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../../control-plane/src/config.js';

describe('TENANTRY_SECRETS', () => {
  it('keeps the local key store by default', () => {
    expect(loadConfig({}).secrets).toEqual({ store: 'local' });
  });

  it('puts the local target’s keys and secrets in KMS and Secrets Manager, with a region and an optional endpoint', () => {
    expect(
      loadConfig({
        TENANTRY_SECRETS: 'aws',
        AWS_REGION: 'eu-west-1',
        TENANTRY_AWS_ENDPOINT: 'http://127.0.0.1:5000',
        TENANTRY_AWS_KEY_DELETION_WINDOW_DAYS: '7',
      }).secrets,
    ).toEqual({
      store: 'aws',
      region: 'eu-west-1',
      endpoint: 'http://127.0.0.1:5000',
      keyDeletionWindowDays: 7,
    });
    expect(loadConfig({ TENANTRY_SECRETS: 'aws', AWS_REGION: 'eu-west-1' }).secrets).toMatchObject({
      endpoint: undefined,
      keyDeletionWindowDays: 30,
    });
  });

  it('says what to set when the region is missing, the window is out of range, or the target is aws', () => {
    expect(() => loadConfig({ TENANTRY_SECRETS: 'aws' })).toThrow(/AWS_REGION/);
    expect(() => loadConfig({ TENANTRY_SECRETS: 'vault' })).toThrow(ConfigError);
    expect(() =>
      loadConfig({
        TENANTRY_SECRETS: 'aws',
        AWS_REGION: 'eu-west-1',
        TENANTRY_AWS_KEY_DELETION_WINDOW_DAYS: '3',
      }),
    ).toThrow(/TENANTRY_AWS_KEY_DELETION_WINDOW_DAYS/);
    expect(() =>
      loadConfig({
        TENANTRY_SECRETS: 'aws',
        TENANTRY_TARGET: 'aws',
        AWS_REGION: 'eu-west-1',
        PULUMI_BACKEND_URL: 'file:///tmp/s',
        TENANTRY_AWS_PLATFORM: '{}',
      }),
    ).toThrow(/local target/);
  });
});
