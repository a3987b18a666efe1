import { type Static, type StringOptions, type TSchema, Type } from '@sinclair/typebox';
import { ERROR_CODES, type ErrorCode } from '../domain/errors.js';
import { SLUG_PATTERN } from '../domain/naming.js';
import { OPERATION_KINDS, OPERATION_STATUSES, TENANT_STATUSES } from '../domain/tenant.js';
import { httpStatusFor, PRINTABLE } from '../http/errors.js';
import { STATUS_TEXT } from '../http/openapi.js';

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.Union(ERROR_CODES.map((c) => Type.Literal(c))),
      message: Type.String(),
      requestId: Type.String(),
    }),
  },
  { $id: 'ErrorBody' },
);
export type ErrorBodyT = Static<typeof ErrorBody>;

/** An error response answering with one of `codes`, all mapped to the same status. */
const errorResponse = (status: number, codes: ErrorCode[]) =>
  Type.Object(
    {
      error: Type.Object({
        // `enum`, not a union of literals: the serializer writes any string, so a code a route did not
        // declare is still answered as it is (the document is what names the codes).
        code: Type.Unsafe<ErrorCode>({ type: 'string', enum: codes }),
        message: Type.String(),
        requestId: Type.String({ description: 'the x-request-id of the request, for the logs' }),
      }),
    },
    { description: `${STATUS_TEXT[status] ?? `HTTP ${status}`}: ${codes.join(', ')}` },
  );

/**
 * The error responses of a route, for its schema and the OpenAPI document: name the error codes
 * the route can answer with (each documented under the status http/errors.ts maps it to). Every
 * route can answer 500 INTERNAL and 503 DATABASE_UNAVAILABLE (the control-plane database is
 * unreachable), so both are always declared. A status number stands for every code mapped to it.
 */
export const errors = (...answers: (ErrorCode | number)[]) => {
  const codes = new Set<ErrorCode>(['INTERNAL', 'DATABASE_UNAVAILABLE']);
  for (const a of answers) {
    if (typeof a === 'string') codes.add(a);
    else for (const c of ERROR_CODES) if (httpStatusFor(c) === a) codes.add(c);
  }
  const byStatus = new Map<number, ErrorCode[]>();
  for (const c of ERROR_CODES.filter((x) => codes.has(x))) {
    const status = httpStatusFor(c);
    byStatus.set(status, [...(byStatus.get(status) ?? []), c]);
  }
  return Object.fromEntries(
    [...byStatus].sort(([a], [b]) => a - b).map(([status, cs]) => [status, errorResponse(status, cs)]),
  );
};

/** The error codes a route's response schemas declare (those `errors` built): all, or one status'. */
export function declaredErrorCodes(response: Record<string, unknown>, only?: number): ErrorCode[] {
  const codes: ErrorCode[] = [];
  for (const [status, schema] of Object.entries(response)) {
    if (Number(status) < 400 || (only !== undefined && Number(status) !== only)) continue;
    const code = (schema as { properties?: { error?: { properties?: { code?: { enum?: unknown } } } } })
      ?.properties?.error?.properties?.code?.enum;
    if (Array.isArray(code)) codes.push(...(code as ErrorCode[]));
  }
  return codes;
}

/**
 * A route of a method that carries a body is refused before its handler by the body handling itself:
 * a body that is not JSON or of another media type (400 VALIDATION_FAILED), or one over the limit
 * (413 PAYLOAD_TOO_LARGE), whether or not the route reads a body. `app.ts` declares both on every
 * such route, so the document names every code the server answers with.
 */
export const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function withBodyErrors(response: Record<string, unknown>): Record<string, unknown> {
  const codes = declaredErrorCodes(response);
  if (codes.includes('VALIDATION_FAILED') && codes.includes('PAYLOAD_TOO_LARGE')) return response;
  return { ...response, ...errors(...codes, 'VALIDATION_FAILED', 'PAYLOAD_TOO_LARGE') };
}

/** Every route that takes a token can answer these two. */
export const AUTH_ERRORS = ['UNAUTHENTICATED', 'FORBIDDEN'] as const;

/**
 * Free text the API accepts (a name, a plan, a header value): bounded and printable. Every input string
 * without a stricter pattern or format of its own is one of these; tests/integration/hostile-input.test.ts
 * checks every input string of the OpenAPI document for it.
 */
export const Text = (opts: StringOptions & { maxLength: number }) =>
  Type.String({ ...opts, pattern: PRINTABLE });

/**
 * A UUID as Postgres' uuid type reads it. The `uuid` format alone also takes a `urn:uuid:` prefix,
 * which Postgres refuses (22P02).
 */
export const Uuid = Type.String({
  format: 'uuid',
  pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
});

/**
 * An id the API hands out as a JSON number (audit records): a bigint column, bounded to what a
 * JSON number holds exactly.
 */
export const MAX_ID = Number.MAX_SAFE_INTEGER;

/** A keyset page's cursor, as a client sends it back: opaque (each listing decodes and checks its own). */
export const Cursor = Type.String({
  pattern: '^[A-Za-z0-9_-]+$',
  maxLength: 200,
  description: 'the nextCursor of the previous page',
});

