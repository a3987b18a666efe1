import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type Static, Type } from '@sinclair/typebox';
import {
  MAX_PARALLELISM,
  MAX_WAVES,
  ON_ERROR,
  ROLLOUT_ID_PATTERN,
  ROLLOUT_STATUSES,
  ROLLOUT_TENANT_STATUSES,
  ROLLOUT_TIERS,
} from '../domain/rollout.js';
import { actorOf } from '../plugins/auth.js';
import type { RolloutView } from '../services/rollouts.js';
import { AUTH_ERRORS, Cursor, errors, Slug, security } from './schemas.js';

const lit = <T extends string>(xs: readonly T[]) => Type.Union(xs.map((x) => Type.Literal(x)));
const WaveName = Type.String({ pattern: '^[a-z][a-z0-9-]{0,39}$', description: 'lowercase, up to 40 chars' });
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);
const When = Nullable(Type.String({ format: 'date-time' }));
const Counts = Type.Object(
  Object.fromEntries(ROLLOUT_TENANT_STATUSES.map((s) => [s, Type.Integer()])) as Record<
    (typeof ROLLOUT_TENANT_STATUSES)[number],
    ReturnType<typeof Type.Integer>
  >,
);

export const WaveBody = Type.Object(
  {
    name: Type.Optional(WaveName),
    tiers: Type.Optional(
      Type.Array(lit(ROLLOUT_TIERS), { minItems: 1, maxItems: ROLLOUT_TIERS.length, uniqueItems: true }),
    ),
    slugs: Type.Optional(Type.Array(Slug, { minItems: 1, maxItems: 1000 })),
    percent: Type.Optional(
      Type.Number({ exclusiveMinimum: 0, maximum: 100, description: 'a share of the tenants still behind' }),
    ),
    count: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 100_000, description: 'this many tenants, spread across tiers' }),
    ),
    parallelism: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_PARALLELISM,
        description: 'tenants migrated at once (default 4)',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'At most one of tiers, slugs, percent or count; none selects every tenant no earlier wave took (only the last wave may).',
  },
);

export const StartRolloutBody = Type.Object(
  {
    toVersion: Type.Integer({
      minimum: 1,
      maximum: 100_000,
      description: 'a version of the template directory',
    }),
    waves: Type.Optional(
      Type.Array(WaveBody, {
        minItems: 1,
        maxItems: MAX_WAVES,
        description:
          'In order; a wave starts when the one before is done and healthy. Default: a canary of 3 tenants (one per tier), then the rest. A final `rest` wave is added when the last one selects.',
      }),
    ),
    onError: Type.Optional(lit(ON_ERROR)),
    maxFailures: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 100_000,
        description: 'onError pause: failures tolerated (parked) before the rollout pauses; default 0',
      }),
    ),
  },
  { additionalProperties: false },
);
export type StartRolloutBodyT = Static<typeof StartRolloutBody>;

const Selector = Type.Union([
  Type.Object({ kind: Type.Literal('tiers'), tiers: Type.Array(lit(ROLLOUT_TIERS)) }),
  Type.Object({ kind: Type.Literal('slugs'), slugs: Type.Array(Type.String()) }),
  Type.Object({ kind: Type.Literal('percent'), percent: Type.Number() }),
  Type.Object({ kind: Type.Literal('count'), count: Type.Integer() }),
  Type.Object({ kind: Type.Literal('rest') }),
]);

const WaveSchema = Type.Object({
  index: Type.Integer(),
  name: Type.String(),
  selector: Selector,
  parallelism: Type.Integer(),
  status: lit(['pending', 'running', 'healthy', 'unhealthy']),
  counts: Counts,
  startedAt: When,
  finishedAt: When,
  durationMs: Type.Union([Type.Number(), Type.Null()]),
});

const Platform = Type.Object(
  {
    status: Type.Optional(lit(['pending', 'running', 'succeeded', 'failed', 'skipped'])),
    fromVersion: Type.Optional(Type.Integer()),
    version: Type.Optional(Type.Integer()),
    startedAt: Type.Optional(Type.String()),
    finishedAt: Type.Optional(Type.String()),
    durationMs: Type.Optional(Type.Number()),
    error: Type.Optional(Type.String()),
    note: Type.Optional(Type.String()),
  },
  { description: "the pool's shared tables, migrated once before the first wave (empty until then)" },
);

