import {
  CreateAliasCommand,
  CreateKeyCommand,
  DeleteAliasCommand,
  DescribeKeyCommand,
  EnableKeyRotationCommand,
  type KMSClient,
  ListAliasesCommand,
  ScheduleKeyDeletionCommand,
  UpdateAliasCommand,
} from '@aws-sdk/client-kms';
import { TenantryError } from '../domain/errors.js';
import { awsErrorName, isThrottling, withRetry } from './retry.js';

const retryThrottling = { isRetryable: isThrottling, maxAttempts: 6 };

/** A key as DescribeKey reports it. `state` is KMS's KeyState (`Enabled`, `PendingDeletion`, …). */
export interface KeyInfo {
  keyId: string;
  arn: string;
  state: string;
}

/** The key behind an id, ARN or alias (`alias/tenantry/<slug>`); null when there is none. */
export async function describeKey(client: KMSClient, keyIdOrAlias: string): Promise<KeyInfo | null> {
  try {
    const res = await withRetry(
      () => client.send(new DescribeKeyCommand({ KeyId: keyIdOrAlias })),
      retryThrottling,
    );
    const m = res.KeyMetadata;
    if (!m?.KeyId || !m.Arn) return null;
    return { keyId: m.KeyId, arn: m.Arn, state: String(m.KeyState ?? 'Unavailable') };
  } catch (e) {
    if (awsErrorName(e) === 'NotFoundException') return null;
    throw e;
  }
}

/**
 * The enabled key behind `alias`, created when there is none: a symmetric key with rotation on and
 * its tags, then the alias. An alias left pointing at a key that is no longer enabled (an offboarded
 * tenant's, whose alias a crash kept) is moved to the new key. The key policy is KMS's default: the
 * account root administers the key and IAM policies decide who uses it (the same fallback the
 * stacks' key policies keep).
 *
 * KMS has no idempotent CreateKey: a process killed between CreateKey and CreateAlias leaves a key
 * without the alias (tagged `tenantry:alias` with it, so it can be found and deleted); the retry
 * creates another. Two processes racing for one alias both create a key; the loser schedules the
 * deletion of its own and returns the winner's.
 */
export async function ensureAliasedKey(
  client: KMSClient,
  alias: string,
  opts: { description: string; tags: Record<string, string>; deletionWindowDays: number },
): Promise<KeyInfo> {
  if (!alias.startsWith('alias/')) throw new Error(`not a KMS alias: ${alias}`);
  const found = await describeKey(client, alias);
  if (found?.state === 'Enabled') return found;
  const created = await withRetry(
    () =>
      client.send(
        new CreateKeyCommand({
          Description: opts.description,
          KeyUsage: 'ENCRYPT_DECRYPT',
          KeySpec: 'SYMMETRIC_DEFAULT',
          Tags: Object.entries({ ...opts.tags, 'tenantry:alias': alias }).map(([TagKey, TagValue]) => ({
            TagKey,
            TagValue,
          })),
        }),
      ),
    retryThrottling,
  );
  const key = created.KeyMetadata;
  if (!key?.KeyId || !key.Arn) throw new TenantryError('PROVIDER_FAILED', 'CreateKey returned no key');
  const mine: KeyInfo = { keyId: key.KeyId, arn: key.Arn, state: 'Enabled' };
  await withRetry(() => client.send(new EnableKeyRotationCommand({ KeyId: mine.keyId })), retryThrottling);
  if (found) {
    await withRetry(
      () => client.send(new UpdateAliasCommand({ AliasName: alias, TargetKeyId: mine.keyId })),
      retryThrottling,
    );
    return mine;
  }
  try {
    await withRetry(
      () => client.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: mine.keyId })),
      retryThrottling,
    );
    return mine;
  } catch (e) {
    if (awsErrorName(e) !== 'AlreadyExistsException') throw e;
  }
  // Another process made the alias meanwhile: its key wins, ours goes.
  await scheduleKeyDeletion(client, mine.keyId, opts.deletionWindowDays);
  const theirs = await describeKey(client, alias);
  if (theirs?.state !== 'Enabled') {
    throw new TenantryError('PROVIDER_FAILED', `key ${alias} is not enabled`, { retryable: true });
  }
  return theirs;
}

/** Deletes an alias (a later tenant may then take the slug); gone already is done. */
export async function deleteAlias(client: KMSClient, alias: string): Promise<void> {
  try {
    await withRetry(() => client.send(new DeleteAliasCommand({ AliasName: alias })), retryThrottling);
  } catch (e) {
    if (awsErrorName(e) !== 'NotFoundException') throw e;
  }
}

/**
 * Every alias under `prefix` (`alias/tenantry/`) with the key it points at, walking ListAliases
 * pages: the key store read whole, as a drift sweep reads the local one.
 */
export async function listKeyAliases(client: KMSClient, prefix: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let marker: string | undefined;
  do {
    const page = await withRetry(
      () => client.send(new ListAliasesCommand({ Marker: marker, Limit: 100 })),
      retryThrottling,
    );
    for (const a of page.Aliases ?? []) {
      if (a.AliasName?.startsWith(prefix) && a.TargetKeyId) out.set(a.AliasName, a.TargetKeyId);
    }
    marker = page.Truncated ? page.NextMarker : undefined;
  } while (marker);
  return out;
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
