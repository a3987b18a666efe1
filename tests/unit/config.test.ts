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
  ])('fails at boot naming the variable to fix: %o', (env, name) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(name);
  });
});
