import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { listAudit } from '../db/repo.js';
import { errors, Slug, security } from './schemas.js';

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

const auditRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/audit',
    {
      config: { permission: 'audit:read' },
      schema: {
        summary: 'Read the append-only audit log',
        tags: ['audit'],
        security,
        querystring: Type.Object({
          tenant: Type.Optional(Slug),
          limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
          after: Type.Optional(
            Type.Integer({ minimum: 0, description: 'return records with id greater than this' }),
          ),
        }),
        response: { 200: Type.Object({ items: Type.Array(AuditRecord) }), ...errors(400, 401, 403) },
      },
    },
    async (request) => {
      const { tenant, limit, after } = request.query;
      return {
        items: await listAudit(app.services.db, {
          limit,
          ...(tenant ? { tenantSlug: tenant } : {}),
          ...(after ? { after } : {}),
        }),
      };
    },
  );
};

export default auditRoutes;
