import { createHash } from 'node:crypto';
import type { SecretStore } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import { mapLimit } from '../lib/concurrency.js';
import { parseScramVerifier, scramMatches } from '../providers/postgres/scram.js';

/**
 * Whether each Tenantry login still has the password of its stored secret, checked without sending
 * the password anywhere: pg_authid holds the login's SCRAM verifier, and the secret's password with
 * the verifier's salt and iteration count gives StoredKey = H(HMAC(SaltedPassword, "Client Key"))
 * (RFC 5802/7677), which must match. Every login may run `ALTER ROLE <itself> PASSWORD …`, and its
 * stored secret (what its connection descriptor hands out) is then stale.
 *
 * The key derivation is deliberately slow (4096 PBKDF2 rounds, about 1.2 ms of CPU), 5 s for 4,000
 * logins, and decrypting every secret would add one store read each: too much for every sweep. The
 * outcome is a function of the verifier and the secret version alone, so it is kept: in memory, and
 * for a match, in `drift_verified_credentials` (role, secret version, SHA-256 of the verifier; never
 * the verifier), which survives restarts and is shared by every control-plane process. A sweep
 * compares each login's verifier hash (computed by the server in the roles read) and its secret's
 * version (the secrets read) with what is kept, and derives keys only for logins whose verifier or
 * secret changed since they were last checked, or were never checked: at most `budget` of them per
 * sweep, logins whose password changed since it was verified first. Logins found wrong are checked
 * again at every sweep whatever the budget, so a repair is confirmed at once. The rest wait for the
 * next sweeps, and the run says how many did (`summary.notChecked`).
 */
export type CredentialStatus = 'ok' | 'differs' | 'none' | 'md5' | 'unknown-format';

/** A Tenantry login to check: its role, the secret holding its password, its verifier's SHA-256 (hex). */
export interface Login {
  role: string;
  secretName: string;
  /** null: the role has no password at all. */
  verifierHash: string | null;
}

export interface CredentialCheck {
  /** Logins checked (or known) this sweep; a login left out was not checked. */
  statuses: Map<string, CredentialStatus>;
  /** Logins not checked this sweep (over the budget, or their secret unreadable). */
  unchecked: number;
}

/**
 * Tenantry writes verifiers with 4096 iterations (scramVerifier, and Postgres' default
 * scram_iterations). A tenant may set its own with any count (scram_iterations is a user setting):
 * one above this cap cannot be Tenantry's, and is reported without spending seconds deriving it.
 */
export const MAX_CHECKED_ITERATIONS = 16_384;

/** Logins whose keys a sweep derives, at most, beyond those found wrong last time (about 0.3 s of CPU). */
export const DEFAULT_CREDENTIAL_CHECKS = 256;

/** Checks run at once: libuv's thread pool has four threads by default. */
const CONCURRENCY = 4;

export const verifierHash = (verifier: string): string =>
  createHash('sha256').update(verifier, 'utf8').digest('hex');

interface Known {
  version: number;
  hash: string;
  status: CredentialStatus;
}

export class CredentialChecker {
  /** role → the last outcome this process saw or computed, for that secret version and verifier. */
  private readonly known = new Map<string, Known>();
  /** Logins found wrong by the last check: checked again at every sweep, whatever the budget. */
  private flagged = new Set<string>();

  constructor(
    private readonly control: Queryable,
    private readonly secrets: Pick<SecretStore, 'getSecret'>,
    /** Reads the current verifiers (pg_authid.rolpassword) of these roles, in one statement. */
    private readonly readVerifiers: (roles: string[]) => Promise<Map<string, string | null>>,
    private readonly budget = DEFAULT_CREDENTIAL_CHECKS,
  ) {}

