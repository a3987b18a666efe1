import fs from 'node:fs';
import path from 'node:path';
import { runner } from 'node-pg-migrate';
import type pg from 'pg';
import type { Logger } from 'pino';
import { StartRefused } from '../config.js';
import type { Queryable } from '../domain/queryable.js';

export const MIGRATIONS_DIR = path.resolve(import.meta.dirname, '../../migrations');
const TABLE = 'tenantry_migrations';

/** The migrations this build knows (names as node-pg-migrate records them: the file name without `.sql`), in order. */
export function buildMigrations(dir = MIGRATIONS_DIR): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .map((f) => f.replace(/\.sql$/, ''))
    .sort();
}

export interface SchemaStatus {
  /** This build's migrations the database lacks. */
  behind: string[];
  /** Migrations the database has that this build does not know: a newer build applied them. */
  ahead: string[];
}

/** The control schema against this build's migrations. */
export async function schemaStatus(q: Queryable, known = buildMigrations()): Promise<SchemaStatus> {
  const { rows: exists } = await q.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [TABLE]);
  if (!exists[0]?.t) return { behind: [...known], ahead: [] };
  const { rows } = await q.query<{ name: string }>(`SELECT name FROM ${TABLE}`);
  const applied = new Set(rows.map((r) => r.name));
  const mine = new Set(known);
  return {
    behind: known.filter((n) => !applied.has(n)),
    ahead: [...applied].filter((n) => !mine.has(n)).sort(),
  };
}

/**
 * Runs the control-plane migrations (forward-only, numbered SQL files) with node-pg-migrate.
 * node-pg-migrate takes a try-lock and fails if another runner holds it; we first wait on
 * an advisory lock of our own, so concurrent starts queue up instead of failing.
 *
 * Migrations are expand-first (docs/operations.md, "Rolling restarts"): each one only adds, so a
 * process of the previous build keeps working while a newer one migrates. A process refuses to start
 * against a schema newer than it knows: it cannot tell which of the newer migrations it could live with.
 */
export async function migrate(pool: pg.Pool, log: Logger, opts: { dir?: string } = {}): Promise<string[]> {
  const dir = opts.dir ?? MIGRATIONS_DIR;
  const client = await pool.connect();
  try {
    await client.query(`SELECT pg_advisory_lock(hashtext('tenantry.migrate'))`);
    try {
      const known = buildMigrations(dir);
      const { ahead } = await schemaStatus(client, known);
      if (ahead.length > 0) throw schemaTooNew(ahead, known);
      const ran = await runner({
        dbClient: client,
        dir,
        direction: 'up',
        migrationsTable: TABLE,
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

function schemaTooNew(ahead: string[], known: string[]): StartRefused {
  return new StartRefused(
    `the control database's schema is newer than this build: it has migrations this build does not know (${ahead.join(', ')}; ` +
      `this build's latest is ${known.at(-1) ?? 'none'}), applied by a newer Tenantry. A process never starts against a newer schema. ` +
      'Start the newer version instead; processes of this version that are already running keep working until they are replaced. ' +
      'See docs/operations.md, "Rolling restarts".',
  );
}
