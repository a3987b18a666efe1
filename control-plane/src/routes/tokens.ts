import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { ROLES } from '../domain/auth.js';
import { actorOf } from '../plugins/auth.js';
import { AUTH_ERRORS, errors, security, Text } from './schemas.js';

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
        operationId: 'createToken',
        summary: 'Create an API token (the token is shown once)',
        tags: ['tokens'],
        security,
        body: Type.Object(
          { name: Text({ minLength: 1, maxLength: 100 }), role: RoleT },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({ token: Type.String(), info: TokenInfo }),
          ...errors('VALIDATION_FAILED', 'PAYLOAD_TOO_LARGE', ...AUTH_ERRORS),
        },
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
        operationId: 'listTokens',
        summary: 'List API tokens (never their values)',
        tags: ['tokens'],
        security,
        response: { 200: Type.Object({ items: Type.Array(TokenInfo) }), ...errors(...AUTH_ERRORS) },
      },
    },
    async () => ({ items: await svc.list() }),
  );

  app.delete(
    '/v1/tokens/:id',
    {
      config: { permission: 'tokens:manage' },
      schema: {
        operationId: 'revokeToken',
        summary: 'Revoke an API token',
        description:
          'Takes effect on every API process as soon as the revoke commits: each one is notified (Postgres ' +
          'NOTIFY) and drops the token from its lookup cache. A process caches lookups (5 s) only while it is ' +
          'listening for revocations; one whose listening session died unnoticed accepts the revoked token for ' +
          'at most 5 s more.',
        tags: ['tokens'],
        security,
        params: Type.Object({ id: Type.String({ pattern: '^tok_[0-9a-f]{28}$' }) }),
        response: { 200: TokenInfo, ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'TOKEN_NOT_FOUND') },
      },
    },
    async (request) => svc.revoke({ actor: actorOf(request), requestId: request.id }, request.params.id),
  );
};

export default tokenRoutes;
