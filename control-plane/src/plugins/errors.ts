import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { isTenantryError, TenantryError } from '../domain/errors.js';
import { httpStatusFor, isDatabaseUnavailable, isInvalidInput, validationMessage } from '../http/errors.js';

/**
 * Answers any error as `{error: {code, message, requestId}}`; a 5xx never echoes internals. The error
 * handler below and Fastify's framework errors (a malformed URL, a path parameter beyond
 * maxParamLength: see `serverOptions.frameworkErrors`) both answer through it.
 */
export function replyWithError(
  err: FastifyError | TenantryError | Error,
  request: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  let e: TenantryError;
  const fe = err as FastifyError;
  if (isTenantryError(err)) {
    e = err;
  } else if (fe.validation) {
    e = new TenantryError('VALIDATION_FAILED', validationMessage(fe.validationContext, fe.validation));
  } else if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    e = new TenantryError('PAYLOAD_TOO_LARGE', 'request body is too large');
  } else if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    // Fastify's own client errors (bad JSON, unsupported media type, a malformed URL): safe to echo.
    e = new TenantryError('VALIDATION_FAILED', err.message);
  } else if (isDatabaseUnavailable(err)) {
    e = new TenantryError('DATABASE_UNAVAILABLE', 'the database is unavailable; retry later', {
      retryable: true,
    });
  } else if (isInvalidInput(err)) {
    // A value Postgres refused that a schema let through: the client's error, not ours. Logged as a
    // warning, since the schema should have refused it.
    request.log.warn({ err }, 'the database refused a request value that validation accepted');
    e = new TenantryError('VALIDATION_FAILED', 'the request carries a value the database cannot accept');
  } else {
    e = new TenantryError('INTERNAL', 'internal error');
  }
  const status = httpStatusFor(e.code);
  if (status >= 500) request.log.error({ err, code: e.code }, 'request failed');
  else request.log.info({ code: e.code }, 'request rejected');
  const message = status >= 500 && e.code === 'INTERNAL' ? 'internal error' : e.message;
  return reply.status(status).send({ error: { code: e.code, message, requestId: request.id } });
}

export default fp(
  async (app: FastifyInstance) => {
    app.setErrorHandler(replyWithError);
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
