import { randomUUID } from 'node:crypto';
import AjvCompiler from '@fastify/ajv-compiler';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { type FastifyInstance, type FastifyPluginAsync, LogController } from 'fastify';
import fp from 'fastify-plugin';
import consolePlugin from './console/plugin.js';
import type { Db } from './db/db.js';
import type { Engine } from './domain/ports.js';
import type { DriftService } from './drift/service.js';
import { openapiTransform, TAGS } from './http/openapi.js';
import { requestLogger } from './http/request-logger.js';
import type { Metrics } from './lib/metrics.js';
import accessLog from './plugins/access-log.js';
import authPlugin, { type TokenCache } from './plugins/auth.js';
import errorsPlugin, { replyWithError } from './plugins/errors.js';
import type { Readiness } from './readiness.js';
import auditRoutes from './routes/audit.js';
import credentialRoutes from './routes/credentials.js';
import driftRoutes from './routes/drift.js';
import eventRoutes from './routes/events.js';
import exportRoutes from './routes/exports.js';
import operationRoutes from './routes/operations.js';
import promotionRoutes from './routes/promotions.js';
import rolloutRoutes from './routes/rollouts.js';
import { BODY_METHODS, ErrorBody, withBodyErrors } from './routes/schemas.js';
import serviceRoutes from './routes/service.js';
import suspensionRoutes from './routes/suspension.js';
import tenantRoutes from './routes/tenants.js';
import tokenRoutes from './routes/tokens.js';
import webhookRoutes from './routes/webhooks.js';
import whoamiRoutes from './routes/whoami.js';
import type { CredentialService } from './services/credentials.js';
import type { EventService } from './services/events.js';
import type { ExportService } from './services/exports.js';
import type { RolloutService } from './services/rollouts.js';
import type { SuspensionService } from './services/suspension.js';
import type { TenantService } from './services/tenants.js';
import type { TokenService } from './services/tokens.js';
import type { WebhookService } from './services/webhooks.js';

export interface Services {
  db: Db;
  engine: Engine;
  tenants: TenantService;
  /** Credential and key rotation (routes/credentials.ts). */
  credentials: CredentialService;
  tokens: TokenService;
  drift: DriftService;
  metrics: Metrics;
  tokenCache: TokenCache;
  readiness: Readiness;
  rollouts: RolloutService;
  /** Suspension and reactivation (routes/suspension.ts). */
  suspension: SuspensionService;
  /** Exports and their archives (routes/exports.ts). */
  exports: ExportService;
  /** Lifecycle events for consumers that pull (routes/events.ts). */
  events: EventService;
  /** Webhooks and their delivery log (routes/webhooks.ts). */
  webhooks: WebhookService;
}

export interface AppOptions {
  services: Services;
  /**
   * `service`: only /healthz, /readyz and /metrics (a worker-only process, whose probes still need
   * them); `all` (the default): the whole API.
   */
  routes?: 'all' | 'service';
}

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
  }
}

export const API_VERSION = '0.1.0';

const ajvOptions = { removeAdditional: false, useDefaults: true, allErrors: false } as const;
const ajvCompilers = AjvCompiler();

const notFinite = (x: unknown) => typeof x === 'number' && !Number.isFinite(x);

/**
 * Ajv coerces a string to a number and skips every numeric keyword (minimum, maximum, format) for a
 * number that is not finite, so `?limit=Infinity` or `?limit=1e400` would pass any bounds as Infinity.
 * A coerced part (query string, params, headers: all flat) is refused when it holds one.
 */
function nonFinite(data: unknown): string | null {
  if (!data || typeof data !== 'object') return null;
  // Every request's parameters pass here: a plain loop, no entries or arrays made for them.
  for (const k in data) {
    const v: unknown = (data as Record<string, unknown>)[k];
    if (Array.isArray(v) ? v.some(notFinite) : notFinite(v)) return k;
  }
  return null;
}

type RouteValidator = ((data: unknown, ctx?: unknown) => boolean) & {
  errors?: unknown[] | null;
  schemaEnv?: unknown;
};

