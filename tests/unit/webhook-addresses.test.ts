import { describe, expect, it } from 'vitest';
import { AddressPolicy, parseCidr } from '../../control-plane/src/webhooks/addresses.js';

/** Where webhooks may point (SSRF): private, loopback, link-local and other special addresses refused unless allowed. */
describe('webhook address policy', () => {
  const policy = new AddressPolicy();

  it.each([
    ['127.0.0.1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.20.0.1', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.169.254', 'link-local'],
    ['100.64.0.1', 'carrier-grade'],
    ['0.0.0.0', 'this network'],
    ['::1', 'loopback'],
    ['fe80::1', 'link-local'],
    ['fd12:3456::1', 'unique local'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:127.0.0.1', 'loopback'],
  ])('refuses %s (%s)', (address, why) => {
    expect(policy.refusal(address)).toContain(why);
  });

  it.each(['93.184.216.34', '8.8.8.8', '2606:4700:4700::1111'])('lets %s through', (address) => {
    expect(policy.refusal(address)).toBeNull();
  });

  it('lets through exactly the networks an operator allowed', () => {
    const allowing = new AddressPolicy(['127.0.0.0/8', 'fd00::/8']);
    expect(allowing.refusal('127.0.0.1')).toBeNull();
    expect(allowing.refusal('fd12::1')).toBeNull();
    expect(allowing.refusal('10.0.0.1')).toContain('private');
    expect(allowing.refusal('169.254.169.254')).toContain('link-local');
  });

  it('checks URLs: scheme, credentials, and every address the host resolves to', async () => {
    expect(await policy.urlRefusal('ftp://example.com/')).toBe('the URL must be http or https');
    expect(await policy.urlRefusal('https://user:pw@93.184.216.34/')).toBe(
      'the URL must not carry credentials',
    );
    expect(await policy.urlRefusal('http://127.0.0.1:8080/hook')).toContain('loopback');
    expect(await policy.urlRefusal('http://[::1]:8080/hook')).toContain('loopback');
    expect(await policy.urlRefusal('http://localhost:8080/hook')).toContain('loopback');
    expect(await policy.urlRefusal('https://93.184.216.34/hook')).toBeNull();
  });

  it('parses CIDRs and refuses what is not one', () => {
    expect(parseCidr('10.0.0.0/8')).toEqual({ address: '10.0.0.0', prefix: 8, family: 'ipv4' });
    expect(parseCidr('::1')).toEqual({ address: '::1', prefix: 128, family: 'ipv6' });
    for (const bad of ['10.0.0.0/33', 'example.com/8', '10.0.0.0/x', '']) expect(parseCidr(bad)).toBeNull();
  });
});
