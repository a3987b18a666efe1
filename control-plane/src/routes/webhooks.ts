import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type Static, Type } from '@sinclair/typebox';
import { EVENT_TYPES, type EventType } from '../domain/events.js';
import { actorOf } from '../plugins/auth.js';
import { EventTypeT } from './events.js';
import { AUTH_ERRORS, errors, MAX_ID, security, Text } from './schemas.js';

const WebhookId = Type.String({ pattern: '^wh_[0-9a-f]{28}$', description: 'a webhook id (wh_…)' });

export const CreateWebhookBody = Type.Object(
  {
    url: Type.String({
      format: 'uri',
      pattern: '^https?://[^\\s\\u0000-\\u001F\\u007F-\\u009F]+$',
      maxLength: 2000,
      description:
        'http(s); refused (422 WEBHOOK_URL_REFUSED) when its host is or resolves to a private, loopback or link-local address, unless TENANTRY_WEBHOOK_ALLOWED_NETWORKS allows it',
    }),
    eventTypes: Type.Array(EventTypeT, { minItems: 1, maxItems: EVENT_TYPES.length, uniqueItems: true }),
    description: Type.Optional(Text({ minLength: 1, maxLength: 200 })),
  },
  { additionalProperties: false },
);
export type CreateWebhookBodyT = Static<typeof CreateWebhookBody>;

export const WebhookSchema = Type.Object({
  id: Type.String(),
  url: Type.String(),
  eventTypes: Type.Array(Type.String()),
  description: Type.Union([Type.String(), Type.Null()]),
  status: Type.Union(
    ['enabled', 'disabled', 'deleted'].map((s) => Type.Literal(s)),
    {
      description:
        'disabled: every delivery failed for TENANTRY_WEBHOOK_DISABLE_AFTER_MS (a webhook.disabled event said so)',
    },
  ),
  disabledReason: Type.Union([Type.String(), Type.Null()]),
  failingSince: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  createdBy: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});

const DeliverySchema = Type.Object({
  id: Type.Integer(),
  eventId: Type.String(),
  eventType: Type.String(),
  eventSeq: Type.Integer(),
  tenantSlug: Type.Union([Type.String(), Type.Null()]),
  status: Type.Union(['pending', 'delivered', 'abandoned'].map((s) => Type.Literal(s))),
  attempts: Type.Integer(),
  lastAttemptAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  lastStatus: Type.Union([Type.Integer(), Type.Null()], {
    description: "the receiver's HTTP status; null: no answer",
  }),
  lastError: Type.Union([Type.String(), Type.Null()]),
  nextAttemptAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  deliveredAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
});

const Params = Type.Object({ id: WebhookId });

/** Webhooks and their delivery log (services/webhooks.ts, webhooks/; docs/lifecycle.md). Admin only. */
const webhookRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const svc = app.services.webhooks;

  app.post(
    '/v1/webhooks',
    {
      config: { permission: 'webhooks:manage' },
      schema: {
        operationId: 'createWebhook',
        summary: 'Register a webhook; its signing secret is shown once',
        description:
          'Deliveries are signed the Standard Webhooks way (webhook-id, webhook-timestamp, webhook-signature `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, secret `whsec_…`), ' +
          'retried with exponential backoff, in order per tenant. The secret is in this response only.',
        tags: ['webhooks'],
        security,
        body: CreateWebhookBody,
        response: {
          201: Type.Object({
            webhook: WebhookSchema,
            secret: Type.String({ description: 'whsec_…: shown once; verify deliveries with it' }),
          }),
          ...errors(
            'VALIDATION_FAILED',
            'PAYLOAD_TOO_LARGE',
            ...AUTH_ERRORS,
            'WEBHOOK_URL_REFUSED',
            'WEBHOOKS_NOT_AVAILABLE_ON_TARGET',
          ),
        },
      },
    },
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      const out = await svc.create(
        { actor: actorOf(request), requestId: request.id },
        {
          url: request.body.url,
          eventTypes: request.body.eventTypes as EventType[],
          ...(request.body.description !== undefined ? { description: request.body.description } : {}),
        },
      );
      return reply.status(201).send(out);
    },
  );

  app.get(
    '/v1/webhooks',
    {
      config: { permission: 'webhooks:manage' },
      schema: {
        operationId: 'listWebhooks',
        summary: 'Webhooks (not their secrets)',
        tags: ['webhooks'],
        security,
        response: { 200: Type.Object({ items: Type.Array(WebhookSchema) }), ...errors(...AUTH_ERRORS) },
      },
    },
    async () => ({ items: await svc.list() }),
  );

  app.get(
    '/v1/webhooks/:id',
    {
      config: { permission: 'webhooks:manage' },
      schema: {
        operationId: 'getWebhook',
        summary: 'One webhook (not its secret)',
        tags: ['webhooks'],
        security,
        params: Params,
        response: { 200: WebhookSchema, ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'WEBHOOK_NOT_FOUND') },
      },
    },
    async (request) => svc.get(request.params.id),
  );

  app.delete(
    '/v1/webhooks/:id',
    {
      config: { permission: 'webhooks:manage' },
      schema: {
        operationId: 'deleteWebhook',
        summary: 'Delete a webhook: nothing more is delivered to it, and its secret is destroyed',
        tags: ['webhooks'],
        security,
        params: Params,
        response: { 200: WebhookSchema, ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'WEBHOOK_NOT_FOUND') },
      },
    },
    async (request) => svc.delete({ actor: actorOf(request), requestId: request.id }, request.params.id),
  );

  app.get(
    '/v1/webhooks/:id/deliveries',
    {
      config: { permission: 'webhooks:manage' },
      schema: {
        operationId: 'listWebhookDeliveries',
        summary: "A webhook's delivery log, newest first",
        description:
          'One entry per event: its status, attempts, the last answer or error, and the next attempt.',
        tags: ['webhooks'],
        security,
        params: Params,
        querystring: Type.Object({
          limit: Type.Integer({ minimum: 1, maximum: 500, default: 100 }),
          before: Type.Optional(
            Type.Integer({ minimum: 1, maximum: MAX_ID, description: 'the id of the last entry seen' }),
          ),
          status: Type.Optional(
            Type.Union(['pending', 'delivered', 'abandoned'].map((s) => Type.Literal(s))),
          ),
        }),
        response: {
          200: Type.Object({ items: Type.Array(DeliverySchema) }),
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'WEBHOOK_NOT_FOUND'),
        },
      },
    },
    async (request) => {
      const { limit, before, status } = request.query;
      return {
        items: await svc.deliveries(request.params.id, {
          limit,
          ...(before ? { before } : {}),
          ...(status ? { status } : {}),
        }),
      };
    },
  );
};

export default webhookRoutes;
