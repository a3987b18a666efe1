import {
  type Account,
  CloseAccountCommand,
  ListAccountsCommand,
  type OrganizationsClient,
} from '@aws-sdk/client-organizations';
import { TenantryError } from '../domain/errors.js';
import { awsErrorName, isThrottling, withRetry } from './retry.js';

/**
 * CreateAccount FAILED reasons that another attempt cannot fix (the account tier's `up` reports
 * them, engine/pulumi/errors.ts reads them). The email one matters most: root emails can never be
 * reused, so the caller must pick a new suffix, not retry.
 */
export const TERMINAL_FAILURE_REASONS = new Set([
  'EMAIL_ALREADY_EXISTS',
  'ACCOUNT_LIMIT_EXCEEDED',
  'INVALID_EMAIL',
  'INVALID_ADDRESS',
  'GOVCLOUD_ACCOUNT_ALREADY_EXISTS',
  'MISSING_BUSINESS_VALIDATION',
  'FAILED_BUSINESS_VALIDATION',
  'INVALID_IDENTITY_FOR_BUSINESS_VALIDATION',
  'UNKNOWN_BUSINESS_VALIDATION',
  'MISSING_PAYMENT_INSTRUMENT',
  'INVALID_PAYMENT_INSTRUMENT',
  'UPDATE_EXISTING_RESOURCE_POLICY_WITH_TAGS_NOT_SUPPORTED',
]);

/** CreateAccount FAILED reasons worth another attempt after a jittered pause. */
export const RETRYABLE_FAILURE_REASONS = new Set(['CONCURRENT_ACCOUNT_MODIFICATION', 'INTERNAL_FAILURE']);

const RETRYABLE_ERRORS = new Set(['ConcurrentModificationException', 'ServiceException']);

export function isRetryableOrganizationsError(e: unknown): boolean {
  if (e instanceof TenantryError) return e.retryable;
  const name = awsErrorName(e);
  return isThrottling(e) || (name !== undefined && RETRYABLE_ERRORS.has(name));
}

/**
 * An account's lifecycle state. Organizations retires `Account.Status` on 9 September 2026 in favour
 * of `State` (ACTIVE, PENDING_ACTIVATION, PENDING_CLOSURE, SUSPENDED, CLOSED): `State` when the
 * answer has it, `Status` (ACTIVE, SUSPENDED, PENDING_CLOSURE) from an older endpoint otherwise.
 */
export function accountState(a: Account): string | undefined {
  return a.State ?? a.Status;
}

/** Every account in the organization, following NextToken. */
export async function listAccounts(
  client: OrganizationsClient,
  opts: { signal?: AbortSignal } = {},
): Promise<Account[]> {
  const out: Account[] = [];
  let token: string | undefined;
  do {
    const page = await withRetry(() => client.send(new ListAccountsCommand({ NextToken: token })), {
      isRetryable: isRetryableOrganizationsError,
      signal: opts.signal,
    });
    out.push(...(page.Accounts ?? []));
    token = page.NextToken;
  } while (token);
  return out;
}

/**
 * Asks Organizations to close a member account (it turns PENDING_CLOSURE, then SUSPENDED, and is
 * closed for good after 90 days). An account already closing or closed is done. The CloseAccount
 * quota (10% of member accounts per 30 days) is the caller's to respect: aws/closures.ts.
 */
export async function closeAccount(client: OrganizationsClient, accountId: string): Promise<void> {
  try {
    await withRetry(() => client.send(new CloseAccountCommand({ AccountId: accountId })), {
      isRetryable: isRetryableOrganizationsError,
      maxAttempts: 6,
    });
  } catch (e) {
    if (awsErrorName(e) === 'AccountAlreadyClosedException') return;
    throw e;
  }
}
