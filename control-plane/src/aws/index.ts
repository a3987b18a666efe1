export { type AwsCredentials, assumeRole, findActiveAccountIdByEmail, memberRoleArn } from './accounts.js';
export { ACCOUNT_CLOSURES_TASK, AccountClosureQueue, closeAccountQuota } from './closures.js';
export {
  deleteAlias,
  describeKey,
  ensureAliasedKey,
  type KeyInfo,
  listKeyAliases,
  type ScheduledDeletion,
  scheduleKeyDeletion,
} from './kms.js';
export {
  accountState,
  closeAccount,
  isRetryableOrganizationsError,
  listAccounts,
  RETRYABLE_FAILURE_REASONS,
  TERMINAL_FAILURE_REASONS,
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
export {
  deleteSecretNow,
  getSecretValue,
  listSecretsByTag,
  putSecretValue,
  type SecretValue,
  SecretVersionTaken,
  secretVersionOf,
  secretVersionToken,
} from './secrets.js';
export { accountOperations, MAX_CONCURRENT_ACCOUNT_OPERATIONS, Semaphore } from './semaphore.js';
export { AwsKeyStore, type AwsSecretsSettings, type InventorySecret } from './store.js';
