// A default import: Pulumi's closure serializer ships it as require('crypto'); named imports fail to serialize.
import crypto from 'node:crypto';

/** ClientKey → StoredKey, and ServerKey, from SaltedPassword (RFC 5802 §3, SHA-256 per RFC 7677). */
function keysOf(salted: Buffer): { storedKey: Buffer; serverKey: Buffer } {
  const clientKey = crypto.createHmac('sha256', salted).update('Client Key').digest();
  return {
    storedKey: crypto.createHash('sha256').update(clientKey).digest(),
    serverKey: crypto.createHmac('sha256', salted).update('Server Key').digest(),
  };
}

/**
 * Builds a SCRAM-SHA-256 verifier client-side (as psql's \password does), so the
 * plaintext password never travels to the server nor lands in its statement logs.
 */
export function scramVerifier(password: string, iterations = 4096): string {
  const salt = crypto.randomBytes(16);
  return verifierOf(
    crypto.pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256'),
    salt,
    iterations,
  );
}

/**
 * `scramVerifier` with the key derivation on libuv's thread pool (about 1 ms of CPU at 4096
 * iterations): started ahead of the statement that sets it, it runs beside the round trips before.
 */
export function scramVerifierAsync(password: string, iterations = 4096): Promise<string> {
  const salt = crypto.randomBytes(16);
  return new Promise((resolve, reject) =>
    crypto.pbkdf2(password.normalize('NFKC'), salt, iterations, 32, 'sha256', (e, salted) =>
      e ? reject(e) : resolve(verifierOf(salted, salt, iterations)),
    ),
  );
}

function verifierOf(salted: Buffer, salt: Buffer, iterations: number): string {
  const { storedKey, serverKey } = keysOf(salted);
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

const VERIFIER = /^SCRAM-SHA-256\$(\d{1,7}):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/;

/**
 * A verifier as pg_authid.rolpassword stores it, `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
 * (base64 parts); null for anything else (an md5 hash, a malformed value).
 */
export function parseScramVerifier(v: string): ScramVerifier | null {
  const m = VERIFIER.exec(v);
  if (!m) return null;
  const iterations = Number(m[1]);
  const salt = Buffer.from(m[2] as string, 'base64');
  const storedKey = Buffer.from(m[3] as string, 'base64');
  const serverKey = Buffer.from(m[4] as string, 'base64');
  if (iterations < 1 || salt.length === 0 || storedKey.length !== 32 || serverKey.length !== 32) return null;
  return { iterations, salt, storedKey, serverKey };
}

/**
 * Whether `verifier` was made from `password`, without sending the password anywhere: the verifier's
 * salt and iteration count give SaltedPassword, and StoredKey = H(HMAC(SaltedPassword, "Client Key"))
 * must equal the verifier's (compared in constant time). The key derivation runs on libuv's thread
 * pool (about 1 ms of CPU at 4096 iterations). False for a verifier that is not SCRAM-SHA-256.
 */
export async function scramMatches(password: string, verifier: string): Promise<boolean> {
  const v = parseScramVerifier(verifier);
  if (!v) return false;
  const salted = await new Promise<Buffer>((resolve, reject) =>
    crypto.pbkdf2(password.normalize('NFKC'), v.salt, v.iterations, 32, 'sha256', (e, key) =>
      e ? reject(e) : resolve(key),
    ),
  );
  return crypto.timingSafeEqual(keysOf(salted).storedKey, v.storedKey);
}