  /** `versions`: secret name → latest version (the secrets read). A login whose secret is missing is skipped. */
  async check(logins: Login[], versions: ReadonlyMap<string, number>): Promise<CredentialCheck> {
    const statuses = new Map<string, CredentialStatus>();
    const pending: (Login & { version: number })[] = [];
    for (const l of logins) {
      const version = versions.get(l.secretName);
      if (version === undefined) continue; // the secret finding says why
      if (l.verifierHash === null) {
        statuses.set(l.role, 'none');
        continue;
      }
      const k = this.known.get(l.role);
      if (k && k.version === version && k.hash === l.verifierHash) statuses.set(l.role, k.status);
      else pending.push({ ...l, version });
    }
    let unchecked = 0;
    if (pending.length > 0) {
      // Matches verified earlier, by this process before a restart or by another one.
      const seen = new Set<string>();
      const { rows } = await this.control.query<{ role: string; version: number; hash: string }>(
        `SELECT role_name AS role, secret_version AS version, verifier_sha256 AS hash
           FROM drift_verified_credentials WHERE role_name = ANY ($1::text[])`,
        [pending.map((p) => p.role)],
      );
      const stored = new Map(rows.map((r) => [r.role, r]));
      const todo: typeof pending = [];
      for (const p of pending) {
        const s = stored.get(p.role);
        if (s && s.version === p.version && s.hash === p.verifierHash) {
          statuses.set(p.role, 'ok');
          this.known.set(p.role, { version: p.version, hash: s.hash, status: 'ok' });
        } else {
          if (s || this.known.has(p.role)) seen.add(p.role);
          todo.push(p);
        }
      }
      // Found wrong last time first (never left out), then changed since checked, then never checked.
      const rank = (p: Login) => (this.flagged.has(p.role) ? 0 : seen.has(p.role) ? 1 : 2);
      todo.sort((a, b) => rank(a) - rank(b) || (a.role < b.role ? -1 : a.role > b.role ? 1 : 0));
      const flaggedCount = todo.filter((p) => rank(p) === 0).length;
      const chosen = todo.slice(0, flaggedCount + this.budget);
      unchecked = todo.length - chosen.length;
      const verifiers = chosen.length > 0 ? await this.readVerifiers(chosen.map((p) => p.role)) : new Map();
      const verified: { role: string; secret: string; version: number; hash: string }[] = [];
      await mapLimit(chosen, CONCURRENCY, async (p) => {
        if (!verifiers.has(p.role)) return; // dropped meanwhile: the role finding says so
        const verifier = verifiers.get(p.role) as string | null;
        if (verifier === null) {
          statuses.set(p.role, 'none');
          return;
        }
        const hash = verifierHash(verifier);
        const v = parseScramVerifier(verifier);
        let status: CredentialStatus;
        let version = p.version;
        if (!v) status = verifier.startsWith('md5') ? 'md5' : 'unknown-format';
        else if (v.iterations > MAX_CHECKED_ITERATIONS) status = 'differs';
        else {
          const secret = await this.secrets.getSecret(p.secretName).catch(() => null);
          const password = secret?.value.password;
          if (!secret || typeof password !== 'string') {
            unchecked++; // unreadable (its key shredded, say): the secret finding says so
            return;
          }
          version = secret.version;
          status = (await scramMatches(password, verifier)) ? 'ok' : 'differs';
          if (status === 'ok') verified.push({ role: p.role, secret: p.secretName, version, hash });
        }
        this.known.set(p.role, { version, hash, status });
        statuses.set(p.role, status);
      });
      if (verified.length > 0) {
        await this.control.query(
          `INSERT INTO drift_verified_credentials (role_name, secret_name, secret_version, verifier_sha256)
           SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[])
           ON CONFLICT (role_name) DO UPDATE SET secret_name = excluded.secret_name,
             secret_version = excluded.secret_version, verifier_sha256 = excluded.verifier_sha256, verified_at = now()`,
          [
            verified.map((x) => x.role),
            verified.map((x) => x.secret),
            verified.map((x) => x.version),
            verified.map((x) => x.hash),
          ],
        );
      }
    }
    this.flagged = new Set([...statuses].filter(([, s]) => s !== 'ok').map(([r]) => r));
    // Forget roles that are gone (offboarded tenants), so a long-lived process does not accumulate them.
    if (this.known.size > 2 * logins.length + 64) {
      const live = new Set(logins.map((l) => l.role));
      for (const role of this.known.keys()) if (!live.has(role)) this.known.delete(role);
    }
    return { statuses, unchecked };
  }
}
