import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type Static, Type } from '@sinclair/typebox';
import { IGNORE_PATTERN } from '../drift/policy.js';
import { DRIFT_RUN_ID_PATTERN } from '../drift/store.js';
import { DRIFT_CATEGORIES, DRIFT_KINDS, DRIFT_RESOURCES } from '../drift/types.js';
import { actorOf } from '../plugins/auth.js';
import { AUTH_ERRORS, errors, Slug, security, TierT } from './schemas.js';

const lit = (xs: readonly string[]) => Type.Union(xs.map((x) => Type.Literal(x)));
const Value = Type.Union([
  Type.String(),
  Type.Number(),
  Type.Boolean(),
  Type.Array(Type.String()),
  Type.Null(),
]);

export const FindingSchema = Type.Object({
  tenantId: Type.Union([Type.String(), Type.Null()]),
  tenantSlug: Type.Union([Type.String(), Type.Null()], {
    description: 'null for platform resources (pool tables, pool role) and orphans of no known tenant',
  }),
  resource: lit(DRIFT_RESOURCES),
  name: Type.String({ description: 'the object, e.g. tenantry_data.tenant_acme.users' }),
  kind: lit(DRIFT_KINDS),
  field: Type.String({ description: 'e.g. rlsForced, connectionLimit, privileges:PUBLIC, exists' }),
  desired: Value,
  actual: Value,
  category: lit(DRIFT_CATEGORIES),
  resolution: lit(['open', 'repaired', 'unrepaired']),
  operationId: Type.Union([Type.String(), Type.Null()], {
    description: 'the reconcile operation that acted on it',
  }),
  scope: Type.Union([Type.Literal('tenant'), Type.Literal('platform')], {
    description:
      "platform: a shared resource's finding (pool tables, pool or owner role, shared database); in a tenant's view, one that affects its tier",
  }),
});
export type FindingSchemaT = Static<typeof FindingSchema>;

const Skipped = Type.Object({
  tenantId: Type.String(),
  slug: Type.String(),
  reason: lit(['in-flight-operation', 'tenant-status', 'tier-not-on-target']),
  detail: Type.String(),
});

const Remediation = Type.Object({
  tenantId: Type.Union([Type.String(), Type.Null()]),
  tenantSlug: Type.Union([Type.String(), Type.Null()], {
    description: 'null: the platform (pool) resources',
  }),
  operationId: Type.Union([Type.String(), Type.Null()]),
  status: lit(['succeeded', 'failed', 'skipped', 'in-progress']),
  steps: Type.Array(Type.String()),
  repaired: Type.Integer(),
  remaining: Type.Integer(),
  reason: Type.Optional(Type.String()),
});

export const DriftRunSchema = Type.Object({
  id: Type.String(),
  trigger: lit(['schedule', 'api', 'manual']),
  requestedBy: Type.Union([Type.String(), Type.Null()]),
  status: lit(['queued', 'running', 'succeeded', 'failed']),
  target: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  startedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  finishedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  durationMs: Type.Union([Type.Integer(), Type.Null()]),
  tenantsChecked: Type.Integer(),
  skipped: Type.Array(Skipped, {
    description: 'tenants not judged, with the reason (no false drift mid-operation)',
  }),
  remediation: Type.Array(Remediation),
  summary: Type.Record(Type.String(), Type.Unknown(), {
    description: 'findings, open, repaired, unrepaired, ignored, byKind, byCategory',
  }),
  timings: Type.Record(Type.String(), Type.Number()),
  error: Type.Union([Type.String(), Type.Null()]),
});

const DriftRunWithFindings = Type.Intersect([
  DriftRunSchema,
  Type.Object({ findings: Type.Array(FindingSchema), findingsTruncated: Type.Boolean() }),
]);

const TenantDriftSchema = Type.Object({
  tenantSlug: Type.String(),
  runId: Type.Union([Type.String(), Type.Null()], {
    description: 'the latest finished sweep; null before the first',
  }),
  observedAt: Type.Union([Type.String(), Type.Null()]),
  skipped: Type.Union([Type.Object({ reason: Type.String(), detail: Type.String() }), Type.Null()]),
  findings: Type.Array(FindingSchema),
});

