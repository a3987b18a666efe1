import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { findOperation } from '../db/repo.js';
import { TenantryError } from '../domain/errors.js';
import { errors, OperationSchema, security } from './schemas.js';

const OpParams = Type.Object({ id: Type.String({ pattern: '^op_[0-9a-f]{28}$' }) });
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

const operationRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/operations/:id',
    {
      config: { permission: 'operations:read' },
      schema: {
        summary: 'Get an operation and its steps',
        tags: ['operations'],
        security,
        params: OpParams,
        response: { 200: OperationSchema, ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => app.services.tenants.operation(request.params.id),
  );

  app.get(
    '/v1/operations/:id/events',
    {
      config: { permission: 'operations:read' },
      schema: {
        summary: 'Stream step progress as server-sent events until the operation ends',
        description:
          'Events: `step` (data: the step object) whenever a step changes, then one `end` (data: the operation). ' +
          'The stream closes after `end`.',
        tags: ['operations'],
        security,
        params: OpParams,
        produces: ['text/event-stream'],
        response: { 200: Type.String({ description: 'text/event-stream' }), ...errors(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const first = await findOperation(app.services.db, request.params.id);
      if (!first) throw new TenantryError('OPERATION_NOT_FOUND', `no operation ${request.params.id}`);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        'x-request-id': request.id,
      });
      const seen = new Map<string, string>();
      let closed = false;
      request.raw.on('close', () => {
        closed = true;
      });
      const send = (event: string, data: unknown) =>
        res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      // Bounded: polls the operation row (cheap, indexed) and stops when it ends or the client leaves.
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
        if (TERMINAL.has(op.status)) {
          send('end', op);
          break;
        }
        if (closed || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 150));
        const next = await findOperation(app.services.db, op.id);
        if (!next) break;
        op = next;
      }
      res.end();
    },
  );
};

export default operationRoutes;
