import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { decodeOperationCursor, findOperation, findTenantBySlug, listOperations } from '../db/repo.js';
import { TenantryError } from '../domain/errors.js';
import { OPERATION_KINDS, OPERATION_STATUSES } from '../domain/tenant.js';
import type { SseEventDoc } from '../http/openapi.js';
import { actorOf } from '../plugins/auth.js';
import {
  Accepted,
  AUTH_ERRORS,
  Cursor,
  errors,
  OperationKindT,
  OperationSchema,
  OperationStatusT,
  Page,
  Slug,
  StepSchema,
  security,
} from './schemas.js';

const OpParams = Type.Object({ id: Type.String({ pattern: '^op_[0-9a-f]{28}$' }) });

const Timestamp = (description: string) => Type.Optional(Type.String({ format: 'date-time', description }));

/**
 * An operation's progress as the `progress` event carries it: what a promotion reports, typed, and
 * whatever other kinds report (open). Documentation only: the stream writes the recorded progress as is.
 */
const ProgressDoc = Type.Object(
  {
    rowsCopied: Type.Optional(
      Type.Record(Type.String(), Type.Integer(), { description: 'promotion: rows copied so far, per table' }),
    ),
    replicationLagBytes: Type.Optional(
      Type.Integer({ description: 'promotion: WAL the target has still to apply, in bytes' }),
    ),
    retainedWalBytes: Type.Optional(
      Type.Integer({ description: 'promotion: WAL the replication slot holds on the source, in bytes' }),
    ),
    freezeStartedAt: Timestamp('promotion: when the write freeze began'),
    writeFreezeMs: Type.Optional(Type.Number({ description: 'promotion: how long writes were frozen' })),
    cutoverAt: Timestamp('promotion: when routing moved to the new placement'),
    rollbackUntil: Timestamp('promotion: the end of the rollback window'),
    verification: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        description: 'promotion: row counts and digests per table, source against target',
      }),
    ),
  },
  { additionalProperties: true },
);

/** The events GET /v1/operations/{id}/events sends, with their payloads (documented as `x-sse-events`). */
export const OPERATION_EVENTS = {
  step: { description: 'a step changed (started, succeeded, failed, skipped)', schema: StepSchema },
  progress: {
    description:
      "the operation's progress changed: for a promotion rowsCopied {table: n}, replicationLagBytes, freezeStartedAt, writeFreezeMs, cutoverAt, rollbackUntil, verification",
    schema: Type.Object({
      operationId: Type.String(),
      currentStep: Type.Union([Type.String(), Type.Null()]),
      progress: ProgressDoc,
    }),
  },
  resource: {
    description: 'a resource-level event reported inside a step (Pulumi engine events, aws target)',
    schema: Type.Object({
      step: Type.String(),
      resource: Type.String(),
      action: Type.String(),
      status: Type.String(),
      at: Type.String({ format: 'date-time' }),
    }),
  },
  end: {
    description: 'the operation ended (the last event): the operation as GET /v1/operations/{id} returns it',
    schema: OperationSchema,
  },
} satisfies Record<string, SseEventDoc>;
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

const operationRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/operations',
    {
      config: { permission: 'operations:read' },
      schema: {
        operationId: 'listOperations',
        summary: 'List operations, newest first',
        description:
          'Keyset-paginated: pass the `nextCursor` of a page as `cursor` for the next one (null on the last page). ' +
          'Filter by `tenant` (a slug: the current tenant with that slug, as GET /v1/audit reads it), `kind` and ' +
          '`status`; repeat `kind` or `status` to take several (`status=queued&status=running`: the operations in flight).',
        tags: ['operations'],
        security,
        querystring: Type.Object({
          tenant: Type.Optional(Slug),
          kind: Type.Optional(Type.Array(OperationKindT, { maxItems: OPERATION_KINDS.length })),
          status: Type.Optional(Type.Array(OperationStatusT, { maxItems: OPERATION_STATUSES.length })),
          limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
          cursor: Type.Optional(Cursor),
        }),
        response: {
          200: Page(OperationSchema),
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'TENANT_NOT_FOUND'),
        },
      },
    },
    async (request) => {
      const { tenant: slug, kind, status, limit, cursor } = request.query;
      const decoded = cursor === undefined ? undefined : decodeOperationCursor(cursor);
      if (decoded === null)
        throw new TenantryError('VALIDATION_FAILED', 'cursor is not one this API returned');
      const { db } = app.services;
      const tenant = slug === undefined ? undefined : await findTenantBySlug(db, slug);
      if (tenant === null) throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
      const page = await listOperations(db, {
        limit,
        ...(tenant ? { tenantId: tenant.id } : {}),
        ...(kind ? { kinds: kind } : {}),
        ...(status ? { statuses: status } : {}),
        ...(decoded ? { cursor: decoded } : {}),
      });
      // A cursor naming no operation (operations are never deleted: a forged one) would read as the
      // end of the list: refused instead. Checked on an empty page only, the one it can produce.
      if (decoded && page.items.length === 0 && !(await findOperation(db, decoded)))
        throw new TenantryError('VALIDATION_FAILED', 'cursor is not one this API returned');
      return page;
    },
  );

  app.get(
    '/v1/operations/:id',
    {
      config: { permission: 'operations:read' },
      schema: {
        operationId: 'getOperation',
        summary: 'Get an operation and its steps',
        tags: ['operations'],
        security,
        params: OpParams,
        response: {
          200: OperationSchema,
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'OPERATION_NOT_FOUND'),
        },
      },
    },
    async (request) => app.services.tenants.operation(request.params.id),
  );

  app.get(
    '/v1/operations/:id/events',
    {
      config: { permission: 'operations:read', sseEvents: OPERATION_EVENTS },
      schema: {
        operationId: 'streamOperationEvents',
        summary: "Stream an operation's progress as server-sent events until it ends",
        description:
          'Events (each `event: <name>` with one JSON `data:` line; their payloads are in `x-sse-events`): `step` ' +
          "whenever a step changes, `progress` whenever the operation's progress changes (a promotion's rows copied " +
          'per table, replication lag, freeze, cutover and rollback deadline), `resource` whenever a step reports a ' +
          'resource-level event (Pulumi engine events), then one `end` with the operation. The stream closes after ' +
          '`end`; it also closes without `end` after 30 minutes, when the server shuts down or when its database ' +
          'fails: reconnect to follow on. A client that reconnects gets the current state again (every step, then ' +
          'the progress).',
        tags: ['operations'],
        security,
        params: OpParams,
        response: {
          200: {
            description: 'The event stream (text/event-stream)',
            content: { 'text/event-stream': { schema: Type.String({ description: 'server-sent events' }) } },
          },
          ...errors('VALIDATION_FAILED', ...AUTH_ERRORS, 'OPERATION_NOT_FOUND'),
        },
      },
    },
    async (request, reply) => {
      const first = await findOperation(app.services.db, request.params.id);
      if (!first) throw new TenantryError('OPERATION_NOT_FOUND', `no operation ${request.params.id}`);
      // `end` carries the operation exactly as GET /v1/operations/{id} answers it (its schema's fields).
      const operationJson = reply.compileSerializationSchema(OperationSchema);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        'x-request-id': request.id,
      });
      const seen = new Map<string, string>();
      const seenResources = new Set<string>();
      let lastProgress = '';
      let closed = false;
      request.raw.on('close', () => {
        closed = true;
      });
      const write = (event: keyof typeof OPERATION_EVENTS, json: string) =>
        res.write(`event: ${event}\ndata: ${json}\n\n`);
      const send = (event: keyof typeof OPERATION_EVENTS, data: unknown) =>
        write(event, JSON.stringify(data));
      // Bounded: polls the operation row (cheap, indexed) and stops when it ends or the client leaves.
      // Hijacked, the reply is ours to end, whatever happens in the loop.
      try {
        const deadline = Date.now() + 30 * 60_000;
        let op = first;
        for (;;) {
          for (const s of op.steps) {
            const sig = `${s.status}|${s.finishedAt ?? ''}|${s.error ?? ''}`;
            if (seen.get(s.name) !== sig) {
              seen.set(s.name, sig);
              send('step', s);
            }
          }
          const { resources: listed, ...progress } = op.progress;
          const signature = JSON.stringify(progress);
          if (signature !== lastProgress && (lastProgress !== '' || signature !== '{}')) {
            lastProgress = signature;
            send('progress', { operationId: op.id, currentStep: op.currentStep, progress });
          }
          for (const r of (listed as Record<string, unknown>[] | undefined) ?? []) {
            const key = JSON.stringify(r);
            if (!seenResources.has(key)) {
              seenResources.add(key);
              send('resource', r);
            }
          }
          if (TERMINAL.has(op.status)) {
            write('end', operationJson({ ...op }));
            break;
          }
          if (closed || Date.now() > deadline) break;
          await new Promise((r) => setTimeout(r, 150));
          const next = await findOperation(app.services.db, op.id);
          if (!next) break;
          op = next;
        }
      } catch (e) {
        request.log.warn({ err: (e as Error).message }, 'operation event stream ended early');
      } finally {
        res.end();
      }
    },
  );

  app.post(
    '/v1/operations/:id/resume',
    {
      config: { permission: 'tenants:reconcile' },
      schema: {
        operationId: 'resumeOperation',
        summary: 'Resume a failed operation from its failed step',
        description:
          'For a failed operation that was not undone: an onboarding on a target that keeps failed onboardings ' +
          '(aws), or a promotion that failed after its routing flipped (it can only be finished forward). The ' +
          'operation is queued again from its failed step and the request is audited. 409 OPERATION_IN_PROGRESS while it runs, ' +
          '409 OPERATION_NOT_RESUMABLE when it succeeded or its failure was undone.',
        tags: ['operations'],
        security,
        params: OpParams,
        response: {
          202: Accepted,
          ...errors(
            'VALIDATION_FAILED',
            ...AUTH_ERRORS,
            'OPERATION_NOT_FOUND',
            'OPERATION_IN_PROGRESS',
            'OPERATION_NOT_RESUMABLE',
          ),
        },
      },
    },
    async (request, reply) => {
      const out = await app.services.tenants.resume(
        { actor: actorOf(request), requestId: request.id },
        request.params.id,
      );
      return reply.status(202).send(out);
    },
  );
};

export default operationRoutes;
