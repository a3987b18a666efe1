import type { OrganizationsClient } from '@aws-sdk/client-organizations';
import { AssumeRoleCommand, type STSClient } from '@aws-sdk/client-sts';
import { TenantryError } from '../domain/errors.js';
import { accountState, listAccounts } from './organizations.js';

export { memberRoleArn } from './arn.js';

import { isThrottling, withRetry } from './retry.js';

/** Static credentials, as every AWS SDK v3 client's `credentials` option takes them. */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

/**
 * The ACTIVE member account whose root email is `email` (its `State`, or the retired `Status` where
 * an endpoint still answers only that: accountState). Root emails are unique and never reused
 * (Tenantry derives them from the tenant id), so a closed predecessor with the same name or slug is
 * never picked. Null when there is none.
 */
export async function findActiveAccountIdByEmail(
  client: OrganizationsClient,
  email: string,
  opts: { signal?: AbortSignal } = {},
): Promise<string | null> {
  const want = email.toLowerCase();
  const hit = (await listAccounts(client, opts)).find(
    (a) => a.Email?.toLowerCase() === want && accountState(a) === 'ACTIVE' && a.Id,
  );
  return hit?.Id ?? null;
}

/** Short-lived credentials of `roleArn` (15 minutes: enough for one read). */
export async function assumeRole(
  client: STSClient,
  roleArn: string,
  sessionName: string,
): Promise<AwsCredentials> {
  const res = await withRetry(
    () =>
      client.send(
        new AssumeRoleCommand({
          RoleArn: roleArn,
          RoleSessionName: sessionName.slice(0, 64),
          DurationSeconds: 900,
        }),
      ),
    { isRetryable: isThrottling, maxAttempts: 6 },
  );
  const c = res.Credentials;
  if (!c?.AccessKeyId || !c.SecretAccessKey) {
    throw new TenantryError('PROVIDER_FAILED', 'AssumeRole returned no credentials', {
      context: { roleArn },
    });
  }
  return {
    accessKeyId: c.AccessKeyId,
    secretAccessKey: c.SecretAccessKey,
    ...(c.SessionToken ? { sessionToken: c.SessionToken } : {}),
    ...(c.Expiration ? { expiration: c.Expiration } : {}),
  };
}
