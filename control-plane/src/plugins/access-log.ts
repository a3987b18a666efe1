import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

/**
 * One access-log line per request, written once it is answered: its request id (the request
 * logger's `reqId`), method, URL, status, time, client address and the token's name. Fastify's own
 * request logging (an "incoming request" line and a "request completed" line, to be joined by request
 * id) is off (serverOptions' LogController): one line carries the same facts at half the volume.
 * Headers are never logged. Below the info level no hook is added at all.
 */
const INFO_OR_LOWER = new Set(['info', 'debug', 'trace']);

export default fp(
  async (app: FastifyInstance) => {
    if (!INFO_OR_LOWER.has(app.log.level)) return;
    app.addHook('onResponse', (request, reply, done) => {
      request.log.info(
        {
          method: request.method,
          url: request.url,
          statusCode: reply.statusCode,
          responseTimeMs: Math.round(reply.elapsedTime * 10) / 10,
          remoteAddress: request.ip,
          tokenName: request.principal?.name,
        },
        'request completed',
      );
      done();
    });
  },
  { name: 'tenantry-access-log' },
);
