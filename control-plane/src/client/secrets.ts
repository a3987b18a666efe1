import type { ConnectionDescriptor } from '../domain/ports.js';
import { TenantryClientError } from './errors.js';

/**
 * Where a password comes from when the descriptor does not carry one (the aws target): the tenant's
 * secret, read with the data plane's own credentials. Returns the password; never logs it.
 */
export type PasswordSource = (descriptor: ConnectionDescriptor) => Promise<string>;

/** The minimal shape of an AWS SDK v3 Secrets Manager client (`@aws-sdk/client-secrets-manager`). */
interface SecretsManagerLike {
  send(command: unknown): Promise<{ SecretString?: string }>;
}

/**
 * Passwords from AWS Secrets Manager by the descriptor's `secretRef` (its ARN), with the data plane's
 * own AWS credentials (the SDK's default chain, or the client given), never from the control plane.
 * Cached for `ttlMs`; `forget` drops one after a refused login (a rotation published a new version).
 */
export function secretsManagerPasswords(
  opts: { region?: string; endpoint?: string; client?: SecretsManagerLike; ttlMs?: number } = {},
): PasswordSource & { forget(secretRef: string): void } {
  const cache = new Map<string, { password: string; at: number }>();
  const ttl = opts.ttlMs ?? 30_000;
  let client: Promise<{ sm: SecretsManagerLike; command: (id: string) => unknown }> | undefined;
  const sdk = () => {
    client ??= import('@aws-sdk/client-secrets-manager').then((m) => ({
      sm:
        opts.client ??
        new m.SecretsManagerClient({
          ...(opts.region ? { region: opts.region } : {}),
          ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
        }),
      command: (id: string) => new m.GetSecretValueCommand({ SecretId: id }),
    }));
    return client;
  };
  const source = async (d: ConnectionDescriptor): Promise<string> => {
    const hit = cache.get(d.secretRef);
    if (hit && Date.now() - hit.at < ttl) return hit.password;
    const { sm, command } = await sdk();
    let value: unknown;
    try {
      const res = await sm.send(command(d.secretRef));
      value = JSON.parse(res.SecretString ?? '');
    } catch (e) {
      // Never the SDK's message verbatim next to a secret: name the secret only.
      throw new TenantryClientError('DESCRIPTOR_UNAVAILABLE', `the secret ${d.secretRef} could not be read`, {
        cause: e,
      });
    }
    const password = (value as { password?: unknown } | null)?.password;
    if (typeof password !== 'string')
      throw new TenantryClientError('DESCRIPTOR_UNAVAILABLE', `the secret ${d.secretRef} holds no password`);
    cache.set(d.secretRef, { password, at: Date.now() });
    return password;
  };
  return Object.assign(source, { forget: (ref: string) => void cache.delete(ref) });
}
