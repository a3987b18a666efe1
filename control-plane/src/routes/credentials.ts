import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type Static, Type } from '@sinclair/typebox';
import { actorOf } from '../plugins/auth.js';
import { Accepted, AUTH_ERRORS, errors, Slug, security } from './schemas.js';

/** The longest grace period a request may ask for: a week. */
export const MAX_GRACE_SECONDS = 7 * 24 * 3600;

export const RotateCredentialsBody = Type.Object(
  {
    graceSeconds: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_GRACE_SECONDS,
        description:
          "How long the old login keeps working once the new password is published (default: the tier's graceMinutes in templates/tiers.json, else 60 minutes). Keep it above the data plane's descriptor cache TTL.",
      }),
    ),
  },
  { additionalProperties: false },
);
export type RotateCredentialsBodyT = Static<typeof RotateCredentialsBody>;

const REFUSALS = [
  ...AUTH_ERRORS,
  'TENANT_NOT_FOUND',
  'OPERATION_IN_PROGRESS',
  'TENANT_NOT_ACTIVE',
  'ROTATION_NOT_AVAILABLE_ON_TARGET',
] as const;

/** Credential and key rotation of a tenant (services/credentials.ts; docs/credentials.md). */
const credentialRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const svc = app.services.credentials;

  app.post(
    '/v1/tenants/:slug/credential-rotations',
    {
      config: { permission: 'tenants:rotate' },
      schema: {
        operationId: 'rotateTenantCredentials',
        summary: "Rotate a tenant's database password (alternating logins, no downtime)",
        description:
          "Sets a new password on the idle one of the tenant's two logins and publishes it as the current version of its " +
          'secret (the old version stays as the previous one); the old login keeps working for the grace period, then ' +
          "loses its password and its sessions. A pool tenant shares the pool's login: that login rotates, for every " +
          "pool tenant. 409 CREDENTIALS_IN_GRACE while the previous rotation's old login is still in its grace period; " +
          '409 OPERATION_IN_PROGRESS while another operation of the tenant (a promotion, say) is in flight.',
        tags: ['credentials'],
        security,
        params: Type.Object({ slug: Slug }),
        body: RotateCredentialsBody,
        response: {
          202: Accepted,
          ...errors('VALIDATION_FAILED', 'PAYLOAD_TOO_LARGE', ...REFUSALS, 'CREDENTIALS_IN_GRACE'),
        },
      },
    },
    async (request, reply) => {
      const { graceSeconds } = request.body;
      const out = await svc.rotateCredentials(
        { actor: actorOf(request), requestId: request.id },
        request.params.slug,
        graceSeconds === undefined ? {} : { graceMs: graceSeconds * 1000 },
      );
      return reply.status(202).send(out.body);
    },
  );

  app.post(
    '/v1/tenants/:slug/key-rotations',
    {
      config: { permission: 'tenants:rotate' },
      schema: {
        operationId: 'rotateTenantKey',
        summary: "Rotate a tenant's data key",
        description:
          "A new data key takes the tenant's key alias; every version of its secrets is re-encrypted under it and the " +
          'old key is destroyed, so nothing stays readable under it. 422 ROTATION_NOT_AVAILABLE_ON_TARGET where the key ' +
          'store is KMS (a KMS key rotates its own material).',
        tags: ['credentials'],
        security,
        params: Type.Object({ slug: Slug }),
        response: { 202: Accepted, ...errors('VALIDATION_FAILED', ...REFUSALS) },
      },
    },
    async (request, reply) => {
      const out = await svc.rotateKey(
        { actor: actorOf(request), requestId: request.id },
        request.params.slug,
      );
      return reply.status(202).send(out.body);
    },
  );
};

export default credentialRoutes;
