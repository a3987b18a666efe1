/**
 * The one home of the rules that decide whether a failure is worth another attempt. Domain-free:
 * it reads only an error's `code`, `message` and, for an AggregateError (a multi-address connect),
 * the errors inside it. The HTTP layer answers 503 for what `isConnectionUnavailable` recognises; the
 * executor re-runs a step for what `isTransient` recognises (a domain error's own `retryable` flag
 * comes first there).
 */

/** Socket and resolver errno codes of a peer that cannot be reached right now. */
const CONNECTION_ERRNO = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
]);

// SQLSTATE: admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections.
const UNAVAILABLE_SQLSTATE = new Set(['57P01', '57P02', '57P03', '53300']);

/** SQLSTATE class 08: connection exception. */
const CONNECTION_EXCEPTION = /^08[0-9A-Z]{3}$/;

/** What node-postgres and pg-pool say when a connection is lost or cannot be made in time. */
const CONNECTION_LOST = /Connection terminated|timeout exceeded when trying to connect/i;

// SQLSTATE of a statement that lost a race and succeeds when run again: object_in_use (e.g.
// CREATE DATABASE … TEMPLATE while an orphaned backend of a killed process is still connected to the
// template; it goes away), serialization_failure, deadlock_detected, lock_not_available.
const RACE_SQLSTATE = new Set(['55006', '40001', '40P01', '55P03']);

/**
 * Catalog races between concurrent DDL sessions: transient by nature. A write to a table in a
 * publication lists the table's publications, then looks each one up: a DROP PUBLICATION committed
 * in between (a promotion's cleanup, the orphan sweep) fails it with "cache lookup failed for
 * publication" (XX000), and the same statement run again finds the publication gone.
 */
const CATALOG_RACE = /tuple concurrently (updated|deleted)|cache lookup failed for publication \d+/i;

function codeOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

function messageOf(e: unknown): string {
  const message = (e as { message?: unknown } | null | undefined)?.message;
  return typeof message === 'string' ? message : '';
}

/** The errors an AggregateError (or anything shaped like one) carries; none otherwise. */
function innerErrors(e: unknown): unknown[] {
  const inner = (e as { errors?: unknown }).errors;
  return Array.isArray(inner) ? inner : [];
}

/**
 * A database (or other peer) that is unreachable or refusing sessions, as opposed to a query that
 * failed: unavailable for now, and a retry may succeed. Socket errno codes, SQLSTATE class 08, the
 * server's shutdown and overload states, a lost connection or connect timeout, and any of these
 * inside an AggregateError.
 */
export function isConnectionUnavailable(e: unknown): boolean {
  if (!e || typeof e !== 'object') return false;
  const code = codeOf(e);
  if (
    code &&
    (CONNECTION_ERRNO.has(code) || UNAVAILABLE_SQLSTATE.has(code) || CONNECTION_EXCEPTION.test(code))
  )
    return true;
  if (innerErrors(e).some(isConnectionUnavailable)) return true;
  return CONNECTION_LOST.test(messageOf(e));
}

/**
 * A failure the same work, run again, may get past: everything `isConnectionUnavailable` recognises,
 * plus statements that lost a race (object in use, serialization failure, deadlock, lock not
 * available, a catalog tuple concurrently updated or deleted, a publication dropped under a write),
 * also inside an AggregateError.
 */
export function isTransient(e: unknown): boolean {
  if (!e || typeof e !== 'object') return false;
  if (isConnectionUnavailable(e)) return true;
  const code = codeOf(e);
  if (code && RACE_SQLSTATE.has(code)) return true;
  if (innerErrors(e).some(isTransient)) return true;
  return CATALOG_RACE.test(messageOf(e));
}
