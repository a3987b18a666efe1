import { randomUUID } from 'node:crypto';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import type { Db } from './db/db.js';
import type { Engine } from './domain/ports.js';
import type { DriftService } from './drift/service.js';
import type { Metrics } from './metrics.js';
import authPlugin, { type TokenCache } from './plugins/auth.js';
import errorsPlugin from './plugins/errors.js';
import auditRoutes from './routes/audit.js';
import driftRoutes from './routes/drift.js';
import operationRoutes from './routes/operations.js';
import promotionRoutes from './routes/promotions.js';
import { ErrorBody } from './routes/schemas.js';
import serviceRoutes from './routes/service.js';
import tenantRoutes from './routes/tenants.js';
import tokenRoutes from './routes/tokens.js';
import type { TenantService } from './services/tenants.js';
import type { TokenService } from './services/tokens.js';

export interface Services {
  db: Db;
  engine: Engine;
  tenants: TenantService;
  tokens: TokenService;
  drift: DriftService;
  metrics: Metrics;
  tokenCache: TokenCache;
}

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
  }
}

export const API_VERSION = '0.1.0';

/**
 * Server options every Tenantry Fastify instance uses (server.ts and tests alike): unknown
 * body fields are rejected rather than silently dropped, and request ids are UUIDs.
 */
export const serverOptions = {
  bodyLimit: 64 * 1024,
  genReqId: () => randomUUID(),
  requestIdHeader: false as const,
  return503OnClosing: true,
  ajv: {
    customOptions: {
      removeAdditional: false as const,
      coerceTypes: 'array' as const,
      useDefaults: true,
      allErrors: false,
    },
  },
};

/**
 * The whole HTTP app as one plugin, registered in a fixed order: error handling and auth,
 * then the services, then the routes. server.ts only listens; tests drive this with inject.
 */
const app: FastifyPluginAsync<{ services: Services }> = async (instance, opts) => {
  const f = instance.withTypeProvider<TypeBoxTypeProvider>() as FastifyInstance;
  f.addSchema(ErrorBody);
  await f.register(errorsPlugin);
  await f.register(
    fp(
      async (i) => {
        i.decorate('services', opts.services);
      },
      { name: 'tenantry-services' },
    ),
  );
  await f.register(authPlugin, { cache: opts.services.tokenCache });
  await f.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Tenantry',
        version: API_VERSION,
        description:
          'Control plane that provisions SaaS tenants on the pool, bridge, silo and account tiers.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });
  await f.register(swaggerUi, { routePrefix: '/docs' });
  await f.register(serviceRoutes);
  await f.register(tenantRoutes);
  await f.register(operationRoutes);
  await f.register(promotionRoutes);
  await f.register(tokenRoutes);
  await f.register(auditRoutes);
  await f.register(driftRoutes);
};

export default fp(app, { name: 'tenantry-app' });
