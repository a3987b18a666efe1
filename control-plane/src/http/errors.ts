import type { ErrorCode } from '../domain/errors.js';

/** The one map from error code to HTTP status. Exhaustive: a new code fails to compile until mapped. */
export function httpStatusFor(code: ErrorCode): number {
  switch (code) {
    case 'VALIDATION_FAILED':
    case 'CONFIRMATION_REQUIRED':
      return 400;
    case 'UNAUTHENTICATED':
      return 401;
    case 'FORBIDDEN':
      return 403;
    case 'TENANT_NOT_FOUND':
    case 'OPERATION_NOT_FOUND':
    case 'TOKEN_NOT_FOUND':
    case 'ROUTE_NOT_FOUND':
      return 404;
    case 'TENANT_SLUG_TAKEN':
    case 'OPERATION_IN_PROGRESS':
    case 'TENANT_NOT_ACTIVE':
      return 409;
    case 'PAYLOAD_TOO_LARGE':
      return 413;
    case 'IDEMPOTENCY_KEY_REUSED':
    case 'TIER_NOT_AVAILABLE_ON_TARGET':
    case 'PROMOTION_NOT_ALLOWED':
      return 422;
    case 'ROLLBACK_NOT_AVAILABLE':
      return 409;
    case 'DATAPLANE_UNAVAILABLE':
    case 'SECRET_UNAVAILABLE':
      return 503;
    case 'PROVIDER_FAILED':
    case 'INTERNAL':
      return 500;
    default: {
      const unreachable: never = code;
      return unreachable;
    }
  }
}
