import type { FastifyError, FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { isTenantryError, TenantryError } from '../domain/errors.js';
import { httpStatusFor, isDatabaseUnavailable } from '../http/errors.js';

/** Every error leaves as `{error: {code, message, requestId}}`; a 5xx never echoes internals. */
export default fp(
  async (app: FastifyInstance) => {
    app.setErrorHandler((err: FastifyError | TenantryError | Error, request, reply) => {
      let e: TenantryError;
      if (isTenantryError(err)) {
        e = err;
      } else if ((err as FastifyError).validation) {
        e = new TenantryError('VALIDATION_FAILED', err.message);
      } else if ((err as FastifyError).code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        e = new TenantryError('PAYLOAD_TOO_LARGE', 'request body is too large');
      } else if (
        typeof (err as FastifyError).statusCode === 'number' &&
        (err as FastifyError).statusCode! >= 400 &&
        (err as FastifyError).statusCode! < 500
      ) {
        // Fastify's own client errors (bad JSON, unsupported media type): safe to echo.
        e = new TenantryError('VALIDATION_FAILED', err.message);
      } else if (isDatabaseUnavailable(err)) {
        e = new TenantryError('DATABASE_UNAVAILABLE', 'the database is unavailable; retry later', {
          retryable: true,
        });
      } else {
        e = new TenantryError('INTERNAL', 'internal error');
      }
      const status = httpStatusFor(e.code);
      if (status >= 500) request.log.error({ err, code: e.code }, 'request failed');
      else request.log.info({ code: e.code }, 'request rejected');
      const message = status >= 500 && e.code === 'INTERNAL' ? 'internal error' : e.message;
      return reply.status(status).send({ error: { code: e.code, message, requestId: request.id } });
    });
    app.setNotFoundHandler((request, reply) =>
      reply.status(404).send({
        error: {
          code: 'ROUTE_NOT_FOUND',
          message: `no route ${request.method} ${request.url.split('?')[0]}`,
          requestId: request.id,
        },
      }),
    );
  },
  { name: 'tenantry-errors' },
);
