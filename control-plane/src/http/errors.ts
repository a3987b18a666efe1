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
    case 'OPERATION_NOT_RESUMABLE':
    case 'TENANT_NOT_ACTIVE':
      return 409;
    case 'PAYLOAD_TOO_LARGE':
      return 413;
    case 'IDEMPOTENCY_KEY_REUSED':
    case 'TIER_NOT_AVAILABLE_ON_TARGET':
    case 'PROMOTION_NOT_ALLOWED':
    case 'PROMOTION_NOT_AVAILABLE_ON_TARGET':
    case 'ROLLBACK_NOT_AVAILABLE_ON_TARGET':
      return 422;
    case 'ROLLBACK_NOT_AVAILABLE':
      return 409;
    case 'DATABASE_UNAVAILABLE':
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

const CONNECTION_ERRNO = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
]);
// SQLSTATE: admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections.
const UNAVAILABLE_SQLSTATE = new Set(['57P01', '57P02', '57P03', '53300']);

/**
 * A database that is unreachable or refusing sessions (as opposed to a query that failed):
 * the service is unavailable for now, and a retry may succeed. Checks socket errno codes,
 * SQLSTATE class 08 (connection exception) and the server's shutdown/overload states.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (CONNECTION_ERRNO.has(code) || UNAVAILABLE_SQLSTATE.has(code) || /^08[0-9A-Z]{3}$/.test(code))
      return true;
  }
  const inner = (err as { errors?: unknown }).errors; // AggregateError of a multi-address connect
  if (Array.isArray(inner) && inner.some(isDatabaseUnavailable)) return true;
  const message = (err as { message?: unknown }).message;
  return (
    typeof message === 'string' &&
    /^(Connection terminated|timeout exceeded when trying to connect)/.test(message)
  );
}
