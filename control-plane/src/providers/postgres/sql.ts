/**
 * Identifier and literal handling for DDL, which cannot take bind parameters.
 * Every identifier is validated against a strict pattern first and then quoted;
 * nothing from input is ever spliced in raw.
 */
const IDENT_RE = /^[a-z_][a-z0-9_]{0,62}$/;

export function ident(name: string): string {
  if (!IDENT_RE.test(name)) throw new Error(`invalid SQL identifier: ${JSON.stringify(name)}`);
  return `"${name}"`;
}

/** A string literal for DDL positions that cannot take a bind parameter (e.g. a SCRAM verifier). */
export function literal(value: string): string {
  if (value.includes('\0')) throw new Error('NUL byte in SQL literal');
  return `'${value.replaceAll("'", "''")}'`;
}

export interface Queryable {
  query<R extends Record<string, unknown> = Record<string, unknown>>(
    text: string,
    params?: unknown[],
  ): Promise<{ rows: R[]; rowCount: number | null }>;
}

/** Run `fn` in a transaction on a single client. */
export async function inTransaction<T>(db: Queryable, fn: () => Promise<T>): Promise<T> {
  await db.query('BEGIN');
  try {
    const out = await fn();
    await db.query('COMMIT');
    return out;
  } catch (e) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

/**
 * Serializes database-ACL changes made from sessions on the same database, within the caller's
 * transaction. Concurrent GRANT/REVOKE/DROP OWNED touching one pg_database row otherwise fail
 * with "tuple concurrently updated". (Advisory locks are per database, which is the scope we need:
 * the shared data database's ACL is only ever changed from sessions on it.)
 */
export async function lockDatabaseAcl(db: Queryable): Promise<void> {
  await db.query(`SELECT pg_advisory_xact_lock(hashtext('tenantry.acl.' || current_database()))`);
}
