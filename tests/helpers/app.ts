import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { afterAll, expect } from 'vitest';
import app, { type Services, serverOptions } from '../../control-plane/src/app.js';
import { declaredErrorCodes } from '../../control-plane/src/routes/schemas.js';

/**
 * Error answers whose code the route's schema (and so the OpenAPI document) does not name for that
 * status, as `METHOD /route → status CODE`. A client generator builds its error handling from the
 * document: a code the server answers with but the document leaves out is a contract bug.
 */
const undeclared = new Set<string>();

// Every test file that builds an app through here fails if any of its requests got an undeclared code.
afterAll(() => {
  expect([...undeclared], 'error codes answered but not declared in the route schema').toEqual([]);
});

/**
 * The whole app on a Fastify instance as server.ts builds it, plus one check the tests add: every
 * error a route answers with is one its schema declares (see `undeclared`). Routes without response
 * schemas (the console's files, the docs UI) and requests no route matched are not checked.
 */
export async function buildTestApp(log: Logger, services: Services): Promise<FastifyInstance> {
  const server = Fastify({ ...serverOptions, loggerInstance: log });
  server.addHook('onSend', (request, reply, payload, done) => {
    const status = reply.statusCode;
    const response = request.routeOptions.schema?.response;
    if (status >= 400 && response && typeof payload === 'string' && request.routeOptions.url) {
      let code: unknown;
      try {
        code = (JSON.parse(payload) as { error?: { code?: unknown } }).error?.code;
      } catch {
        code = undefined;
      }
      const declared: string[] = declaredErrorCodes(response as Record<string, unknown>, status);
      if (typeof code === 'string' && !declared.includes(code))
        undeclared.add(`${request.method} ${request.routeOptions.url} → ${status} ${code}`);
    }
    done(null, payload);
  });
  await server.register(app, { services });
  await server.ready();
  return server as unknown as FastifyInstance;
}
