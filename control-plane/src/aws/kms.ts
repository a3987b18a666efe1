import { type KMSClient, ListAliasesCommand, ScheduleKeyDeletionCommand } from '@aws-sdk/client-kms';
import { TenantryError } from '../domain/errors.js';
import { awsErrorName, isThrottling, withRetry } from './retry.js';

export interface KeyRef {
  alias: string;
  keyId: string;
  aliasArn?: string;
}

const retryThrottling = { isRetryable: isThrottling, maxAttempts: 6 };

/** Finds the key behind an alias (`alias/tenantry/<slug>`), walking ListAliases pages. Null if no such alias. */
export async function findKeyByAlias(client: KMSClient, alias: string): Promise<KeyRef | null> {
  if (!alias.startsWith('alias/')) throw new Error(`not a KMS alias: ${alias}`);
  let marker: string | undefined;
  do {
    const page = await withRetry(
      () => client.send(new ListAliasesCommand({ Marker: marker, Limit: 100 })),
      retryThrottling,
    );
    const hit = page.Aliases?.find((a) => a.AliasName === alias);
    if (hit) {
      if (!hit.TargetKeyId) return null; // an alias not pointing at any key
      return { alias, keyId: hit.TargetKeyId, ...(hit.AliasArn ? { aliasArn: hit.AliasArn } : {}) };
    }
    marker = page.Truncated ? page.NextMarker : undefined;
  } while (marker);
  return null;
}

export interface ScheduledDeletion {
  keyId: string;
  deletionDate?: Date;
  /** True when the key was already pending deletion (the call is idempotent). */
  alreadyPending: boolean;
}

/** Crypto-shreds a tenant key after `windowDays` (7–30, as KMS requires). */
export async function scheduleKeyDeletion(
  client: KMSClient,
  keyId: string,
  windowDays: number,
): Promise<ScheduledDeletion> {
  if (!Number.isInteger(windowDays) || windowDays < 7 || windowDays > 30) {
    throw new TenantryError('VALIDATION_FAILED', 'KMS deletion window must be an integer from 7 to 30 days', {
      context: { windowDays },
    });
  }
  try {
    const res = await withRetry(
      () => client.send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: windowDays })),
      retryThrottling,
    );
    return {
      keyId: res.KeyId ?? keyId,
      ...(res.DeletionDate ? { deletionDate: res.DeletionDate } : {}),
      alreadyPending: false,
    };
  } catch (e) {
    const name = awsErrorName(e);
    if (name === 'KMSInvalidStateException' && /pending ?deletion/i.test(String((e as Error).message))) {
      return { keyId, alreadyPending: true };
    }
    if (name === 'NotFoundException') {
      throw new TenantryError('PROVIDER_FAILED', 'KMS key not found', { context: { keyId }, cause: e });
    }
    throw e;
  }
}
