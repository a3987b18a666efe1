import {
  type Account,
  CreateAccountCommand,
  type CreateAccountStatus,
  DescribeCreateAccountStatusCommand,
  ListAccountsCommand,
  type OrganizationsClient,
  type Tag,
} from '@aws-sdk/client-organizations';
import { TenantryError } from '../domain/errors.js';
import { awsErrorName, isThrottling, type RetryOptions, sleep, withRetry } from './retry.js';
import { accountOperations, type Semaphore } from './semaphore.js';

/**
 * FAILED reasons that another attempt cannot fix. The email one matters most: root
 * emails can never be reused, so the caller must pick a new suffix, not retry.
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

/** FAILED reasons worth a new CreateAccount request after a jittered pause. */
export const RETRYABLE_FAILURE_REASONS = new Set(['CONCURRENT_ACCOUNT_MODIFICATION', 'INTERNAL_FAILURE']);

const RETRYABLE_ERRORS = new Set(['ConcurrentModificationException', 'ServiceException']);

export function isRetryableOrganizationsError(e: unknown): boolean {
  if (e instanceof TenantryError) return e.retryable;
  const name = awsErrorName(e);
  return isThrottling(e) || (name !== undefined && RETRYABLE_ERRORS.has(name));
}

export interface CreateAccountInput {
  email: string;
  accountName: string;
  roleName: string;
  tags?: Record<string, string>;
}

export interface CreateAccountOptions {
  /** Status poll interval. */
  pollMs?: number;
  /** Give up polling after this long (the request keeps going on AWS's side; resume with waitForCreateAccount). */
  timeoutMs?: number;
  signal?: AbortSignal;
  semaphore?: Semaphore;
  retry?: Partial<Omit<RetryOptions, 'isRetryable'>>;
  now?: () => number;
}

function failure(status: CreateAccountStatus): TenantryError {
  const reason = status.FailureReason ?? 'UNKNOWN';
  const retryable = RETRYABLE_FAILURE_REASONS.has(reason) && !TERMINAL_FAILURE_REASONS.has(reason);
  return new TenantryError('PROVIDER_FAILED', `CreateAccount failed: ${reason}`, {
    retryable,
    context: { reason, requestId: status.Id, accountName: status.AccountName },
  });
}

/** Polls DescribeCreateAccountStatus until SUCCEEDED (returns the account id) or FAILED (throws). */
export async function waitForCreateAccount(
  client: OrganizationsClient,
  requestId: string,
  opts: CreateAccountOptions = {},
): Promise<string> {
  const pollMs = opts.pollMs ?? 5_000;
  const now = opts.now ?? Date.now;
  const deadline = now() + (opts.timeoutMs ?? 15 * 60_000);
  const retry = { isRetryable: isRetryableOrganizationsError, signal: opts.signal, ...opts.retry };
  for (;;) {
    const res = await withRetry(
      () => client.send(new DescribeCreateAccountStatusCommand({ CreateAccountRequestId: requestId })),
      retry,
    );
    const status = res.CreateAccountStatus;
    if (status?.State === 'SUCCEEDED') {
      if (!status.AccountId)
        throw new TenantryError('PROVIDER_FAILED', 'CreateAccount succeeded without an account id');
      return status.AccountId;
    }
    if (status?.State === 'FAILED') throw failure(status);
    if (now() >= deadline) {
      // Retryable for the caller (resume with waitForCreateAccount), never by re-sending CreateAccount.
      throw new TenantryError('PROVIDER_FAILED', 'CreateAccount still in progress at the deadline', {
        retryable: true,
        context: { requestId, inProgress: true },
      });
    }
    await (opts.retry?.sleep ?? sleep)(pollMs, opts.signal);
  }
}

/**
 * Creates a member account and waits for it. Holds one of the (at most 5) account
 * operation slots for the whole request. CONCURRENT_ACCOUNT_MODIFICATION and throttling
 * are retried with jittered backoff; terminal reasons throw a non-retryable error
 * carrying the reason.
 */
export async function createAccount(
  client: OrganizationsClient,
  input: CreateAccountInput,
  opts: CreateAccountOptions = {},
): Promise<{ accountId: string; requestId: string }> {
  const tags: Tag[] = Object.entries(input.tags ?? {}).map(([Key, Value]) => ({ Key, Value }));
  const isRetryable = (e: unknown) =>
    !(e instanceof TenantryError && e.context.inProgress === true) && isRetryableOrganizationsError(e);
  const retry = { isRetryable, signal: opts.signal, ...opts.retry };
  return (opts.semaphore ?? accountOperations).run(() =>
    withRetry(async () => {
      const res = await client.send(
        new CreateAccountCommand({
          Email: input.email,
          AccountName: input.accountName,
          RoleName: input.roleName,
          IamUserAccessToBilling: 'DENY',
          ...(tags.length > 0 ? { Tags: tags } : {}),
        }),
      );
      const status = res.CreateAccountStatus;
      if (!status?.Id) throw new TenantryError('PROVIDER_FAILED', 'CreateAccount returned no request id');
      if (status.State === 'FAILED') throw failure(status);
      const accountId = await waitForCreateAccount(client, status.Id, opts);
      return { accountId, requestId: status.Id };
    }, retry),
  );
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
