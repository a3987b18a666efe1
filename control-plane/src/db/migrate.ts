import path from 'node:path';
import { runner } from 'node-pg-migrate';
import type pg from 'pg';
import type { Logger } from 'pino';

export const MIGRATIONS_DIR = path.resolve(import.meta.dirname, '../../migrations');

/**
 * Runs the control-plane migrations (forward-only, numbered SQL files) with node-pg-migrate.
 * node-pg-migrate takes a try-lock and fails if another runner holds it; we first wait on
 * an advisory lock of our own, so concurrent starts queue up instead of failing.
 */
export async function migrate(pool: pg.Pool, log: Logger): Promise<string[]> {
  const client = await pool.connect();
  try {
    await client.query(`SELECT pg_advisory_lock(hashtext('tenantry.migrate'))`);
    try {
      const ran = await runner({
        dbClient: client,
        dir: MIGRATIONS_DIR,
        direction: 'up',
        migrationsTable: 'tenantry_migrations',
        count: Number.POSITIVE_INFINITY,
        singleTransaction: true,
        checkOrder: true,
        logger: {
          debug: () => {},
          info: () => {},
          warn: (m: string) => log.warn(m),
          error: (m: string) => (m.startsWith("Can't determine timestamp") ? log.debug(m) : log.error(m)),
        },
      });
      if (ran.length > 0)
        log.info({ migrations: ran.map((m) => m.name) }, 'control-plane migrations applied');
      return ran.map((m) => m.name);
    } finally {
      await client.query(`SELECT pg_advisory_unlock(hashtext('tenantry.migrate'))`);
    }
  } finally {
    client.release();
  }
}
