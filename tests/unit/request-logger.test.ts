import { Writable } from 'node:stream';
import Fastify from 'fastify';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { serverOptions } from '../../control-plane/src/app.js';
import { loggerOptions } from '../../control-plane/src/logger.js';

/** A pino logger with the server's options, writing its lines into `lines`, counting the children it makes. */
function capture(level: string) {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      cb();
    },
  });
  const log = pino(loggerOptions(level), stream);
  // Request children made (the ones Fastify binds a request id to); a child inherits this property.
  const counted = { children: 0 };
  const original = log.child as unknown as (
    this: unknown,
    b: pino.Bindings,
    o?: pino.ChildLoggerOptions,
  ) => unknown;
  log.child = function (this: unknown, bindings: pino.Bindings, opts?: pino.ChildLoggerOptions) {
    if ('reqId' in bindings) counted.children++;
    return original.call(this, bindings, opts);
  } as unknown as typeof log.child;
  return { log, lines, counted };
}

let apps: ReturnType<typeof Fastify>[] = [];
afterEach(async () => {
  await Promise.all(apps.map((a) => a.close()));
  apps = [];
});

async function appWith(level: string, opts: Partial<typeof serverOptions> = serverOptions) {
  const c = capture(level);
  const app = Fastify({ ...opts, loggerInstance: c.log });
  apps.push(app);
  app.get('/quiet', async (request) => {
    request.log.info({ password: 'hunter2' }, 'below the level');
    return { ok: true };
  });
  app.get('/loud', async (request) => {
    request.log.warn({ password: 'hunter2', user: 'ann' }, 'a warning');
    request.log.child({ tenantId: 't-1' }).error('from a child');
    return { level: request.log.level };
  });
  app.get('/debug', { logLevel: 'debug' }, async (request) => {
    request.log.debug('a debug line');
    return { ok: true };
  });
  await app.ready();
  return { app, ...c };
}

describe("a request's logger (http/request-logger.ts)", () => {
  it('makes no child for a request that writes nothing at its level', async () => {
    const { app, lines, counted } = await appWith('warn');
    const res = await app.inject({ method: 'GET', url: '/quiet' });
    expect(res.statusCode).toBe(200);
    expect(counted.children).toBe(0);
    expect(lines).toEqual([]);
  });

  it("writes the lines Fastify's own child would: request id, redaction, a child's bindings", async () => {
    const lazy = await appWith('warn');
    const { childLoggerFactory: _, ...eagerOptions } = serverOptions;
    const eager = await appWith('warn', eagerOptions);
    const a = await lazy.app.inject({ method: 'GET', url: '/loud' });
    const b = await eager.app.inject({ method: 'GET', url: '/loud' });
    expect(a.json()).toEqual({ level: 'warn' });
    expect(b.json()).toEqual({ level: 'warn' });
    const strip = (l: Record<string, unknown>) => ({ ...l, time: 0, reqId: typeof l.reqId, pid: 0 });
    expect(lazy.lines.map(strip)).toEqual(eager.lines.map(strip));
    expect(lazy.lines).toHaveLength(2);
    expect(lazy.lines[0]).toMatchObject({ msg: 'a warning', password: '[redacted]', user: 'ann', level: 40 });
    expect(lazy.lines[1]).toMatchObject({ msg: 'from a child', tenantId: 't-1', level: 50 });
    // Both lines carry the request's id (the one error bodies carry), from the one child made.
    expect(lazy.lines[0]?.reqId).toMatch(/^[0-9a-f-]{36}$/);
    expect(lazy.lines[1]?.reqId).toBe(lazy.lines[0]?.reqId);
    expect(lazy.counted.children).toBe(1);
    expect(JSON.stringify(lazy.lines)).not.toContain('hunter2');
  });

  it('gives a route with its own log level its child at once, at that level', async () => {
    const { app, lines, counted } = await appWith('warn');
    await app.inject({ method: 'GET', url: '/debug' });
    expect(counted.children).toBe(1);
    expect(lines).toMatchObject([{ msg: 'a debug line', level: 20 }]);
  });

  it('writes at info, as the access log does, with the same request id per request', async () => {
    const { app, lines } = await appWith('info');
    await app.inject({ method: 'GET', url: '/quiet' });
    await app.inject({ method: 'GET', url: '/quiet' });
    expect(lines.map((l) => l.msg)).toEqual(['below the level', 'below the level']);
    expect(lines[0]?.password).toBe('[redacted]');
    expect(lines[0]?.reqId).not.toBe(lines[1]?.reqId);
  });
});
