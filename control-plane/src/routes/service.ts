import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { TenantryError } from '../domain/errors.js';
import { errors } from './schemas.js';

const serviceRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness and database reachability',
        tags: ['service'],
        response: { 200: Type.Object({ status: Type.Literal('ok'), target: Type.String() }), ...errors() },
      },
    },
    async () => {
      // Any failure here (refused, lost, out of connections) means "not healthy": 503, never 500.
      await app.services.db.query('SELECT 1').catch((cause: unknown) => {
        throw new TenantryError('DATABASE_UNAVAILABLE', 'the control-plane database is unreachable', {
          retryable: true,
          cause,
        });
      });
      return { status: 'ok' as const, target: app.services.engine.target };
    },
  );

  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics',
        tags: ['service'],
        produces: ['text/plain'],
        response: { 200: Type.String(), ...errors() },
      },
    },
    async (_request, reply) => {
      const { registry } = app.services.metrics;
      reply.header('content-type', registry.contentType);
      return registry.metrics();
    },
  );
};

export default serviceRoutes;
