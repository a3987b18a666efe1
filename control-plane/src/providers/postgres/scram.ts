// A default import: Pulumi's closure serializer ships it as require('crypto'); named imports fail to serialize.
import crypto from 'node:crypto';

/**
 * Builds a SCRAM-SHA-256 verifier client-side (as psql's \password does), so the
 * plaintext password never travels to the server nor lands in its statement logs.
 */
export function scramVerifier(password: string, iterations = 4096): string {
  const salt = crypto.randomBytes(16);
  const salted = crypto.pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = crypto.createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = crypto.createHash('sha256').update(clientKey).digest();
  const serverKey = crypto.createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}
