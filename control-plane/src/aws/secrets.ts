import {
  CreateSecretCommand,
  DeleteSecretCommand,
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

/**
 * A secret scheduled for deletion, as InvalidRequestException words it: AWS says "marked for
 * deletion" or "scheduled for deletion", moto "currently marked deleted" (docs/aws.md lists moto's
 * differences).
 */
const SCHEDULED_FOR_DELETION = /marked (for )?delet|scheduled for deletion/i;

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
    if (name === 'InvalidRequestException' && SCHEDULED_FOR_DELETION.test(String((e as Error).message)))
      return null;
    throw e;
  }
}

/**
 * The version id Tenantry gives version `n` of a secret (its ClientRequestToken, which Secrets
 * Manager makes the version's id): 32 characters, the number readable back with `secretVersionOf`.
 * A retried write of the same version and value is a no-op; the same version with another value is
 * refused (`SecretVersionTaken`), so two writers never both think they wrote version n.
 */
export function secretVersionToken(version: number): string {
  if (!Number.isSafeInteger(version) || version < 1) throw new Error(`not a secret version: ${version}`);
  return `tenantry-v${String(version).padStart(22, '0')}`;
}

/** The version number of a version id Tenantry wrote; 0 for one written otherwise (by hand, by rotation). */
export function secretVersionOf(versionId: string | undefined): number {
  const m = /^tenantry-v(\d{22})$/.exec(versionId ?? '');
  return m ? Number(m[1]) : 0;
}

/** Another writer already wrote this version number with another value: read the secret again. */
export class SecretVersionTaken extends Error {
  override name = 'SecretVersionTaken';
}

/**
 * Writes version `version` of a JSON secret: PutSecretValue if the secret exists, otherwise
 * CreateSecret encrypted with `kmsKeyId` (the tenant key, never aws/secretsmanager). Secrets Manager
 * allows ~50 writes/s per region and advises against updating one secret more than once per 10
 * minutes; callers write on change only. A name still held by a deleted secret (its recovery window,
 * or a forced delete AWS has not finished) fails retryably: the deletion ends, or an operator restores it.
 */
export async function putSecretValue(
  client: SecretsManagerClient,
  name: string,
  value: Record<string, unknown>,
  opts: { kmsKeyId: string; version: number; tags?: Record<string, string> },
): Promise<{ arn: string; versionId: string }> {
  const SecretString = JSON.stringify(value);
  const ClientRequestToken = secretVersionToken(opts.version);
  const held = (e: unknown) =>
    new TenantryError(
      'SECRET_UNAVAILABLE',
      `secret ${name} is scheduled for deletion: its name is free once the deletion completes (or restore it)`,
      { retryable: true, cause: e },
    );
  const put = async () => {
    try {
      const res = await withRetry(
        () => client.send(new PutSecretValueCommand({ SecretId: name, SecretString, ClientRequestToken })),
        retryThrottling,
      );
      return { arn: res.ARN ?? name, versionId: res.VersionId ?? ClientRequestToken };
    } catch (e) {
      const n = awsErrorName(e);
      if (n === 'ResourceExistsException') throw new SecretVersionTaken(`${name}: version ${opts.version}`);
      if (n === 'InvalidRequestException' && SCHEDULED_FOR_DELETION.test(String((e as Error).message)))
        throw held(e);
      throw e;
    }
  };
  try {
    return await put();
  } catch (e) {
    if (awsErrorName(e) !== 'ResourceNotFoundException') throw e;
  }
  try {
    const res = await withRetry(
      () =>
        client.send(
          new CreateSecretCommand({
            Name: name,
            KmsKeyId: opts.kmsKeyId,
            SecretString,
            ClientRequestToken,
            Tags: Object.entries(opts.tags ?? {}).map(([Key, Value]) => ({ Key, Value })),
          }),
        ),
      retryThrottling,
    );
    return { arn: res.ARN ?? name, versionId: res.VersionId ?? ClientRequestToken };
  } catch (e) {
    const n = awsErrorName(e);
    // Created meanwhile by another writer: write the version as to an existing secret.
    if (n === 'ResourceExistsException') return put();
    if (n === 'InvalidRequestException' && SCHEDULED_FOR_DELETION.test(String((e as Error).message)))
      throw held(e);
    throw e;
  }
}

/**
 * Deletes a secret at once (ForceDeleteWithoutRecovery), so that its name can be taken again:
 * offboarding's, after the credentials are no longer valid. A secret already gone is done.
 */
export async function deleteSecretNow(client: SecretsManagerClient, secretId: string): Promise<void> {
  try {
    await withRetry(
      () => client.send(new DeleteSecretCommand({ SecretId: secretId, ForceDeleteWithoutRecovery: true })),
      retryThrottling,
    );
  } catch (e) {
    if (awsErrorName(e) !== 'ResourceNotFoundException') throw e;
  }
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
