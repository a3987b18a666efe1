import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type Static, Type } from '@sinclair/typebox';
import { decodeCursor, findTenantById, listTenants } from '../db/repo.js';
import { TenantryError } from '../domain/errors.js';
import { LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, MAX_LABELS } from '../domain/lifecycle.js';
import { actorOf } from '../plugins/auth.js';
import { etagOf, type TenantPatch } from '../services/tenants.js';
import {
  Accepted,
  AUTH_ERRORS,
  Cursor,
  errors,
  OperationSchema,
  Page,
  Slug,
  security,
  TenantDetailSchema,
  TenantSchema,
  TenantStatusT,
  Text,
  TierT,
} from './schemas.js';

/** An export's id, as POST /v1/tenants/{slug}/exports returns it. */
export const EXPORT_ID_PATTERN = '^exp_[0-9a-f]{28}$';
const LabelKey = Type.String({ pattern: LABEL_KEY_PATTERN, maxLength: 63 });
const LabelValue = Type.String({ pattern: LABEL_VALUE_PATTERN, maxLength: 200 });
const Labels = Type.Record(LabelKey, LabelValue, {
  // A key that does not match the key pattern is an unknown property (TypeBox leaves that open).
  additionalProperties: false,
  maxProperties: MAX_LABELS,
  description: 'key/value pairs rollouts and the CLI select tenants by',
});

