import { describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../control-plane/src/domain/errors.js';
import {
  httpStatusFor,
  isDatabaseUnavailable,
  isInvalidInput,
  PRINTABLE,
  validationMessage,
} from '../../control-plane/src/http/errors.js';

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
  CAPACITY_EXCEEDED: 409,
  ROLLOUT_NOT_FOUND: 404,
  ROLLOUT_IN_PROGRESS: 409,
  ROLLOUT_STATE_CONFLICT: 409,
  ROLLOUT_INVALID: 422,
  PRECONDITION_FAILED: 412,
  PRECONDITION_REQUIRED: 428,
  TENANT_SUSPENDED: 409,
  TENANT_NOT_SUSPENDED: 409,
  LIMITS_OUT_OF_BOUNDS: 422,
  OPERATION_NOT_AVAILABLE_ON_TARGET: 422,
  EXPORT_NOT_FOUND: 404,
  EXPORT_NOT_READY: 409,
  EXPORT_INVALID: 422,
  EXPORT_NOT_AVAILABLE_ON_TARGET: 422,
  WEBHOOK_NOT_FOUND: 404,
  WEBHOOK_URL_REFUSED: 422,
  WEBHOOKS_NOT_AVAILABLE_ON_TARGET: 422,
  PAYLOAD_TOO_LARGE: 413,
  IDEMPOTENCY_KEY_REUSED: 422,
  TIER_NOT_AVAILABLE_ON_TARGET: 422,
  PROMOTION_NOT_ALLOWED: 422,
  PROMOTION_NOT_AVAILABLE_ON_TARGET: 422,
  ROLLBACK_NOT_AVAILABLE_ON_TARGET: 422,
  ROLLBACK_NOT_AVAILABLE: 409,
  ROTATION_NOT_AVAILABLE_ON_TARGET: 422,
  CREDENTIALS_IN_GRACE: 409,
  DATABASE_UNAVAILABLE: 503,
  NOT_READY: 503,
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

describe('a value the database refused (mapped to 400 VALIDATION_FAILED)', () => {
  // What pg's DatabaseError carries: a SQLSTATE code and a severity.
  const pgErr = (code: string) => Object.assign(new Error('x'), { code, severity: 'ERROR' });
  it.each([
    ['a NUL in text', '22021'],
    ['an untranslatable character', '22P05'],
    ['a number out of range', '22003'],
    ['a malformed number or uuid', '22P02'],
    ['a malformed date', '22007'],
    ['a date out of range', '22008'],
    ['a string too long for its column', '22001'],
  ])('recognises %s (%s)', (_label, code) => {
    expect(isInvalidInput(pgErr(code))).toBe(true);
  });
  it.each([
    ['a unique violation', pgErr('23505')],
    ['a division by zero (our own arithmetic)', pgErr('22012')],
    ['a connection failure', pgErr('08006')],
    ['an error that is not from Postgres', Object.assign(new Error('x'), { code: '22021' })],
    ['a non-error', '22021'],
  ])('does not mistake %s for it', (_label, e) => {
    expect(isInvalidInput(e)).toBe(false);
  });
});

describe('validation messages', () => {
  const constErr = (path: string, v: unknown) => ({
    keyword: 'const',
    instancePath: path,
    params: { allowedValue: v },
    message: 'must be equal to constant',
  });
  const anyOf = (path: string) => ({
    keyword: 'anyOf',
    instancePath: path,
    params: {},
    message: 'must match a schema in anyOf',
  });
  it('names the allowed values of a union of literals', () => {
    const errs = [...['pool', 'bridge', 'silo', 'account'].map((t) => constErr('/tier', t)), anyOf('/tier')];
    expect(validationMessage('body', errs)).toBe('body/tier must be one of pool, bridge, silo, account');
  });
  it('counts a null branch among the allowed values', () => {
    const errs = [
      constErr('/mode', 'report'),
      constErr('/mode', 'remediate'),
      { keyword: 'type', instancePath: '/mode', params: { type: 'null' }, message: 'must be null' },
      anyOf('/mode'),
    ];
    expect(validationMessage('body', errs)).toBe('body/mode must be one of report, remediate, null');
  });
  it('names the values of an enum', () => {
    const errs = [
      {
        keyword: 'enum',
        instancePath: '/kind',
        params: { allowedValues: ['a', 'b'] },
        message: 'must be equal to one of the allowed values',
      },
    ];
    expect(validationMessage('querystring', errs)).toBe('querystring/kind must be one of a, b');
  });
  it('says a string may not hold control characters instead of quoting the pattern', () => {
    const errs = [
      {
        keyword: 'pattern',
        instancePath: '/name',
        params: { pattern: PRINTABLE },
        message: `must match pattern "${PRINTABLE}"`,
      },
    ];
    expect(validationMessage('body', errs)).toBe('body/name must not contain control characters');
  });
  it("keeps Ajv's message for anything else, prefixed with where the field is", () => {
    const errs = [
      { keyword: 'type', instancePath: '/name', params: { type: 'string' }, message: 'must be string' },
    ];
    expect(validationMessage('body', errs)).toBe('body/name must be string');
    const missing = [
      {
        keyword: 'required',
        instancePath: '',
        params: { missingProperty: 'name' },
        message: "must have required property 'name'",
      },
    ];
    expect(validationMessage('body', missing)).toBe("body must have required property 'name'");
  });
  it('does not read a union with other branches as an enumeration', () => {
    const errs = [
      constErr('/v', 'x'),
      { keyword: 'type', instancePath: '/v', params: { type: 'integer' }, message: 'must be integer' },
      anyOf('/v'),
    ];
    expect(validationMessage('body', errs)).toBe(
      'body/v must be equal to constant, body/v must be integer, body/v must match a schema in anyOf',
    );
  });
});
