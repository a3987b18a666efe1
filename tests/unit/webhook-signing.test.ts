import { webcrypto } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateSecret, sign, signedHeaders, verify } from '../../control-plane/src/webhooks/signing.js';

/**
 * Tenantry's Standard Webhooks signatures (webhooks/signing.ts, written with node:crypto because the
 * `standardwebhooks` package is not a dependency) checked against a second implementation written here
 * from the specification alone (WebCrypto, nothing shared), and against the specification's published
 * test vector.
 */

/** The spec, step by step: key = base64-decode(secret without `whsec_`); content = `${id}.${ts}.${body}`;
 * signature = base64(HMAC-SHA256(key, content)); header = space-separated `v1,<signature>` entries. */
async function specSignature(secret: string, id: string, ts: string, body: string): Promise<string> {
  const key = Uint8Array.from(atob(secret.replace(/^whsec_/, '')), (ch) => ch.charCodeAt(0));
  const k = await webcrypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = new Uint8Array(
    await webcrypto.subtle.sign('HMAC', k, new TextEncoder().encode(`${id}.${ts}.${body}`)),
  );
  return `v1,${btoa(String.fromCharCode(...mac))}`;
}
async function specVerify(secret: string, headers: Record<string, string>, body: string): Promise<boolean> {
  const want = await specSignature(
    secret,
    headers['webhook-id'] ?? '',
    headers['webhook-timestamp'] ?? '',
    body,
  );
  return (headers['webhook-signature'] ?? '').split(' ').includes(want);
}

describe('Standard Webhooks signing', () => {
  it("reproduces the specification's published test vector", async () => {
    const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
    const body = '{"test": 2432232314}';
    const expected = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=';
    expect(sign(secret, 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, body)).toBe(expected);
    expect(await specSignature(secret, 'msg_p5jXN8AQM9LWM0D4loKWxJek', '1614265330', body)).toBe(expected);
  });

  it('signs what the independent implementation verifies, for generated secrets and arbitrary bodies', async () => {
    for (const body of ['{}', '{"type":"tenant.created","data":{"name":"Ünïcødé ✓"}}', 'x'.repeat(10_000)]) {
      const secret = generateSecret();
      expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
      const headers = signedHeaders(secret, 'evt_1', 1_700_000_000, body);
      expect(headers['webhook-id']).toBe('evt_1');
      expect(headers['webhook-timestamp']).toBe('1700000000');
      expect(await specVerify(secret, headers, body)).toBe(true);
      expect(await specVerify(secret, headers, `${body} `)).toBe(false);
      expect(await specVerify(generateSecret(), headers, body)).toBe(false);
    }
  });

  it('verifies as a receiver would: any v1 signature of the header, within the timestamp tolerance', async () => {
    const secret = generateSecret();
    const now = 1_700_000_000;
    const h = signedHeaders(secret, 'evt_2', now, '{"a":1}');
    expect(verify(secret, h, '{"a":1}', now)).toBe(true);
    expect(verify(secret, h, '{"a":2}', now)).toBe(false);
    expect(verify(secret, h, '{"a":1}', now + 301)).toBe(false);
    expect(
      verify(secret, { ...h, 'webhook-signature': `v1,bm90IGl0 ${h['webhook-signature']}` }, '{"a":1}', now),
    ).toBe(true);
    expect(
      verify(
        secret,
        { ...h, 'webhook-signature': h['webhook-signature'].replace('v1,', 'v2,') },
        '{"a":1}',
        now,
      ),
    ).toBe(false);
    // What the spec's verifier would say of ours, and ours of the spec's.
    const theirs = await specSignature(secret, 'evt_3', String(now), 'body');
    expect(
      verify(
        secret,
        { 'webhook-id': 'evt_3', 'webhook-timestamp': String(now), 'webhook-signature': theirs },
        'body',
        now,
      ),
    ).toBe(true);
  });
});