/**
 * One Ajv per kind of input, Fastify's documented way (a validator compiler choosing by httpPart).
 * Bodies are JSON, validated as sent: `"name": 12345` or `["x"]` is refused, never coerced to a string.
 * Query strings, path parameters and headers arrive as text, so they coerce ('array': a parameter
 * given once where an array is expected). Both keep unknown body fields an error and apply defaults.
 */
const buildValidator: AjvCompiler.BuildCompilerFromPool = (externalSchemas, options) => {
  const build = (coerceTypes: false | 'array') =>
    ajvCompilers(externalSchemas, {
      plugins: options?.plugins ?? [],
      customOptions: { ...ajvOptions, coerceTypes },
    }) as unknown as (route: { httpPart?: string }) => RouteValidator;
  const strict = build(false);
  const coercing = build('array');
  return ((route: { httpPart?: string }) => {
    if (route.httpPart === 'body') return strict(route);
    const validate = coercing(route);
    const checked: RouteValidator = (data, ctx) => {
      const ok = validate(data, ctx);
      checked.errors = validate.errors ?? null;
      if (!ok) return false;
      const key = nonFinite(data);
      if (key === null) return true;
      checked.errors = [
        { keyword: 'type', instancePath: `/${key}`, schemaPath: '', params: {}, message: 'must be finite' },
      ];
      return false;
    };
    // Fastify passes the parent when Ajv needs it to coerce a root value.
    checked.schemaEnv = validate.schemaEnv;
    return checked;
  }) as unknown as ReturnType<AjvCompiler.BuildCompilerFromPool>;
};

/**
 * Server options every Tenantry Fastify instance uses (server.ts and tests alike): strict bodies and
 * coercing query strings (above), unknown body fields rejected rather than silently dropped, request
 * ids as UUIDs, and Fastify's own routing errors in the API's error shape.
 */
export const serverOptions = {
  bodyLimit: 64 * 1024,
  genReqId: () => randomUUID(),
  requestIdHeader: false as const,
  // One access-log line per request instead of Fastify's two (plugins/access-log.ts); errors are
  // logged by plugins/errors.ts.
  logController: new LogController({ disableRequestLogging: true }),
  // A request's child logger is made when it first writes a line (http/request-logger.ts).
  childLoggerFactory: requestLogger,
  return503OnClosing: true,
  schemaController: { compilersFactory: { buildValidator } },
  frameworkErrors: replyWithError,
};

/**
 * The whole HTTP app as one plugin, registered in a fixed order: error handling and auth,
 * then the services, then the routes. server.ts only listens; tests drive this with inject.
 */
const app: FastifyPluginAsync<AppOptions> = async (instance, opts) => {
  const f = instance.withTypeProvider<TypeBoxTypeProvider>() as FastifyInstance;
  f.addSchema(ErrorBody);
  await f.register(accessLog);
  await f.register(errorsPlugin);
  // Every route of a body-carrying method declares the body handling's own refusals (schemas.ts).
  f.addHook('onRoute', (route) => {
    const response = route.schema?.response as Record<string, unknown> | undefined;
    if (response && [route.method].flat().some((m) => BODY_METHODS.has(m)))
      route.schema = { ...route.schema, response: withBodyErrors(response) };
  });
  await f.register(
    fp(
      async (i) => {
        i.decorate('services', opts.services);
      },
      { name: 'tenantry-services' },
    ),
  );
  if (opts.routes === 'service') {
    await f.register(serviceRoutes);
    return;
  }
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
      tags: TAGS,
    },
    // Roles, response descriptions, enums, defaults and event streams, for every route: http/openapi.ts.
    transform: openapiTransform,
    // Shared schemas by their own name (ErrorBody), not def-0.
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
  });
  await f.register(swaggerUi, { routePrefix: '/docs' });
  await f.register(serviceRoutes);
  await f.register(tenantRoutes);
  await f.register(operationRoutes);
  await f.register(promotionRoutes);
  await f.register(credentialRoutes);
  await f.register(tokenRoutes);
  await f.register(auditRoutes);
  await f.register(driftRoutes);
  await f.register(rolloutRoutes);
  await f.register(suspensionRoutes);
  await f.register(exportRoutes);
  await f.register(eventRoutes);
  await f.register(webhookRoutes);
  await f.register(whoamiRoutes);
  await f.register(consolePlugin);
};

export default fp(app, { name: 'tenantry-app' });
