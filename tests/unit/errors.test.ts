import { describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../control-plane/src/domain/errors.js';
import { httpStatusFor } from '../../control-plane/src/http/errors.js';

/** Pins the one error-code → HTTP status map. Changing a status is an API change: update this table on purpose. */
const EXPECTED: Record<ErrorCode, number> = {
  VALIDATION_FAILED: 400,
  CONFIRMATION_REQUIRED: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  TENANT_NOT_FOUND: 404,
  OPERATION_NOT_FOUND: 404,
  TOKEN_NOT_FOUND: 404,
  ROUTE_NOT_FOUND: 404,
  TENANT_SLUG_TAKEN: 409,
  OPERATION_IN_PROGRESS: 409,
  TENANT_NOT_ACTIVE: 409,
  PAYLOAD_TOO_LARGE: 413,
  IDEMPOTENCY_KEY_REUSED: 422,
  TIER_NOT_AVAILABLE_ON_TARGET: 422,
  PROMOTION_NOT_ALLOWED: 422,
  ROLLBACK_NOT_AVAILABLE: 409,
  DATAPLANE_UNAVAILABLE: 503,
  SECRET_UNAVAILABLE: 503,
  PROVIDER_FAILED: 500,
  INTERNAL: 500,
};

describe('error code → HTTP status', () => {
  it('covers every code', () => {
    expect(Object.keys(EXPECTED).sort()).toEqual([...ERROR_CODES].sort());
  });
  it.each(Object.entries(EXPECTED))('%s → %i', (code, status) => {
    expect(httpStatusFor(code as ErrorCode)).toBe(status);
  });
});
