import {
  CreateSecretCommand,
  GetSecretValueCommand,
  ListSecretsCommand,
  PutSecretValueCommand,
  type SecretListEntry,
  type SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { TenantryError } from '../domain/errors.js';
import { awsErrorName, isThrottling, withRetry } from './retry.js';

const retryThrottling = { isRetryable: isThrottling, maxAttempts: 6 };

export interface SecretValue {
  arn: string;
  versionId: string;
  value: Record<string, unknown>;
}

/** Reads a JSON secret. Null when the secret does not exist (or is scheduled for deletion). */
export async function getSecretValue(
  client: SecretsManagerClient,
  secretId: string,
): Promise<SecretValue | null> {
  try {
    const res = await withRetry(
      () => client.send(new GetSecretValueCommand({ SecretId: secretId })),
      retryThrottling,
    );
    if (res.SecretString === undefined) {
      throw new TenantryError('SECRET_UNAVAILABLE', 'secret has no string value', { context: { secretId } });
    }
    let value: unknown;
    try {
      value = JSON.parse(res.SecretString);
    } catch {
      // Never echo the value: it is a secret.
      throw new TenantryError('SECRET_UNAVAILABLE', 'secret value is not JSON', { context: { secretId } });
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new TenantryError('SECRET_UNAVAILABLE', 'secret value is not a JSON object', {
        context: { secretId },
      });
    }
    return {
      arn: res.ARN ?? secretId,
      versionId: res.VersionId ?? '',
      value: value as Record<string, unknown>,
    };
  } catch (e) {
    const name = awsErrorName(e);
    if (name === 'ResourceNotFoundException') return null;
    if (name === 'InvalidRequestException' && /marked for deletion/i.test(String((e as Error).message)))
      return null;
    throw e;
  }
}

/**
 * Writes a JSON secret: PutSecretValue if it exists, otherwise CreateSecret encrypted with
 * `kmsKeyId` (the tenant key). Secrets Manager allows ~50 writes/s per region and advises
 * against updating one secret more than once per 10 minutes; callers write on change only.
 */
export async function putSecretValue(
  client: SecretsManagerClient,
  name: string,
  value: Record<string, unknown>,
  opts: { kmsKeyId: string; tags?: Record<string, string>; clientRequestToken?: string },
): Promise<{ arn: string; versionId: string }> {
  const SecretString = JSON.stringify(value);
  const token = opts.clientRequestToken ? { ClientRequestToken: opts.clientRequestToken } : {};
  try {
    const res = await withRetry(
      () => client.send(new PutSecretValueCommand({ SecretId: name, SecretString, ...token })),
      retryThrottling,
    );
    return { arn: res.ARN ?? name, versionId: res.VersionId ?? '' };
  } catch (e) {
    if (awsErrorName(e) !== 'ResourceNotFoundException') throw e;
  }
  const res = await withRetry(
    () =>
      client.send(
        new CreateSecretCommand({
          Name: name,
          KmsKeyId: opts.kmsKeyId,
          SecretString,
          Tags: Object.entries(opts.tags ?? {}).map(([Key, Value]) => ({ Key, Value })),
          ...token,
        }),
      ),
    retryThrottling,
  );
  return { arn: res.ARN ?? name, versionId: res.VersionId ?? '' };
}

/**
 * Secrets carrying tag `key` = `value`, following NextToken. The API's tag-key and
 * tag-value filters match independently, so the pair is checked again here.
 */
export async function listSecretsByTag(
  client: SecretsManagerClient,
  key: string,
  value: string,
): Promise<SecretListEntry[]> {
  const out: SecretListEntry[] = [];
  let token: string | undefined;
  do {
    const page = await withRetry(
      () =>
        client.send(
          new ListSecretsCommand({
            Filters: [
              { Key: 'tag-key', Values: [key] },
              { Key: 'tag-value', Values: [value] },
            ],
            MaxResults: 100,
            NextToken: token,
          }),
        ),
      retryThrottling,
    );
    for (const s of page.SecretList ?? []) {
      if (s.Tags?.some((t) => t.Key === key && t.Value === value)) out.push(s);
    }
    token = page.NextToken;
  } while (token);
  return out;
}
