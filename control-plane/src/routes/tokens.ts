import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { ROLES } from '../domain/auth.js';
import { actorOf } from '../plugins/auth.js';
import { errors, security, Text } from './schemas.js';

const RoleT = Type.Union(ROLES.map((r) => Type.Literal(r)));
const TokenInfo = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: RoleT,
  createdAt: Type.String({ format: 'date-time' }),
  revokedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
});

const tokenRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const svc = app.services.tokens;

  app.post(
    '/v1/tokens',
    {
      config: { permission: 'tokens:manage' },
      schema: {
        summary: 'Create an API token (the token is shown once)',
        tags: ['tokens'],
        security,
        body: Type.Object(
          { name: Text({ minLength: 1, maxLength: 100 }), role: RoleT },
          { additionalProperties: false },
        ),
        response: { 201: Type.Object({ token: Type.String(), info: TokenInfo }), ...errors(400, 401, 403) },
      },
    },
    async (request, reply) => {
      const out = await svc.create({ actor: actorOf(request), requestId: request.id }, request.body);
      reply.header('cache-control', 'no-store');
      return reply.status(201).send(out);
    },
  );

  app.get(
    '/v1/tokens',
    {
      config: { permission: 'tokens:manage' },
      schema: {
        summary: 'List API tokens (never their values)',
        tags: ['tokens'],
        security,
        response: { 200: Type.Object({ items: Type.Array(TokenInfo) }), ...errors(401, 403) },
      },
    },
    async () => ({ items: await svc.list() }),
  );

  app.delete(
    '/v1/tokens/:id',
    {
      config: { permission: 'tokens:manage' },
      schema: {
        summary: 'Revoke an API token',
        description:
          'Takes effect on every API process as soon as the revoke commits: each one is notified (Postgres ' +
          'NOTIFY) and drops the token from its lookup cache. A process caches lookups (5 s) only while it is ' +
          'listening for revocations; one whose listening session died unnoticed accepts the revoked token for ' +
          'at most 5 s more.',
        tags: ['tokens'],
        security,
        params: Type.Object({ id: Type.String({ pattern: '^tok_[0-9a-f]{28}$' }) }),
        response: { 200: TokenInfo, ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => svc.revoke({ actor: actorOf(request), requestId: request.id }, request.params.id),
  );
};

export default tokenRoutes;
