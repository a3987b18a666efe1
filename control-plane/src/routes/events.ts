import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { EVENT_TYPES } from '../domain/events.js';
import { AUTH_ERRORS, errors, MAX_ID, Slug, security } from './schemas.js';

export const EventTypeT = Type.Union(EVENT_TYPES.map((t) => Type.Literal(t)));

export const EventSchema = Type.Object({
  id: Type.String({ description: 'unique; the webhook-id a webhook delivery of it carries' }),
  seq: Type.Integer({ description: 'its place in the published order: pass the last one seen as `after`' }),
  type: EventTypeT,
  tenantId: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
  tenantSlug: Type.Union([Type.String(), Type.Null()]),
  operationId: Type.Union([Type.String(), Type.Null()]),
  data: Type.Record(Type.String(), Type.Unknown(), { description: 'what happened (never a credential)' }),
  createdAt: Type.String({ format: 'date-time', description: 'when the change committed' }),
});

/** The lifecycle events, for consumers that pull (services/events.ts; docs/lifecycle.md). */
const eventRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/events',
    {
      config: { permission: 'events:read' },
      schema: {
        operationId: 'listEvents',
        summary: 'Lifecycle events after a position, in order',
        description:
          'Each event was written in the transaction of its change (an outbox) and is numbered once that committed, so reading on from the last `seq` seen (`after`) never misses one. ' +
          'A consumer stores `next` and passes it as `after` next time. Filter by tenant (slug) or type (repeatable).',
        tags: ['events'],
        security,
        querystring: Type.Object({
          after: Type.Integer({ minimum: 0, maximum: MAX_ID, default: 0 }),
          limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
          tenant: Type.Optional(Slug),
          type: Type.Optional(Type.Array(EventTypeT, { maxItems: EVENT_TYPES.length })),
        }),
        response: {
          200: Type.Object({
            items: Type.Array(EventSchema),
            next: Type.Integer({
              description: 'the `after` of the next read (the last seq here, or the one given)',
            }),
          }),
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'TENANT_NOT_FOUND'),
        },
      },
    },
    async (request) => {
      const { after, limit, tenant, type } = request.query;
      return app.services.events.list({
        after,
        limit,
        ...(tenant ? { tenant } : {}),
        ...(type?.length ? { types: type as string[] } : {}),
      });
    },
  );
};

export default eventRoutes;
