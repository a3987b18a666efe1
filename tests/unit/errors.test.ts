import { describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../control-plane/src/domain/errors.js';
import { httpStatusFor, isDatabaseUnavailable } from '../../control-plane/src/http/errors.js';

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
  OPERATION_NOT_RESUMABLE: 409,
  TENANT_NOT_ACTIVE: 409,
  PAYLOAD_TOO_LARGE: 413,
  IDEMPOTENCY_KEY_REUSED: 422,
  TIER_NOT_AVAILABLE_ON_TARGET: 422,
  PROMOTION_NOT_ALLOWED: 422,
  PROMOTION_NOT_AVAILABLE_ON_TARGET: 422,
  ROLLBACK_NOT_AVAILABLE_ON_TARGET: 422,
  ROLLBACK_NOT_AVAILABLE: 409,
  DATABASE_UNAVAILABLE: 503,
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

describe('database unavailability (mapped to 503 DATABASE_UNAVAILABLE)', () => {
  const err = (props: Record<string, unknown>, message = 'x') => Object.assign(new Error(message), props);
  it.each([
    ['a refused connection', err({ code: 'ECONNREFUSED' })],
    ['a reset connection', err({ code: 'ECONNRESET' })],
    ['SQLSTATE class 08 (connection exception)', err({ code: '08006' })],
    ['admin shutdown', err({ code: '57P01' })],
    ['the server starting up', err({ code: '57P03' })],
    ['too many connections', err({ code: '53300' })],
    ['a connection lost mid-query', err({}, 'Connection terminated unexpectedly')],
    ['a pool connect timeout', err({}, 'timeout exceeded when trying to connect')],
    [
      'a multi-address connect that failed everywhere',
      Object.assign(new AggregateError([err({ code: 'ECONNREFUSED' })]), {}),
    ],
  ])('recognises %s', (_label, e) => {
    expect(isDatabaseUnavailable(e)).toBe(true);
  });
  it.each([
    ['a unique violation', err({ code: '23505' })],
    ['a syntax error', err({ code: '42601' })],
    ['a plain bug', new TypeError('cannot read properties of undefined')],
    ['a non-error', 'ECONNREFUSED'],
  ])('does not mistake %s for it', (_label, e) => {
    expect(isDatabaseUnavailable(e)).toBe(false);
  });
});
