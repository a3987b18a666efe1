export { type AwsCredentials, assumeRole, findActiveAccountIdByEmail, memberRoleArn } from './accounts.js';
export { findKeyByAlias, type KeyRef, type ScheduledDeletion, scheduleKeyDeletion } from './kms.js';
export {
  type CreateAccountInput,
  type CreateAccountOptions,
  createAccount,
  isRetryableOrganizationsError,
  listAccounts,
  RETRYABLE_FAILURE_REASONS,
  TERMINAL_FAILURE_REASONS,
  waitForCreateAccount,
} from './organizations.js';
export {
  AWS_ENDPOINT_SERVICES,
  AWS_SKIP_FLAGS,
  type AwsEndpointService,
  type AwsProviderOptions,
  awsProviderArgs,
  awsStackConfig,
  endpointList,
} from './provider-options.js';
export { awsErrorName, isThrottling, jitteredDelay, type RetryOptions, withRetry } from './retry.js';
export { getSecretValue, listSecretsByTag, putSecretValue, type SecretValue } from './secrets.js';
export { accountOperations, MAX_CONCURRENT_ACCOUNT_OPERATIONS, Semaphore } from './semaphore.js';