/** One page of a keyset-paginated listing. */
export const Page = <T extends TSchema>(item: T) =>
  Type.Object({
    items: Type.Array(item),
    nextCursor: Type.Union([Type.String(), Type.Null()], {
      description: 'pass it as `cursor` for the next page; null on the last page',
    }),
  });

export const TierT = Type.Union([
  Type.Literal('pool'),
  Type.Literal('bridge'),
  Type.Literal('silo'),
  Type.Literal('account'),
]);
export const TenantStatusT = Type.Union(TENANT_STATUSES.map((s) => Type.Literal(s)));
export const Slug = Type.String({
  pattern: SLUG_PATTERN,
  description: 'lowercase, 3-40 chars, starts with a letter',
});

export const TenantSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  slug: Type.String(),
  name: Type.String(),
  tier: TierT,
  status: TenantStatusT,
  region: Type.Union([Type.String(), Type.Null()]),
  plan: Type.Union([Type.String(), Type.Null()]),
  contactEmail: Type.Union([Type.String(), Type.Null()]),
  templateVersion: Type.Integer(),
  version: Type.Integer({
    description:
      "changes with every change an operator makes (PATCH, suspension, reactivation); the ETag PATCH's If-Match names",
  }),
  labels: Type.Record(Type.String(), Type.String(), { description: 'key/value pairs to select tenants by' }),
  limits: Type.Object(
    {
      connectionLimit: Type.Optional(Type.Integer()),
      statementTimeoutMs: Type.Optional(Type.Integer()),
      idleInTransactionSessionTimeoutMs: Type.Optional(Type.Integer()),
    },
    { description: "limit overrides on top of the tier's (bridge and silo); empty: the tier's limits" },
  ),
  suspension: Type.Union(
    [
      Type.Object({
        reason: Type.String(),
        note: Type.Union([Type.String(), Type.Null()]),
        at: Type.String({ format: 'date-time' }),
        by: Type.Union([Type.String(), Type.Null()]),
      }),
      Type.Null(),
    ],
    { description: 'why and since when the tenant is suspended; null unless it is' },
  ),
  outputs: Type.Record(
    Type.String(),
    Type.Union([Type.String(), Type.Number(), Type.Boolean(), Type.Null()]),
    {
      description: 'Non-secret outputs of provisioning (key id, secret ref, database, schema, user)',
    },
  ),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});

export const OperationKindT = Type.Union(OPERATION_KINDS.map((s) => Type.Literal(s)));
export const OperationStatusT = Type.Union(OPERATION_STATUSES.map((s) => Type.Literal(s)));

export const TenantDetailSchema = Type.Composite(
  [
    TenantSchema,
    Type.Object({
      activeOperation: Type.Union(
        [
          Type.Object({
            id: Type.String(),
            kind: OperationKindT,
            status: OperationStatusT,
            currentStep: Type.Union([Type.String(), Type.Null()], {
              description: 'the step running now, if any',
            }),
          }),
          Type.Null(),
        ],
        {
          description: 'the operation in flight (queued or running); follow it at /v1/operations/{id}/events',
        },
      ),
      promotion: Type.Union(
        [
          Type.Object({
            operationId: Type.String(),
            fromTier: TierT,
            toTier: TierT,
            cutoverAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
            rollbackUntil: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
              description: 'the end of the rollback window: the source placement is kept until then',
            }),
            rolledBack: Type.Boolean(),
            rollbackAvailable: Type.Boolean({
              description:
                'POST /v1/tenants/{slug}/promotions/{operationId}/rollback would be accepted now: window open, not rolled back, tenant still on toTier and not suspended, and the target rolls back (an operation in flight, shown in activeOperation, makes it wait)',
            }),
          }),
          Type.Null(),
        ],
        { description: 'the latest completed promotion (not a rollback); null if never promoted' },
      ),
    }),
  ],
  { description: 'a tenant, its operation in flight and its latest promotion' },
);

export const StepSchema = Type.Object({
  name: Type.String(),
  status: Type.Union(['pending', 'running', 'succeeded', 'failed', 'skipped'].map((s) => Type.Literal(s))),
  startedAt: Type.Union([Type.String(), Type.Null()]),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
  error: Type.Optional(Type.String()),
  errorCode: Type.Optional(
    Type.String({
      description:
        "a failed step's stable error code (as an error response's `code`), when it failed with one",
    }),
  ),
});

export const OperationSchema = Type.Object({
  id: Type.String(),
  kind: OperationKindT,
  tenantSlug: Type.String(),
  status: OperationStatusT,
  steps: Type.Array(StepSchema),
  error: Type.Optional(Type.String()),
  attempts: Type.Integer(),
  currentStep: Type.Union([Type.String(), Type.Null()], { description: 'the step running now, if any' }),
  params: Type.Record(Type.String(), Type.Unknown(), {
    description: 'e.g. a promotion: {fromTier, toTier, rollbackOf?}',
  }),
  progress: Type.Record(Type.String(), Type.Unknown(), {
    description:
      'promotions: rowsCopied {table: n}, replicationLagBytes, writeFreezeMs, freezeStartedAt, cutoverAt, rollbackUntil, verification',
  }),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});

export const Accepted = Type.Object({ tenant: TenantSchema, operation: OperationSchema });

export const AuthHeaders = Type.Object({ authorization: Type.Optional(Type.String()) });
export const security = [{ bearer: [] }];
