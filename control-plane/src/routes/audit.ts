import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { listAudit } from '../db/audit.js';
import { findTenantById, findTenantBySlug } from '../db/repo.js';
import { TenantryError } from '../domain/errors.js';
import type { Tenant } from '../domain/tenant.js';
import { AUTH_ERRORS, errors, MAX_ID, Slug, security, TenantStatusT, Uuid } from './schemas.js';

const AuditRecord = Type.Object({
  id: Type.Integer(),
  at: Type.String({ format: 'date-time' }),
  actorId: Type.Union([Type.String(), Type.Null()]),
  actorName: Type.Union([Type.String(), Type.Null()]),
  role: Type.Union([Type.String(), Type.Null()]),
  action: Type.String(),
  tenantId: Type.Union([Type.String(), Type.Null()]),
  tenantSlug: Type.Union([Type.String(), Type.Null()]),
  requestId: Type.Union([Type.String(), Type.Null()]),
  operationId: Type.Union([Type.String(), Type.Null()]),
  details: Type.Record(Type.String(), Type.Unknown()),
});

const ResolvedTenant = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    slug: Type.String(),
    status: TenantStatusT,
    createdAt: Type.String({ format: 'date-time' }),
  },
  { description: 'the tenant whose trail this is (present when filtered by tenant or tenantId)' },
);

const auditRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/audit',
    {
      config: { permission: 'audit:read' },
      schema: {
        operationId: 'listAudit',
        summary: 'Read the append-only audit log',
        description:
          'Filter by `tenantId`, or by `tenant` (a slug). A slug is freed when its tenant is offboarded and may ' +
          'be taken by a new tenant, so `tenant` means the current tenant with that slug (the live one, else the ' +
          "most recently created); read an earlier tenant's trail by its `tenantId`.",
        tags: ['audit'],
        security,
        querystring: Type.Object({
          tenant: Type.Optional(Slug),
          tenantId: Type.Optional(Uuid),
          limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
          after: Type.Optional(
            Type.Integer({
              minimum: 0,
              maximum: MAX_ID,
              description: 'return records with id greater than this',
            }),
          ),
        }),
        response: {
          200: Type.Object({ tenant: Type.Optional(ResolvedTenant), items: Type.Array(AuditRecord) }),
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'TENANT_NOT_FOUND'),
        },
      },
    },
    async (request) => {
      const { tenant: slug, tenantId, limit, after } = request.query;
      if (slug && tenantId)
        throw new TenantryError('VALIDATION_FAILED', 'filter by tenant or tenantId, not both');
      let tenant: Tenant | null = null;
      if (slug || tenantId) {
        const { db } = app.services;
        tenant = slug ? await findTenantBySlug(db, slug) : await findTenantById(db, tenantId as string);
        if (!tenant) throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug ?? tenantId}`);
      }
      const items = await listAudit(app.services.db, {
        limit,
        ...(tenant ? { tenantId: tenant.id } : {}),
        ...(after ? { after } : {}),
      });
      return tenant
        ? {
            tenant: { id: tenant.id, slug: tenant.slug, status: tenant.status, createdAt: tenant.createdAt },
            items,
          }
        : { items };
    },
  );
};

export default auditRoutes;
