import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type Static, Type } from '@sinclair/typebox';
import { decodeCursor, listTenants } from '../db/repo.js';
import { TenantryError } from '../domain/errors.js';
import { actorOf } from '../plugins/auth.js';
import {
  Accepted,
  AUTH_ERRORS,
  Cursor,
  errors,
  Page,
  Slug,
  security,
  TenantDetailSchema,
  TenantSchema,
  TenantStatusT,
  Text,
  TierT,
} from './schemas.js';

export const CreateTenantBody = Type.Object(
  {
    slug: Slug,
    name: Text({ minLength: 1, maxLength: 200 }),
    tier: TierT,
    region: Type.Optional(Type.String({ pattern: '^[a-z]{2}(-[a-z]+)+-\\d$', maxLength: 30 })),
    plan: Type.Optional(Text({ minLength: 1, maxLength: 60 })),
    contactEmail: Type.Optional(Text({ format: 'email', maxLength: 254 })),
  },
  { additionalProperties: false },
);
export type CreateTenantBodyT = Static<typeof CreateTenantBody>;

const SlugParams = Type.Object({ slug: Slug });

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
          limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
          cursor: Type.Optional(Cursor),
        }),
        response: {
          200: Page(TenantSchema),
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS),
        },
      },
    },
    async (request) => {
      const { tier, status, limit, cursor } = request.query;
      const decoded = cursor === undefined ? undefined : decodeCursor(cursor);
      if (decoded === null)
        throw new TenantryError('VALIDATION_FAILED', 'cursor is not one this API returned');
      return listTenants(app.services.db, {
        limit,
        ...(tier ? { tier } : {}),
        ...(status ? { status: status as never } : {}),
        ...(decoded ? { cursor: decoded } : {}),
      });
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
    async (request) => svc.get(request.params.slug),
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
          ),
        },
      },
    },
    async (request, reply) => {
      const out = await svc.offboard(
        { actor: actorOf(request), requestId: request.id },
        request.params.slug,
        request.headers.confirm,
      );
      return reply.status(202).send(out.body);
    },
  );
};

export default tenantRoutes;