const Mode = Type.Union([Type.Literal('report'), Type.Literal('remediate'), Type.Null()], {
  description: 'null inherits from the level above (tenant → tier → global → report)',
});
export const PolicyBody = Type.Object(
  {
    tier: Type.Optional(TierT),
    tenant: Type.Optional(Slug),
    mode: Mode,
    ignoreFields: Type.Array(Type.String({ pattern: IGNORE_PATTERN, maxLength: 120 }), {
      maxItems: 100,
      default: [],
      description:
        '`resource.field` (role.connectionLimit), `resource.*`, or a prefix ending in * (table.privileges:*)',
    }),
  },
  { additionalProperties: false },
);
const PolicySchema = Type.Object({
  scope: lit(['global', 'tier', 'tenant']),
  tier: Type.Union([TierT, Type.Null()]),
  tenantSlug: Type.Union([Type.String(), Type.Null()]),
  mode: Mode,
  ignoreFields: Type.Array(Type.String()),
  updatedAt: Type.String({ format: 'date-time' }),
  updatedBy: Type.Union([Type.String(), Type.Null()]),
});

const driftRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/drift-runs',
    {
      config: { permission: 'tenants:reconcile' },
      schema: {
        operationId: 'startDriftRun',
        summary: 'Run a drift sweep now',
        description:
          'Queues a sweep of the whole fleet and returns 202 with the run; poll GET /v1/drift-runs/{id}. ' +
          'While a sweep is queued or running, that run is returned instead of a second one.',
        tags: ['drift'],
        security,
        response: { 202: DriftRunSchema, ...errors(...AUTH_ERRORS) },
      },
    },
    async (request, reply) => {
      const { run } = await app.services.drift.requestRun({ actor: actorOf(request), requestId: request.id });
      return reply.status(202).send(run);
    },
  );

  app.get(
    '/v1/drift-runs',
    {
      config: { permission: 'operations:read' },
      schema: {
        operationId: 'listDriftRuns',
        summary: 'List recent drift runs, newest first',
        tags: ['drift'],
        security,
        querystring: Type.Object({ limit: Type.Integer({ minimum: 1, maximum: 200, default: 20 }) }),
        response: {
          200: Type.Object({ items: Type.Array(DriftRunSchema) }),
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS),
        },
      },
    },
    async (request) => ({ items: await app.services.drift.listRuns(request.query.limit) }),
  );

  app.get(
    '/v1/drift-runs/:id',
    {
      config: { permission: 'operations:read' },
      schema: {
        operationId: 'getDriftRun',
        summary: 'Get a drift run with its findings',
        tags: ['drift'],
        security,
        params: Type.Object({ id: Type.String({ pattern: DRIFT_RUN_ID_PATTERN }) }),
        response: {
          200: DriftRunWithFindings,
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'OPERATION_NOT_FOUND'),
        },
      },
    },
    async (request) => app.services.drift.getRun(request.params.id),
  );

  app.get(
    '/v1/tenants/:slug/drift',
    {
      config: { permission: 'operations:read' },
      schema: {
        operationId: 'getTenantDrift',
        summary: "One tenant's current drift findings (latest sweep, minus what it repaired)",
        tags: ['drift'],
        security,
        params: Type.Object({ slug: Slug }),
        response: {
          200: TenantDriftSchema,
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'TENANT_NOT_FOUND'),
        },
      },
    },
    async (request) => app.services.drift.tenantDrift(request.params.slug),
  );

  app.get(
    '/v1/drift-policies',
    {
      config: { permission: 'operations:read' },
      schema: {
        operationId: 'listDriftPolicies',
        summary: 'Drift policies: global, per tier, per tenant',
        tags: ['drift'],
        security,
        response: { 200: Type.Object({ items: Type.Array(PolicySchema) }), ...errors(...AUTH_ERRORS) },
      },
    },
    async () => ({ items: await app.services.drift.listPolicies() }),
  );

  app.put(
    '/v1/drift-policies',
    {
      config: { permission: 'tenants:reconcile' },
      schema: {
        operationId: 'setDriftPolicy',
        summary: 'Set the drift policy of the fleet (no tier, no tenant), a tier, or a tenant',
        tags: ['drift'],
        security,
        body: PolicyBody,
        response: {
          200: Type.Object({ items: Type.Array(PolicySchema) }),
          ...errors('VALIDATION_FAILED', 'PAYLOAD_TOO_LARGE', ...AUTH_ERRORS, 'TENANT_NOT_FOUND'),
        },
      },
    },
    async (request) => {
      const { tier, tenant, mode, ignoreFields } = request.body;
      return {
        items: await app.services.drift.setPolicy(
          { actor: actorOf(request), requestId: request.id },
          { ...(tier ? { tier } : {}), ...(tenant ? { tenant } : {}), mode, ignoreFields },
        ),
      };
    },
  );
};

export default driftRoutes;