export const CreateTenantBody = Type.Object(
  {
    slug: Slug,
    name: Text({ minLength: 1, maxLength: 200 }),
    tier: TierT,
    region: Type.Optional(Type.String({ pattern: '^[a-z]{2}(-[a-z]+)+-\\d$', maxLength: 30 })),
    plan: Type.Optional(Text({ minLength: 1, maxLength: 60 })),
    contactEmail: Type.Optional(Text({ format: 'email', maxLength: 254 })),
    labels: Type.Optional(Labels),
    fromExport: Type.Optional(
      Type.String({
        pattern: EXPORT_ID_PATTERN,
        description:
          "onboard from an export's archive (sre, admin): every table's checksum is verified first, and a damaged or mismatched archive is refused (422 EXPORT_INVALID) with nothing created; the restored rows are checked against the manifest",
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreateTenantBodyT = Static<typeof CreateTenantBody>;

const LimitValue = (max: number, what: string) =>
  Type.Union([Type.Integer({ minimum: 0, maximum: max, description: what }), Type.Null()]);

export const PatchTenantBody = Type.Object(
  {
    name: Type.Optional(Text({ minLength: 1, maxLength: 200 })),
    plan: Type.Optional(Type.Union([Text({ minLength: 1, maxLength: 60 }), Type.Null()])),
    contactEmail: Type.Optional(Type.Union([Text({ format: 'email', maxLength: 254 }), Type.Null()])),
    labels: Type.Optional(
      Type.Record(LabelKey, Type.Union([LabelValue, Type.Null()]), {
        additionalProperties: false,
        maxProperties: MAX_LABELS,
        description: 'labels to set; a label set to null is removed; others are kept',
      }),
    ),
    limits: Type.Optional(
      Type.Object(
        {
          connectionLimit: Type.Optional(LimitValue(100_000, "at most the tier's connection limit")),
          statementTimeoutMs: Type.Optional(
            LimitValue(86_400_000, "1000 ms up to the tier's statement_timeout"),
          ),
          idleInTransactionSessionTimeoutMs: Type.Optional(
            LimitValue(86_400_000, "1000 ms up to the tier's idle_in_transaction_session_timeout"),
          ),
        },
        {
          additionalProperties: false,
          description:
            "sre, admin: overrides within the tier's bounds (bridge and silo), applied by an `update` operation; null removes one",
        },
      ),
    ),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type PatchTenantBodyT = Static<typeof PatchTenantBody>;

const SlugParams = Type.Object({ slug: Slug });

/** A label selector of the listing: `key=value`, repeatable (every one must match). */
const LabelSelector = Type.String({
  pattern: `^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?=${LABEL_VALUE_PATTERN.slice(1)}`,
  maxLength: 264,
  description: 'key=value; repeat it to require several labels',
});

export const ConnectionSchema = Type.Object({
  tenantId: Type.String(),
  tier: TierT,
  host: Type.String(),
  port: Type.Integer(),
  database: Type.String(),
  schema: Type.Optional(Type.String()),
  user: Type.String(),
  password: Type.Optional(Type.String({ description: 'present on the local target only' })),
  secretRef: Type.String(),
  tenantSetting: Type.Optional(
    Type.String({ description: 'pool only: set it per transaction with set_config(name, tenantId, true)' }),
  ),
});

const tenantRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const svc = app.services.tenants;

  app.post(
    '/v1/tenants',
    {
      config: { permission: 'tenants:create' },
      schema: {
        operationId: 'createTenant',
        summary: 'Onboard a tenant',
        tags: ['tenants'],
        security,
        headers: Type.Object({
          'idempotency-key': Type.Optional(Text({ minLength: 1, maxLength: 200 })),
        }),
        body: CreateTenantBody,
        response: {
          202: Accepted,
          ...errors(
            'VALIDATION_FAILED',
            'PAYLOAD_TOO_LARGE',
            ...AUTH_ERRORS,
            'TENANT_SLUG_TAKEN',
            'CAPACITY_EXCEEDED',
            'IDEMPOTENCY_KEY_REUSED',
            'TIER_NOT_AVAILABLE_ON_TARGET',
            'DATAPLANE_UNAVAILABLE',
            'EXPORT_NOT_FOUND',
            'EXPORT_NOT_READY',
            'EXPORT_INVALID',
            'EXPORT_NOT_AVAILABLE_ON_TARGET',
          ),
        },
      },
    },
    async (request, reply) => {
      const out = await svc.create(
        { actor: actorOf(request), requestId: request.id },
        request.body,
        request.headers['idempotency-key'],
      );
      if (out.replayed) reply.header('idempotent-replayed', 'true');
      return reply.status(202).send(out.body);
    },
  );

  app.get(
    '/v1/tenants',
    {
      config: { permission: 'tenants:read' },
      schema: {
        operationId: 'listTenants',
        summary: 'List tenants',
        tags: ['tenants'],
        security,
        querystring: Type.Object({
          tier: Type.Optional(TierT),
          status: Type.Optional(TenantStatusT),
          label: Type.Optional(Type.Array(LabelSelector, { maxItems: MAX_LABELS })),
          limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
          cursor: Type.Optional(Cursor),
        }),
        response: {
          200: Page(TenantSchema),
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS),
        },
      },
    },
    async (request, reply) => {
      const { tier, status, limit, cursor, label } = request.query;
      const decoded = cursor === undefined ? undefined : decodeCursor(cursor);
      if (decoded === null)
        throw new TenantryError('VALIDATION_FAILED', 'cursor is not one this API returned');
      const labels = (label ?? []).map((l): [string, string] => [
        l.slice(0, l.indexOf('=')),
        l.slice(l.indexOf('=') + 1),
      ]);
      const db = app.services.db;
      const page = await listTenants(
        db,
        {
          limit,
          ...(label?.length ? { labels } : {}),
          ...(tier ? { tier } : {}),
          ...(status ? { status: status as never } : {}),
          ...(decoded ? { cursor: decoded } : {}),
        },
        db.reads,
      );
      // A cursor naming no tenant (tenants are never deleted: a forged one) would read as the end of
      // the list: refused instead. Checked on an empty page only, the one it can produce.
      if (decoded && page.count === 0 && !(await findTenantById(db, decoded)))
        throw new TenantryError('VALIDATION_FAILED', 'cursor is not one this API returned');
      // Rendered by listTenants (db/repo.ts); a string with a JSON type skips the serializer.
      return reply.type('application/json; charset=utf-8').send(page.json as never);
    },
  );

  app.get(
    '/v1/tenants/:slug',
    {
      config: { permission: 'tenants:read' },
      schema: {
        operationId: 'getTenant',
        summary: 'Get one tenant, with its operation in flight and its latest promotion',
        tags: ['tenants'],
        security,
        params: SlugParams,
        response: {
          200: TenantDetailSchema,
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'TENANT_NOT_FOUND'),
        },
      },
    },
    async (request, reply) => {
      const t = await svc.get(request.params.slug);
      // Rendered by the service (db/repo.ts renders the tenant); a string with a JSON type skips the serializer.
      return reply
        .header('etag', etagOf(t))
        .type('application/json; charset=utf-8')
        .send(t.json as never);
    },
  );

  app.patch(
    '/v1/tenants/:slug',
    {
      config: { permission: 'tenants:update' },
      schema: {
        operationId: 'updateTenant',
        summary: "Change a tenant's name, plan, contact, labels or (sre, admin) limit overrides",
        description:
          "Send If-Match with the tenant's ETag (GET /v1/tenants/{slug}): a stale one is refused with 412 PRECONDITION_FAILED and changes nothing, none with 428 PRECONDITION_REQUIRED. " +
          "Limit overrides (sre, admin; bridge and silo) must stay within the tier's bounds (422 LIMITS_OUT_OF_BOUNDS) and are applied by an `update` operation, returned as `operation`; drift then expects them. Audited, with a tenant.updated event.",
        tags: ['tenants'],
        security,
        params: SlugParams,
        headers: Type.Object({ 'if-match': Type.Optional(Text({ maxLength: 40 })) }),
        body: PatchTenantBody,
        response: {
          200: Type.Object({
            tenant: TenantSchema,
            operation: Type.Union([OperationSchema, Type.Null()], {
              description: 'the `update` operation applying changed limit overrides; null when none changed',
            }),
          }),
          ...errors(
            'VALIDATION_FAILED',
            'PAYLOAD_TOO_LARGE',
            ...AUTH_ERRORS,
            'TENANT_NOT_FOUND',
            'PRECONDITION_FAILED',
            'PRECONDITION_REQUIRED',
            'LIMITS_OUT_OF_BOUNDS',
            'TENANT_NOT_ACTIVE',
            'OPERATION_IN_PROGRESS',
            'OPERATION_NOT_AVAILABLE_ON_TARGET',
          ),
        },
      },
    },
    async (request, reply) => {
      const out = await svc.update(
        { actor: actorOf(request), requestId: request.id },
        request.params.slug,
        request.headers['if-match'],
        request.body as TenantPatch,
      );
      reply.header('etag', etagOf(out.tenant));
      return out;
    },
  );

  app.get(
    '/v1/tenants/:slug/connection',
    {
      config: { permission: 'connection:read' },
      schema: {
        operationId: 'getTenantConnection',
        summary: "Read the tenant's data-plane connection descriptor (audited)",
        tags: ['tenants'],
        security,
        params: SlugParams,
        response: {
          200: ConnectionSchema,
          ...errors(
            'VALIDATION_FAILED',
            ...AUTH_ERRORS,
            'TENANT_NOT_FOUND',
            'TENANT_NOT_ACTIVE',
            'TENANT_SUSPENDED',
            'OPERATION_IN_PROGRESS',
            'SECRET_UNAVAILABLE',
            'PROVIDER_FAILED',
          ),
        },
      },
    },
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      return svc.connection({ actor: actorOf(request), requestId: request.id }, request.params.slug);
    },
  );

  app.delete(
    '/v1/tenants/:slug',
    {
      config: { permission: 'tenants:offboard' },
      schema: {
        operationId: 'offboardTenant',
        summary: 'Offboard a tenant: removes its data, role and key; keeps its audit trail',
        tags: ['tenants'],
        security,
        params: SlugParams,
        querystring: Type.Object({
          export: Type.Boolean({
            default: false,
            description:
              'take a final export first (its archive is kept for TENANTRY_FINAL_EXPORT_RETENTION_DAYS; GET /v1/tenants/{slug}/exports lists it)',
          }),
        }),
        headers: Type.Object({ confirm: Type.Optional(Text({ maxLength: 100 })) }),
        response: {
          202: Accepted,
          ...errors(
            'VALIDATION_FAILED',
            'CONFIRMATION_REQUIRED',
            ...AUTH_ERRORS,
            'TENANT_NOT_FOUND',
            'OPERATION_IN_PROGRESS',
            'TIER_NOT_AVAILABLE_ON_TARGET',
            'EXPORT_NOT_AVAILABLE_ON_TARGET',
          ),
        },
      },
    },
    async (request, reply) => {
      const out = await svc.offboard(
        { actor: actorOf(request), requestId: request.id },
        request.params.slug,
        request.headers.confirm,
        { export: request.query.export },
      );
      return reply.status(202).send(out.body);
    },
  );
};

export default tenantRoutes;
