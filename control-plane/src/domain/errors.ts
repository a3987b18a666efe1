/**
 * Domain errors carry a stable code. The code → HTTP status map lives in one place
 * (http/errors.ts, applied by the error handler in plugins/errors.ts), and a table-driven
 * test (tests/unit/errors.test.ts) pins it.
 */
export const ERROR_CODES = [
  'VALIDATION_FAILED',
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'TENANT_NOT_FOUND',
  'OPERATION_NOT_FOUND',
  'TOKEN_NOT_FOUND',
  'ROUTE_NOT_FOUND',
  'TENANT_SLUG_TAKEN',
  'OPERATION_IN_PROGRESS',
  'OPERATION_NOT_RESUMABLE',
  'TENANT_NOT_ACTIVE',
  'CONFIRMATION_REQUIRED',
  'IDEMPOTENCY_KEY_REUSED',
  'TIER_NOT_AVAILABLE_ON_TARGET',
  'PROMOTION_NOT_ALLOWED',
  'PROMOTION_NOT_AVAILABLE_ON_TARGET',
  'ROLLBACK_NOT_AVAILABLE',
  'ROLLBACK_NOT_AVAILABLE_ON_TARGET',
  'ROTATION_NOT_AVAILABLE_ON_TARGET',
  'CREDENTIALS_IN_GRACE',
  'CAPACITY_EXCEEDED',
  'ROLLOUT_NOT_FOUND',
  'ROLLOUT_IN_PROGRESS',
  'ROLLOUT_STATE_CONFLICT',
  'ROLLOUT_INVALID',
  'PRECONDITION_FAILED',
  'PRECONDITION_REQUIRED',
  'TENANT_SUSPENDED',
  'TENANT_NOT_SUSPENDED',
  'LIMITS_OUT_OF_BOUNDS',
  'OPERATION_NOT_AVAILABLE_ON_TARGET',
  'EXPORT_NOT_FOUND',
  'EXPORT_NOT_READY',
  'EXPORT_INVALID',
  'EXPORT_NOT_AVAILABLE_ON_TARGET',
  'WEBHOOK_NOT_FOUND',
  'WEBHOOK_URL_REFUSED',
  'WEBHOOKS_NOT_AVAILABLE_ON_TARGET',
  'PAYLOAD_TOO_LARGE',
  'DATABASE_UNAVAILABLE',
  'NOT_READY',
  'DATAPLANE_UNAVAILABLE',
  'SECRET_UNAVAILABLE',
  'PROVIDER_FAILED',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class TenantryError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly context: Record<string, unknown>;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { retryable?: boolean; context?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'TenantryError';
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.context = opts.context ?? {};
  }
}

export const isTenantryError = (e: unknown): e is TenantryError => e instanceof TenantryError;
