import { ident, type Queryable } from './sql.js';
import type { RoleLimits } from './types.js';

/**
 * A tenant's logins cut off and given back (a suspension: docs/lifecycle.md), and a tenant's own limits
 * set on them (its overrides), without touching anything else of the roles: neither LOGIN (when limits
 * change) nor the password or memberships (when LOGIN does).
 */

/**
 * Makes every existing role of `names` NOLOGIN and ends its sessions (waiting up to `waitMs` for each),
 * in every database of the cluster. Returns the roles that could log in before: a second run (after a
 * crash) finds none, so the caller records the first run's answer before calling this.
 */
export async function suspendLogins(
  db: Queryable,
  names: readonly string[],
  waitMs = 5000,
): Promise<string[]> {
  const { rows } = await db.query<{ name: string; login: boolean }>(
    'SELECT rolname AS name, rolcanlogin AS login FROM pg_roles WHERE rolname = ANY ($1::text[]) ORDER BY 1',
    [names],
  );
  for (const r of rows) if (r.login) await db.query(`ALTER ROLE ${ident(r.name)} WITH NOLOGIN`);
  await db.query(
    `SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity
      WHERE usename = ANY ($1::text[]) AND pid <> pg_backend_pid()`,
    [names, waitMs],
  );
  return rows.filter((r) => r.login).map((r) => r.name);
}

/** Gives LOGIN back to each existing role of `names` (the ones a suspension took it from). */
export async function resumeLogins(db: Queryable, names: readonly string[]): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    'SELECT rolname AS name FROM pg_roles WHERE rolname = ANY ($1::text[]) ORDER BY 1',
    [names],
  );
  for (const r of rows) await db.query(`ALTER ROLE ${ident(r.name)} WITH LOGIN`);
  return rows.map((r) => r.name);
}

/** The roles of `names` that exist and may log in now. */
export async function rolesThatLogIn(db: Queryable, names: readonly string[]): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    'SELECT rolname AS name FROM pg_roles WHERE rolname = ANY ($1::text[]) AND rolcanlogin ORDER BY 1',
    [names],
  );
  return rows.map((r) => r.name);
}

/**
 * Sets `limits` on each existing role of `names` in one round trip: the connection limit and the two
 * session defaults (as the role provider does), nothing else.
 */
export async function applyRoleLimits(
  db: Queryable,
  names: readonly string[],
  limits: RoleLimits,
): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    'SELECT rolname AS name FROM pg_roles WHERE rolname = ANY ($1::text[]) ORDER BY 1',
    [names],
  );
  const stmts = rows.flatMap(({ name }) => {
    const r = ident(name);
    return [
      `ALTER ROLE ${r} WITH CONNECTION LIMIT ${Math.trunc(limits.connectionLimit)}`,
      `ALTER ROLE ${r} SET statement_timeout = ${Math.trunc(limits.statementTimeoutMs)}`,
      `ALTER ROLE ${r} SET idle_in_transaction_session_timeout = ${Math.trunc(limits.idleInTransactionSessionTimeoutMs)}`,
    ];
  });
  if (stmts.length > 0) await db.query(stmts.join(';\n'));
  return rows.map((r) => r.name);
}
