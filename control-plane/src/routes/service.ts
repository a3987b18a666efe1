import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { TenantryError } from '../domain/errors.js';
import { errors } from './schemas.js';

const serviceRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness: the database answers and the connection pool is not wedged',
        tags: ['service'],
        response: { 200: Type.Object({ status: Type.Literal('ok'), target: Type.String() }), ...errors() },
      },
    },
    async () => {
      // Any failure here (refused, lost, out of connections) means "not healthy": 503, never 500.
      // A pool that cannot hand out a connection within its acquire timeout is wedged, and says so.
      const h = await app.services.db.health();
      if (!h.ok) {
        const wedged = h.idle === 0 && h.waiting > 0;
        throw new TenantryError(
          'DATABASE_UNAVAILABLE',
          wedged
            ? `the control-plane connection pool is exhausted: ${h.total} connections held, ${h.waiting} callers waiting`
            : 'the control-plane database is unreachable',
          { retryable: true, context: { pool: { total: h.total, idle: h.idle, waiting: h.waiting } } },
        );
      }
      return { status: 'ok' as const, target: app.services.engine.target };
    },
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary:
          'Readiness: the control database answers, its schema is at this build’s version (or newer), the worker runs (where this process runs one), and the process is not stopping',
        description:
          'For a load balancer’s health check and a Kubernetes readinessProbe (liveness is /healthz). 503 NOT_READY names what is missing; a stopping process answers it from the signal on, while it finishes what it started.',
        tags: ['service'],
        response: {
          200: Type.Object({
            status: Type.Literal('ready'),
            // As `ReadinessChecks` (readiness.ts) says them; a ready process has database ok, schema
            // current or newer, worker running or not-in-this-process, process serving.
            checks: Type.Object({
              database: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
              schema: Type.Union(['current', 'newer', 'behind', 'unknown'].map((v) => Type.Literal(v))),
              worker: Type.Union(['running', 'stopped', 'not-in-this-process'].map((v) => Type.Literal(v))),
              process: Type.Union([Type.Literal('serving'), Type.Literal('draining')]),
            }),
          }),
          ...errors('NOT_READY'),
        },
      },
    },
    async () => {
      const r = await app.services.readiness.check();
      if (!r.ready) {
        throw new TenantryError('NOT_READY', `not ready: ${r.problems.join('; ')}`, {
          retryable: true,
          context: { checks: r.checks },
        });
      }
      return { status: 'ready' as const, checks: r.checks };
    },
  );

  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics',
        tags: ['service'],
        response: {
          200: {
            description: 'Metrics in the Prometheus text format',
            content: { 'text/plain': { schema: Type.String() } },
          },
          ...errors(),
        },
      },
    },
    async (_request, reply) => {
      const { registry } = app.services.metrics;
      reply.header('content-type', registry.contentType);
      return registry.metrics();
    },
  );
};

export default serviceRoutes;
