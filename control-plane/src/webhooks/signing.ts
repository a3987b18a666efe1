import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Standard Webhooks signatures (https://www.standardwebhooks.com, spec/standard-webhooks.md), written
 * here with node:crypto because the `standardwebhooks` package is not a dependency of the project (and
 * none may be added in this change). Every detail follows the spec:
 * - the secret is `whsec_` + base64 of 24 to 64 random bytes; the key is those bytes;
 * - the signed content is `${webhook-id}.${webhook-timestamp}.${body}` (timestamp: integer seconds);
 * - the signature is base64 of HMAC-SHA256(key, content), sent as `webhook-signature: v1,<signature>`
 *   (several space-separated signatures may be sent during a key rotation; a receiver accepts any).
 * tests/unit/webhook-signing.test.ts checks it against an implementation written from the spec alone.
 */
export const SECRET_PREFIX = 'whsec_';

/** A new signing secret: 32 random bytes. */
export function generateSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(32).toString('base64')}`;
}

function keyOf(secret: string): Buffer {
  const b64 = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  const key = Buffer.from(b64, 'base64');
  if (key.length < 24 || key.length > 64) throw new Error('a webhook secret holds 24 to 64 bytes');
  return key;
}

/** The `v1,<base64>` signature of one message. */
export function sign(secret: string, msgId: string, timestampSeconds: number, body: string): string {
  const mac = createHmac('sha256', keyOf(secret))
    .update(`${msgId}.${timestampSeconds}.${body}`)
    .digest('base64');
  return `v1,${mac}`;
}

/** The three headers a delivery carries. */
export function signedHeaders(
  secret: string,
  msgId: string,
  timestampSeconds: number,
  body: string,
): Record<'webhook-id' | 'webhook-timestamp' | 'webhook-signature', string> {
  return {
    'webhook-id': msgId,
    'webhook-timestamp': String(timestampSeconds),
    'webhook-signature': sign(secret, msgId, timestampSeconds, body),
  };
}

/** How far a receiver tolerates the timestamp from its own clock (the spec's recommendation: 5 minutes). */
export const TIMESTAMP_TOLERANCE_SECONDS = 5 * 60;

/**
 * A receiver's check (what docs/lifecycle.md shows): the signature matches one of the header's `v1`
 * signatures, in constant time, and the timestamp is within the tolerance of `nowSeconds`.
 */
export function verify(
  secret: string,
  headers: { 'webhook-id'?: string; 'webhook-timestamp'?: string; 'webhook-signature'?: string },
  body: string,
  nowSeconds = Math.floor(Date.now() / 1000),
): boolean {
  const id = headers['webhook-id'];
  const ts = Number(headers['webhook-timestamp']);
  const sigs = headers['webhook-signature'];
  if (!id || !Number.isInteger(ts) || !sigs) return false;
  if (Math.abs(nowSeconds - ts) > TIMESTAMP_TOLERANCE_SECONDS) return false;
  const want = Buffer.from(sign(secret, id, ts, body).slice(3), 'base64');
  return sigs.split(' ').some((s) => {
    const [version, value] = s.split(',', 2);
    if (version !== 'v1' || !value) return false;
    const got = Buffer.from(value, 'base64');
    return got.length === want.length && timingSafeEqual(got, want);
  });
}
