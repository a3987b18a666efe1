import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type Static, Type } from '@sinclair/typebox';
import { SUSPENSION_REASONS } from '../domain/lifecycle.js';
import { actorOf } from '../plugins/auth.js';
import { Accepted, AUTH_ERRORS, errors, Slug, security, Text } from './schemas.js';

export const SuspendBody = Type.Object(
  {
    reason: Type.Union(
      SUSPENSION_REASONS.map((r) => Type.Literal(r)),
      { description: 'why: sales-ops may suspend (and reactivate) for non-payment only' },
    ),
    note: Type.Optional(
      Text({ minLength: 1, maxLength: 500, description: 'free text for the audit log and the event' }),
    ),
  },
  { additionalProperties: false },
);
export type SuspendBodyT = Static<typeof SuspendBody>;

const REFUSALS = [
  ...AUTH_ERRORS,
  'TENANT_NOT_FOUND',
  'OPERATION_IN_PROGRESS',
  'OPERATION_NOT_AVAILABLE_ON_TARGET',
] as const;

/** Suspension and reactivation of a tenant (services/suspension.ts; docs/lifecycle.md). */
const suspensionRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const svc = app.services.suspension;

  app.post(
    '/v1/tenants/:slug/suspension',
    {
      config: { permission: 'tenants:suspend' },
      schema: {
        operationId: 'suspendTenant',
        summary: 'Suspend a tenant: it keeps every row, and the data plane cannot use it',
        description:
          'From the moment this commits, the descriptor answers 409 TENANT_SUSPENDED. The `suspend` operation then cuts the data plane off: ' +
          'bridge and silo, every login of the tenant NOLOGIN and its open sessions ended; pool, its rows frozen in the database (writes refused with SQLSTATE 25006). ' +
          'Promotions and rollbacks are refused (409 TENANT_SUSPENDED) and fleet rollouts skip it. Sent to a suspended tenant, it re-applies the suspension. ' +
          'sales-ops may suspend for non-payment only (403 otherwise). Audited; tenant.suspended is sent once the operation succeeded.',
        tags: ['tenants'],
        security,
        params: Type.Object({ slug: Slug }),
        body: SuspendBody,
        response: {
          202: Accepted,
          ...errors('VALIDATION_FAILED', 'PAYLOAD_TOO_LARGE', ...REFUSALS, 'TENANT_NOT_ACTIVE'),
        },
      },
    },
    async (request, reply) => {
      const out = await svc.suspend({ actor: actorOf(request), requestId: request.id }, request.params.slug, {
        reason: request.body.reason as SuspendBodyT['reason'],
        ...(request.body.note !== undefined ? { note: request.body.note } : {}),
      });
      return reply.status(202).send(out.body);
    },
  );

  app.delete(
    '/v1/tenants/:slug/suspension',
    {
      config: { permission: 'tenants:suspend' },
      schema: {
        operationId: 'reactivateTenant',
        summary: 'Reactivate a suspended tenant',
        description:
          "The `reactivate` operation gives back exactly what the suspension took (the logins that could log in, the pool rows' writes); the tenant is `active` again, and its descriptor served, once it succeeded. " +
          'sales-ops may lift a non-payment suspension only. Audited; tenant.reactivated is sent once the operation succeeded.',
        tags: ['tenants'],
        security,
        params: Type.Object({ slug: Slug }),
        response: { 202: Accepted, ...errors('VALIDATION_FAILED', ...REFUSALS, 'TENANT_NOT_SUSPENDED') },
      },
    },
    async (request, reply) => {
      const out = await svc.reactivate(
        { actor: actorOf(request), requestId: request.id },
        request.params.slug,
      );
      return reply.status(202).send(out.body);
    },
  );
};

export default suspensionRoutes;
