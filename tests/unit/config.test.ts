import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../control-plane/src/config.js';

describe('config', () => {
  it('defaults to the embedded local target on 127.0.0.1:3000 with data under ./.tenantry', () => {
    const c = loadConfig({}, '/srv/app');
    expect(c).toMatchObject({
      port: 3000,
      host: '127.0.0.1',
      target: 'local',
      dataDir: path.resolve('/srv/app/.tenantry'),
      databaseUrl: undefined,
      dataplaneUrl: undefined,
      role: 'all',
    });
  });
  it('keeps the control database pool open to its size unless told otherwise, never past it', () => {
    expect(loadConfig({})).toMatchObject({ dbPoolSize: 10, dbPoolMin: 10 });
    expect(loadConfig({ TENANTRY_DB_POOL_SIZE: '20' })).toMatchObject({ dbPoolSize: 20, dbPoolMin: 20 });
    expect(loadConfig({ TENANTRY_DB_POOL_MIN: '0' })).toMatchObject({ dbPoolSize: 10, dbPoolMin: 0 });
    expect(() => loadConfig({ TENANTRY_DB_POOL_MIN: '11' })).toThrow(
      /TENANTRY_DB_POOL_MIN \(11\) must not exceed TENANTRY_DB_POOL_SIZE \(10\)/,
    );
    expect(() => loadConfig({ TENANTRY_DB_POOL_MIN: '-1' })).toThrow(ConfigError);
  });
  it('checks for a second connection asked of a held pool only when told to (the suite does)', () => {
    expect(loadConfig({}).dbHoldCheck).toBe(false);
    expect(loadConfig({ TENANTRY_DB_HOLD_CHECK: 'on' }).dbHoldCheck).toBe(true);
    expect(loadConfig({ TENANTRY_DB_HOLD_CHECK: 'off' }).dbHoldCheck).toBe(false);
    expect(() => loadConfig({ TENANTRY_DB_HOLD_CHECK: 'yes' })).toThrow(/TENANTRY_DB_HOLD_CHECK/);
  });
  it('reads overrides', () => {
    const c = loadConfig({
      PORT: '8080',
      HOST: '0.0.0.0',
      TENANTRY_DATA_DIR: '/var/lib/t',
      DATABASE_URL: 'postgres://u@h/db',
    });
    expect(c).toMatchObject({
      port: 8080,
      host: '0.0.0.0',
      dataDir: '/var/lib/t',
      databaseUrl: 'postgres://u@h/db',
    });
  });
  it.each([
    [{ PORT: 'eighty' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ TENANTRY_TARGET: 'gcp' }, 'TENANTRY_TARGET'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL'],
    [{ TENANTRY_ADMIN_TOKEN: 'short' }, 'TENANTRY_ADMIN_TOKEN'],
    [{ TENANTRY_ADMIN_TOKEN: 'has spaces in it, which no header can carry' }, 'TENANTRY_ADMIN_TOKEN'],
    [{ TENANTRY_ADMIN_TOKEN: 'quote"and;semicolon-are-not-token-chars' }, 'TENANTRY_ADMIN_TOKEN'],
    [{ TENANTRY_ADMIN_TOKEN: 'x'.repeat(201) }, 'TENANTRY_ADMIN_TOKEN'],
  ])('fails at boot naming the variable to fix: %o', (env, name) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(name);
  });

  it('accepts exactly the admin tokens the Authorization header parser accepts', () => {
    for (const token of ['a'.repeat(24), 'x'.repeat(200), 'tnt_AZaz09-._~+/=padding==']) {
      expect(loadConfig({ TENANTRY_ADMIN_TOKEN: token }).adminToken).toBe(token);
    }
  });

  it('the aws target needs its backend, region and platform settings, and passes only the Pulumi environment to it', () => {
    expect(() => loadConfig({ TENANTRY_TARGET: 'aws' })).toThrow(
      /PULUMI_BACKEND_URL, AWS_REGION, TENANTRY_AWS_PLATFORM/,
    );
    expect(() =>
      loadConfig({
        TENANTRY_TARGET: 'aws',
        PULUMI_BACKEND_URL: 's3://b',
        AWS_REGION: 'eu-west-1',
        TENANTRY_AWS_PLATFORM: '[1]',
      }),
    ).toThrow(/JSON object/);
    const c = loadConfig({
      TENANTRY_TARGET: 'aws',
      PULUMI_BACKEND_URL: 's3://state-bucket',
      AWS_REGION: 'eu-west-1',
      TENANTRY_AWS_PLATFORM: '{"adminRoleArn":"arn:aws:iam::111122223333:role/admin"}',
      PULUMI_CONFIG_PASSPHRASE: 'p',
      AWS_ACCESS_KEY_ID: 'AKIA',
      DATABASE_URL: 'postgres://u:secret@h/db',
    });
    expect(c.aws).toMatchObject({ backendUrl: 's3://state-bucket', region: 'eu-west-1', concurrency: 2 });
    expect(c.aws?.platform).toEqual({ adminRoleArn: 'arn:aws:iam::111122223333:role/admin' });
    expect(c.aws?.envVars).toEqual({ PULUMI_CONFIG_PASSPHRASE: 'p', AWS_ACCESS_KEY_ID: 'AKIA' });
  });
});
