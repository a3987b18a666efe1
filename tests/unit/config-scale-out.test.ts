import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, StartRefused } from '../../control-plane/src/config.js';

/** The settings of a control plane run as several processes: the root key's source, and the stop's timing. */
describe('the root key setting', () => {
  const key = randomBytes(32).toString('base64');

  it('defaults to the data directory (the single-process default)', () => {
    expect(loadConfig({ TENANTRY_DATA_DIR: '/var/lib/t' }).rootKey).toEqual({
      from: 'TENANTRY_DATA_DIR',
      path: '/var/lib/t/keys/root.key',
      dataDir: '/var/lib/t',
    });
  });

  it('takes TENANTRY_ROOT_KEY_FILE first, resolved like the data directory', () => {
    expect(loadConfig({ TENANTRY_ROOT_KEY_FILE: 'secrets/root.key' }, '/srv/app').rootKey).toEqual({
      from: 'TENANTRY_ROOT_KEY_FILE',
      path: path.resolve('/srv/app/secrets/root.key'),
    });
  });

  it('takes TENANTRY_ROOT_KEY as a value, which a serialized config never carries', () => {
    const c = loadConfig({ TENANTRY_ROOT_KEY: key });
    expect(c.rootKey.from).toBe('TENANTRY_ROOT_KEY');
    expect(c.rootKey.from === 'TENANTRY_ROOT_KEY' && c.rootKey.value()).toBe(key);
    expect(JSON.stringify(c)).not.toContain(key);
  });

  it('refuses both at once, and a value that is not a 256-bit key, without echoing it', () => {
    expect(() => loadConfig({ TENANTRY_ROOT_KEY: key, TENANTRY_ROOT_KEY_FILE: '/k' })).toThrow(
      /set TENANTRY_ROOT_KEY_FILE or TENANTRY_ROOT_KEY, not both/,
    );
    const short = randomBytes(16).toString('base64');
    expect(() => loadConfig({ TENANTRY_ROOT_KEY: short })).toThrow(ConfigError);
    try {
      loadConfig({ TENANTRY_ROOT_KEY: short });
    } catch (e) {
      expect(e).toBeInstanceOf(StartRefused);
      expect((e as Error).message).toMatch(/TENANTRY_ROOT_KEY must be a 256-bit key in base64/);
      expect((e as Error).message).not.toContain(short);
    }
  });
});

describe('the stop settings', () => {
  it('drain for two thirds of what the shutdown timeout leaves after the delay, by default', () => {
    expect(loadConfig({})).toMatchObject({
      shutdownTimeoutMs: 15_000,
      shutdownDelayMs: 0,
      drainTimeoutMs: 10_000,
    });
    expect(loadConfig({ TENANTRY_SHUTDOWN_DELAY_MS: '3000' })).toMatchObject({ drainTimeoutMs: 8000 });
  });

  it('refuse a drain and delay that would not end before the deadline', () => {
    expect(() =>
      loadConfig({
        TENANTRY_SHUTDOWN_TIMEOUT_MS: '5000',
        TENANTRY_DRAIN_TIMEOUT_MS: '4000',
        TENANTRY_SHUTDOWN_DELAY_MS: '1000',
      }),
    ).toThrow(
      /TENANTRY_DRAIN_TIMEOUT_MS \(4000\) plus TENANTRY_SHUTDOWN_DELAY_MS \(1000\) must be below TENANTRY_SHUTDOWN_TIMEOUT_MS \(5000\)/,
    );
  });
});
