import type { ErrorCode } from '../domain/errors.js';
import { isConnectionUnavailable } from '../lib/transient.js';

/**
 * A string with no control characters: no C0 control (NUL among them, which Postgres refuses in text
 * with 22021), no DEL and no C1 control (terminal escapes would reach the CLI's tables and the logs).
 */
export const PRINTABLE = '^[^\\u0000-\\u001F\\u007F-\\u009F]*$';

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
    case 'ROLLOUT_NOT_FOUND':
    case 'EXPORT_NOT_FOUND':
    case 'WEBHOOK_NOT_FOUND':
      return 404;
    case 'TENANT_SLUG_TAKEN':
    case 'OPERATION_IN_PROGRESS':
    case 'OPERATION_NOT_RESUMABLE':
    case 'TENANT_NOT_ACTIVE':
    case 'CAPACITY_EXCEEDED':
    case 'ROLLOUT_IN_PROGRESS':
    case 'ROLLOUT_STATE_CONFLICT':
    case 'TENANT_SUSPENDED':
    case 'TENANT_NOT_SUSPENDED':
    case 'EXPORT_NOT_READY':
      return 409;
    case 'PRECONDITION_FAILED':
      return 412;
    case 'PRECONDITION_REQUIRED':
      return 428;
    case 'PAYLOAD_TOO_LARGE':
      return 413;
    case 'IDEMPOTENCY_KEY_REUSED':
    case 'TIER_NOT_AVAILABLE_ON_TARGET':
    case 'PROMOTION_NOT_ALLOWED':
    case 'PROMOTION_NOT_AVAILABLE_ON_TARGET':
    case 'ROLLBACK_NOT_AVAILABLE_ON_TARGET':
    case 'ROTATION_NOT_AVAILABLE_ON_TARGET':
    case 'ROLLOUT_INVALID':
    case 'LIMITS_OUT_OF_BOUNDS':
    case 'OPERATION_NOT_AVAILABLE_ON_TARGET':
    case 'EXPORT_INVALID':
    case 'EXPORT_NOT_AVAILABLE_ON_TARGET':
    case 'WEBHOOK_URL_REFUSED':
    case 'WEBHOOKS_NOT_AVAILABLE_ON_TARGET':
      return 422;
    case 'ROLLBACK_NOT_AVAILABLE':
    case 'CREDENTIALS_IN_GRACE':
      return 409;
    case 'DATABASE_UNAVAILABLE':
    case 'NOT_READY':
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

/**
 * A database that is unreachable or refusing sessions (as opposed to a query that failed): the
 * service is unavailable for now, and a retry may succeed. The rules live in `lib/transient.ts`,
 * shared with the executor's retry decision.
 */
export const isDatabaseUnavailable = isConnectionUnavailable;

// SQLSTATE data exceptions a request's own value causes: string_data_right_truncation,
// numeric_value_out_of_range, invalid_datetime_format, datetime_field_overflow,
// character_not_in_repertoire (NUL in text), invalid_text_representation, untranslatable_character.
const INVALID_INPUT_SQLSTATE = new Set(['22001', '22003', '22007', '22008', '22021', '22P02', '22P05']);

/**
 * A value Postgres refused as data (as opposed to a failed query): the request carried it, so it is
 * the client's error. The schemas refuse these values at the edge; this is the last resort for one
 * they let through.
 */
export function isInvalidInput(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const { code, severity } = err as { code?: unknown; severity?: unknown };
  return typeof code === 'string' && typeof severity === 'string' && INVALID_INPUT_SQLSTATE.has(code);
}

/** One schema error as Ajv (through Fastify) reports it. */
export interface SchemaError {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

/**
 * The message of a request refused by its schema, one clause per offending field, each naming where
 * the field is (`body/name`, `querystring/limit`). Two of Ajv's messages say little on their own: a
 * value outside an enumeration (a union of literals reports "must be equal to constant" once per
 * literal, then "must match a schema in anyOf") names the allowed values instead, and the printable
 * pattern says what it refuses instead of quoting itself.
 */
export function validationMessage(context: string | undefined, errors: readonly SchemaError[]): string {
  const byPath = new Map<string, SchemaError[]>();
  for (const e of errors) byPath.set(e.instancePath, [...(byPath.get(e.instancePath) ?? []), e]);
  const clauses: string[] = [];
  for (const [path, errs] of byPath) {
    const where = `${context ?? 'request'}${path}`;
    const allowed = allowedValues(errs);
    if (allowed) {
      clauses.push(`${where} must be one of ${allowed.join(', ')}`);
      continue;
    }
    for (const e of errs) {
      const what =
        e.keyword === 'pattern' && e.params.pattern === PRINTABLE
          ? 'must not contain control characters'
          : (e.message ?? 'is not valid');
      const clause = `${where} ${what}`;
      if (!clauses.includes(clause)) clauses.push(clause);
    }
  }
  return clauses.join(', ');
}

/** The allowed values, when the errors at one path only say the value is not one of them. */
function allowedValues(errs: readonly SchemaError[]): string[] | null {
  const values: string[] = [];
  let branches = false;
  for (const e of errs) {
    if (e.keyword === 'anyOf' || e.keyword === 'oneOf') branches = true;
    else if (e.keyword === 'const') values.push(String(e.params.allowedValue));
    else if (e.keyword === 'enum' && Array.isArray(e.params.allowedValues))
      values.push(...e.params.allowedValues.map(String));
    else if (e.keyword === 'type' && e.params.type === 'null') values.push('null');
    else return null;
  }
  const single = errs.length === 1 && errs[0]?.keyword === 'enum';
  return (branches || single) && values.length > 0 ? values : null;
}
