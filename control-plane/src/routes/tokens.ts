import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { appendAudit } from '../db/repo.js';
import { createToken, listTokens, revokeToken } from '../db/tokens.js';
import { ROLES } from '../domain/auth.js';
import { TenantryError } from '../domain/errors.js';
import { actorOf } from '../plugins/auth.js';
import { errors, security } from './schemas.js';

const RoleT = Type.Union(ROLES.map((r) => Type.Literal(r)));
const TokenInfo = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: RoleT,
  createdAt: Type.String({ format: 'date-time' }),
  revokedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
});

const tokenRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { db, tokenCache } = app.services;

  app.post(
    '/v1/tokens',
    {
      config: { permission: 'tokens:manage' },
      schema: {
        summary: 'Create an API token (the token is shown once)',
        tags: ['tokens'],
        security,
        body: Type.Object(
          { name: Type.String({ minLength: 1, maxLength: 100 }), role: RoleT },
          { additionalProperties: false },
        ),
        response: { 201: Type.Object({ token: Type.String(), info: TokenInfo }), ...errors(400, 401, 403) },
      },
    },
    async (request, reply) => {
      const actor = actorOf(request);
      const out = await db.tx(async (q) => {
        const created = await createToken(q, {
          name: request.body.name,
          role: request.body.role,
          createdBy: actor.id,
        });
        await appendAudit(q, {
          actor,
          action: 'token.create',
          requestId: request.id,
          details: { tokenId: created.info.id, role: created.info.role, name: created.info.name },
        });
        return created;
      });
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
    async () => ({ items: await listTokens(db) }),
  );

  app.delete(
    '/v1/tokens/:id',
    {
      config: { permission: 'tokens:manage' },
      schema: {
        summary: 'Revoke an API token',
        tags: ['tokens'],
        security,
        params: Type.Object({ id: Type.String({ pattern: '^tok_[0-9a-f]{28}$' }) }),
        response: { 200: TokenInfo, ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => {
      const actor = actorOf(request);
      const info = await db.tx(async (q) => {
        const revoked = await revokeToken(q, request.params.id);
        if (!revoked) throw new TenantryError('TOKEN_NOT_FOUND', `no token ${request.params.id}`);
        await appendAudit(q, {
          actor,
          action: 'token.revoke',
          requestId: request.id,
          details: { tokenId: revoked.id },
        });
        return revoked;
      });
      tokenCache.clear();
      return info;
    },
  );
};

export default tokenRoutes;
