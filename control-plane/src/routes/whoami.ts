import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type Static, Type } from '@sinclair/typebox';
import { can, PERMISSIONS, ROLES } from '../domain/auth.js';
import { actorOf } from '../plugins/auth.js';
import { AUTH_ERRORS, errors, security } from './schemas.js';

export const WhoamiSchema = Type.Object({
  id: Type.String({ description: 'the token id (tok_…), never its value' }),
  name: Type.String(),
  role: Type.Union(ROLES.map((r) => Type.Literal(r))),
  permissions: Type.Array(Type.Union(PERMISSIONS.map((p) => Type.Literal(p))), {
    description: "what the role may do: the same table the server enforces (a client's buttons follow it)",
  }),
});
export type WhoamiT = Static<typeof WhoamiSchema>;

const whoamiRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/whoami',
    {
      config: { permission: 'self:read' },
      schema: {
        operationId: 'whoami',
        summary: 'Who the token is: its name, role and permissions',
        description:
          'Every role may ask. The web console reads it at sign-in to show only what the role may do.',
        tags: ['tokens'],
        security,
        response: { 200: WhoamiSchema, ...errors(...AUTH_ERRORS) },
      },
    },
    async (request): Promise<WhoamiT> => {
      const { id, name, role } = actorOf(request);
      const r = role as WhoamiT['role'];
      return { id, name, role: r, permissions: PERMISSIONS.filter((p) => can(r, p)) };
    },
  );
};

export default whoamiRoutes;
