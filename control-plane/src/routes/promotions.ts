import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { actorOf } from '../plugins/auth.js';
import { Accepted, AUTH_ERRORS, errors, Slug, security, TierT } from './schemas.js';

const promotionRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const svc = app.services.tenants;

  app.post(
    '/v1/tenants/:slug/promotions',
    {
      config: { permission: 'tenants:promote' },
      schema: {
        operationId: 'promoteTenant',
        summary: 'Promote a tenant to a stronger tier, online (pool→bridge, pool→silo, bridge→silo)',
        description:
          'Copies the rows, streams later changes through a row-filtered logical replication slot, freezes only this ' +
          "tenant's writes in the database while the last changes drain, verifies counts and checksums, then cuts over. " +
          'Progress (current step, rows copied per table, replication lag, write-freeze window) is on the operation.',
        tags: ['promotions'],
        security,
        params: Type.Object({ slug: Slug }),
        body: Type.Object({ targetTier: TierT }, { additionalProperties: false }),
        response: {
          202: Accepted,
          ...errors(
            'VALIDATION_FAILED',
            'PAYLOAD_TOO_LARGE',
            ...AUTH_ERRORS,
            'TENANT_NOT_FOUND',
            'OPERATION_IN_PROGRESS',
            'TENANT_NOT_ACTIVE',
            'TENANT_SUSPENDED',
            'CAPACITY_EXCEEDED',
            'PROMOTION_NOT_ALLOWED',
            'TIER_NOT_AVAILABLE_ON_TARGET',
            'PROMOTION_NOT_AVAILABLE_ON_TARGET',
            'DATAPLANE_UNAVAILABLE',
          ),
        },
      },
    },
    async (request, reply) => {
      const out = await svc.promote(
        { actor: actorOf(request), requestId: request.id },
        request.params.slug,
        request.body.targetTier,
      );
      return reply.status(202).send(out.body);
    },
  );

  app.post(
    '/v1/tenants/:slug/promotions/:operationId/rollback',
    {
      config: { permission: 'tenants:promote' },
      schema: {
        operationId: 'rollbackPromotion',
        summary: 'Within the rollback window, move the tenant back to its source placement',
        description:
          'Rows written after the cutover come back with it. 422 ROLLBACK_NOT_AVAILABLE_ON_TARGET on a target that cannot move them back.',
        tags: ['promotions'],
        security,
        params: Type.Object({ slug: Slug, operationId: Type.String({ pattern: '^op_[0-9a-f]{28}$' }) }),
        response: {
          202: Accepted,
          ...errors(
            'VALIDATION_FAILED',
            ...AUTH_ERRORS,
            'TENANT_NOT_FOUND',
            'OPERATION_NOT_FOUND',
            'OPERATION_IN_PROGRESS',
            'TENANT_SUSPENDED',
            'ROLLBACK_NOT_AVAILABLE',
            'ROLLBACK_NOT_AVAILABLE_ON_TARGET',
          ),
        },
      },
    },
    async (request, reply) => {
      const out = await svc.rollback(
        { actor: actorOf(request), requestId: request.id },
        request.params.slug,
        request.params.operationId,
      );
      return reply.status(202).send(out.body);
    },
  );
};

export default promotionRoutes;