const Verification = Type.Object(
  {
    checkedAt: Type.Optional(Type.String()),
    checked: Type.Optional(Type.Integer()),
    busy: Type.Optional(Type.Integer()),
    mismatched: Type.Optional(
      Type.Array(
        Type.Object({
          slug: Type.String(),
          tier: Type.String(),
          recorded: Type.Integer(),
          actual: Type.Union([Type.Integer(), Type.Null()]),
        }),
      ),
    ),
    mismatchCount: Type.Optional(Type.Integer()),
  },
  {
    description:
      "the ledger against the data plane's catalogs, when the rollout completed (empty until then)",
  },
);

export const RolloutSchema = Type.Object({
  id: Type.String(),
  toVersion: Type.Integer(),
  status: lit(ROLLOUT_STATUSES),
  onError: lit(ON_ERROR),
  maxFailures: Type.Integer(),
  pauseReason: Nullable(Type.String()),
  currentWave: Nullable(Type.String()),
  createdBy: Nullable(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
  startedAt: When,
  finishedAt: When,
  durationMs: Type.Union([Type.Number(), Type.Null()]),
  progress: Type.Intersect([
    Counts,
    Type.Object({
      total: Type.Integer(),
      done: Type.Integer({ description: 'succeeded, parked or skipped' }),
      percent: Type.Number(),
    }),
  ]),
  platform: Platform,
  verification: Verification,
  waves: Type.Array(WaveSchema),
});

const LedgerSchema = Type.Object({
  tenantId: Type.String({ format: 'uuid' }),
  slug: Type.String(),
  tier: lit(ROLLOUT_TIERS),
  wave: Type.Integer(),
  status: lit(ROLLOUT_TENANT_STATUSES),
  fromVersion: Type.Integer(),
  version: Type.Integer(),
  operationId: Nullable(Type.String()),
  attempts: Type.Integer(),
  deferrals: Type.Integer({ description: 'times the tenant was busy with another operation and put back' }),
  error: Nullable(Type.String()),
  note: Nullable(Type.String()),
  startedAt: When,
  finishedAt: When,
  durationMs: Type.Union([Type.Number(), Type.Null()]),
});

const RolloutDetailSchema = Type.Intersect([
  RolloutSchema,
  Type.Object({
    tenants: Type.Array(LedgerSchema, { description: 'a page of the ledger, in slug order' }),
    nextCursor: Type.Union([Type.String(), Type.Null()]),
  }),
]);

const IdParams = Type.Object({ id: Type.String({ pattern: ROLLOUT_ID_PATTERN }) });
const TAGS = ['rollouts'];

const rolloutRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const svc = app.services.rollouts;
  const ctx = (request: Parameters<typeof actorOf>[0]) => ({
    actor: actorOf(request),
    requestId: request.id,
  });

  app.post(
    '/v1/rollouts',
    {
      config: { permission: 'rollouts:manage' },
      schema: {
        operationId: 'startRollout',
        summary: "Ship a template version to the fleet's tenants, in waves",
        description:
          'Plans every live tenant into a wave (tenants already at the version are recorded as skipped), then returns 202; ' +
          "the runner migrates the pool's shared tables once, then each wave at its parallelism. onError `pause` (default) " +
          'stops starting tenants once failures pass maxFailures; `continue` parks failed tenants and goes on. ' +
          'One rollout may be running or paused at a time.',
        tags: TAGS,
        security,
        body: StartRolloutBody,
        response: {
          202: RolloutSchema,
          ...errors(
            'VALIDATION_FAILED',
            'PAYLOAD_TOO_LARGE',
            ...AUTH_ERRORS,
            'ROLLOUT_IN_PROGRESS',
            'ROLLOUT_INVALID',
          ),
        },
      },
    },
    async (request, reply) => reply.status(202).send(await svc.create(ctx(request), request.body)),
  );

  app.get(
    '/v1/rollouts',
    {
      config: { permission: 'operations:read' },
      schema: {
        operationId: 'listRollouts',
        summary: 'List rollouts, newest first, with their progress per wave',
        tags: TAGS,
        security,
        querystring: Type.Object({ limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }) }),
        response: {
          200: Type.Object({ items: Type.Array(RolloutSchema) }),
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS),
        },
      },
    },
    async (request) => ({ items: await svc.list(request.query.limit) }),
  );

  app.get(
    '/v1/rollouts/:id',
    {
      config: { permission: 'operations:read' },
      schema: {
        operationId: 'getRollout',
        summary: 'A rollout: per wave and per tenant (pending, running, succeeded, failed, parked, skipped)',
        description:
          "The tenants come a page at a time in slug order (`nextCursor`); filter by `status` (repeatable) and `wave` (a wave's name).",
        tags: TAGS,
        security,
        params: IdParams,
        querystring: Type.Object({
          status: Type.Optional(
            Type.Array(lit(ROLLOUT_TENANT_STATUSES), { maxItems: ROLLOUT_TENANT_STATUSES.length }),
          ),
          wave: Type.Optional(WaveName),
          limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
          cursor: Type.Optional(Cursor),
        }),
        response: {
          200: RolloutDetailSchema,
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'ROLLOUT_NOT_FOUND', 'ROLLOUT_INVALID'),
        },
      },
    },
    async (request) => {
      const { status, wave, limit, cursor } = request.query;
      return svc.get(request.params.id, {
        limit,
        ...(status ? { statuses: status } : {}),
        ...(wave ? { wave } : {}),
        ...(cursor ? { cursor } : {}),
      });
    },
  );

  const action = (
    verb: 'pause' | 'resume' | 'cancel',
    summary: string,
    run: (c: ReturnType<typeof ctx>, id: string) => Promise<RolloutView>,
  ) =>
    app.post(
      `/v1/rollouts/:id/${verb}`,
      {
        config: { permission: 'rollouts:manage' },
        schema: {
          operationId: `${verb}Rollout`,
          summary,
          tags: TAGS,
          security,
          params: IdParams,
          response: {
            200: RolloutSchema,
            ...errors(
              'VALIDATION_FAILED',
              ...AUTH_ERRORS,
              'ROLLOUT_NOT_FOUND',
              'ROLLOUT_STATE_CONFLICT',
              ...(verb === 'resume' ? (['ROLLOUT_IN_PROGRESS'] as const) : []),
            ),
          },
        },
      },
      async (request) => run(ctx(request), request.params.id),
    );
  action('pause', 'Pause a running rollout: no tenant starts; those in flight finish', (c, id) =>
    svc.pause(c, id),
  );
  action('resume', 'Resume a paused rollout; the failures that paused it are tried again', (c, id) =>
    svc.resume(c, id),
  );
  action('cancel', 'Cancel a rollout: tenants not started stay at their version (skipped)', (c, id) =>
    svc.cancel(c, id),
  );

  app.post(
    '/v1/rollouts/:id/tenants/:slug/retry',
    {
      config: { permission: 'rollouts:manage' },
      schema: {
        operationId: 'retryRolloutTenant',
        summary: 'Retry a parked (or failed) tenant of a rollout, once its cause is fixed',
        description:
          'A completed rollout reopens for it; a paused one runs it on resume. 409 ROLLOUT_IN_PROGRESS when another rollout is open.',
        tags: TAGS,
        security,
        params: Type.Object({ id: Type.String({ pattern: ROLLOUT_ID_PATTERN }), slug: Slug }),
        response: {
          202: RolloutSchema,
          ...errors(
            'VALIDATION_FAILED',
            ...AUTH_ERRORS,
            'ROLLOUT_NOT_FOUND',
            'TENANT_NOT_FOUND',
            'ROLLOUT_STATE_CONFLICT',
            'ROLLOUT_IN_PROGRESS',
          ),
        },
      },
    },
    async (request, reply) =>
      reply.status(202).send(await svc.retry(ctx(request), request.params.id, request.params.slug)),
  );
};

export default rolloutRoutes;
