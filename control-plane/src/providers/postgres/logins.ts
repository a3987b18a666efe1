import { applyRoles, type RoleSpec, roleProvider } from './role.js';
import { ident, type Queryable } from './sql.js';
import type { RoleLimits } from './types.js';

/**
 * A login group: the NOLOGIN role that holds the grants (a tenant's `tenant_<slug>`, the pool's shared
 * role) and its two logins, members of it holding nothing of their own ("alternating users": a
 * rotation sets a new password on the idle login and makes it current while the other keeps working
 * until its grace period ends). A group migrated from the single-login layout was its tenant's login
 * itself until its first rotation retired it.
 */
export interface LoginsSpec extends RoleLimits {
  group: string;
  /** The group's two logins (named by domain/naming.ts `loginRoleNames`). */
  logins: readonly [string, string];
  searchPath: string[];
  /** The login the descriptor names: one of `logins`, or the group itself (single-login layout). */
  current: string;
  /** Set on `current`, as a SCRAM verifier; omit to leave its password as it is. */
  password?: string;
  /** Or the verifier itself, made beforehand (`scramVerifierAsync`). */
  verifier?: string;
}

/**
 * The group and both logins, created if missing and converged (limits, settings, membership), in one
 * round trip. Only `current` is made LOGIN (with `password` if given); every other role's LOGIN is left
 * as it is: a login in its grace period keeps working, and only `retireLogins` ends one. A role this
 * creates starts NOLOGIN, with no password. `fresh`: none of them is expected to exist (applyRoles).
 */
export async function applyLogins(
  db: Queryable,
  spec: LoginsSpec,
  opts: { fresh?: boolean } = {},
): Promise<void> {
  const { group, logins, current, password, verifier, searchPath, ...limits } = spec;
  if (current !== group && !logins.includes(current))
    throw new Error(`${current} is neither ${group} nor one of its logins`);
  const role = (name: string, extra: Partial<RoleSpec>): RoleSpec => ({
    name,
    ...limits,
    searchPath,
    login: name === current ? true : 'unchanged',
    ...(name === current && password !== undefined ? { password } : {}),
    ...(name === current && verifier !== undefined ? { verifier } : {}),
    ...extra,
  });
  await applyRoles(db, [role(group, {}), ...logins.map((l) => role(l, { inRole: group }))], opts);
}

/**
 * Ends every role of the group that is not `keep` (the current login): no password, NOLOGIN, and its
 * sessions terminated (waiting up to `waitMs` for each). Idempotent (pg_roles does not say whether a
 * role has a password, so every existing one loses it again). Returns the roles that could log in.
 */
export async function retireLogins(
  db: Queryable,
  spec: { group: string; logins: readonly [string, string]; keep: string; waitMs?: number },
): Promise<string[]> {
  const names = [spec.group, ...spec.logins].filter((n) => n !== spec.keep);
  const { rows } = await db.query<{ name: string; login: boolean }>(
    'SELECT rolname AS name, rolcanlogin AS login FROM pg_roles WHERE rolname = ANY ($1::text[])',
    [names],
  );
  for (const { name } of rows) await db.query(`ALTER ROLE ${ident(name)} WITH NOLOGIN PASSWORD NULL`);
  await db.query(
    `SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity
      WHERE usename = ANY ($1::text[]) AND pid <> pg_backend_pid()`,
    [names, spec.waitMs ?? 5000],
  );
  return rows.filter((r) => r.login).map((r) => r.name);
}

/** Stops every role of the group from logging in, and ends their sessions (before the group's objects go). */
export async function endLoginSessions(
  db: Queryable,
  spec: { group: string; logins: readonly [string, string]; waitMs?: number },
): Promise<void> {
  const names = [spec.group, ...spec.logins];
  const { rows } = await db.query<{ name: string }>(
    'SELECT rolname AS name FROM pg_roles WHERE rolname = ANY ($1::text[])',
    [names],
  );
  for (const { name } of rows) await db.query(`ALTER ROLE ${ident(name)} WITH NOLOGIN`);
  await db.query(
    `SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity
      WHERE usename = ANY ($1::text[]) AND pid <> pg_backend_pid()`,
    [names, spec.waitMs ?? 5000],
  );
}

/** Drops the group and its logins, logins first (each as roleProvider.delete does: sessions, DROP OWNED, DROP ROLE). */
export async function dropLogins(
  db: Queryable,
  spec: RoleLimits & { group: string; logins: readonly [string, string]; cleanupIn?: Queryable[] },
): Promise<void> {
  const { group, logins, cleanupIn, ...limits } = spec;
  for (const name of [...logins, group])
    await roleProvider.delete(db, { name, ...limits, ...(cleanupIn ? { cleanupIn } : {}) });
}
