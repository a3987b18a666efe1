import crypto, { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { Role } from '../domain/auth.js';
import { newTokenId } from '../domain/ids.js';
import type { Queryable } from '../domain/queryable.js';

/**
 * Tokens are 256 random bits, so a single SHA-256 is a sound at-rest hash (no password stretching
 * needed). Every authenticated request hashes its token: Node's one-shot `crypto.hash` (20.12 and
 * later) takes a fifth of the time of a Hash object; older Node 20 releases use the Hash object.
 */
const oneShot = typeof crypto.hash === 'function';
export const hashToken = (token: string): Buffer =>
  oneShot ? crypto.hash('sha256', token, 'buffer') : createHash('sha256').update(token).digest();
/** The same hash as base64: what the API process's token cache is keyed by. */
export const tokenKey = (token: string): string =>
  oneShot ? crypto.hash('sha256', token, 'base64') : createHash('sha256').update(token).digest('base64');
export const generateToken = (): string => `tnt_${randomBytes(32).toString('base64url')}`;

export interface TokenInfo {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  revokedAt: string | null;
}

interface Row {
  id: string;
  name: string;
  role: Role;
  created_at: Date;
  revoked_at: Date | null;
}
const toInfo = (r: Row): TokenInfo => ({
  id: r.id,
  name: r.name,
  role: r.role,
  createdAt: r.created_at.toISOString(),
  revokedAt: r.revoked_at ? r.revoked_at.toISOString() : null,
});

export async function createToken(
  q: Queryable,
  input: { name: string; role: Role; createdBy: string | null; token?: string },
): Promise<{ info: TokenInfo; token: string }> {
  const token = input.token ?? generateToken();
  const { rows } = await q.query<Row & Record<string, unknown>>(
    `INSERT INTO api_tokens (id, name, role, token_hash, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING *`,
    [newTokenId(), input.name, input.role, hashToken(token), input.createdBy],
  );
  return { info: toInfo(rows[0] as Row), token };
}

export async function listTokens(q: Queryable): Promise<TokenInfo[]> {
  const { rows } = await q.query<Row & Record<string, unknown>>(
    'SELECT * FROM api_tokens ORDER BY created_at, id',
  );
  return rows.map((r) => toInfo(r as Row));
}

/**
 * The channel on which a revocation names its token id. NOTIFY is transactional: the API processes
 * hear it when the revoking transaction commits, never before and never if it rolls back.
 */
export const TOKEN_REVOCATIONS = 'tenantry_tokens';

/** Revokes a token and announces it on TOKEN_REVOCATIONS, in the caller's transaction. */
export async function revokeToken(q: Queryable, id: string): Promise<TokenInfo | null> {
  const { rows } = await q.query<Row & Record<string, unknown>>(
    `WITH revoked AS (
       UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING *
     )
     SELECT revoked.*, pg_notify($2, revoked.id) FROM revoked`,
    [id, TOKEN_REVOCATIONS],
  );
  return rows[0] ? toInfo(rows[0] as Row) : null;
}

export async function tokenByHash(q: Queryable, hash: Buffer): Promise<TokenInfo | null> {
  const { rows } = await q.query<Row & Record<string, unknown>>(
    'SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL',
    [hash],
  );
  return rows[0] ? toInfo(rows[0] as Row) : null;
}

export async function hasAnyAdmin(q: Queryable): Promise<boolean> {
  const { rows } = await q.query(
    `SELECT 1 FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL LIMIT 1`,
  );
  return rows.length > 0;
}

export async function tokenHashExists(q: Queryable, token: string): Promise<boolean> {
  const { rows } = await q.query('SELECT 1 FROM api_tokens WHERE token_hash = $1', [hashToken(token)]);
  return rows.length > 0;
}

/** Waits before reconnect attempt `attempt` (0, 1, ...); rejects when `signal` aborts. */
export type Backoff = (attempt: number, signal: AbortSignal) => Promise<void>;

/** 100 ms doubling up to 5 s, with jitter so that API processes do not reconnect in step. */
export const exponentialBackoff: Backoff = (attempt, signal) =>
  sleep(Math.min(5_000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2), undefined, { signal, ref: false });

export interface RevocationHandlers {
  /** LISTEN is in place, at first or again: anything announced while it was not has been missed. */
  listening(): void;
  revoked(tokenId: string): void;
  /** The session is gone; a new one is attempted after a backoff. */
  lost(err: Error, attempt: number): void;
}

/**
 * Listens for token revocations on one dedicated session: LISTEN holds its session, so it cannot be a
 * pooled one. After an error or the end of the session it connects again with a backoff, until closed.
 * A notification only ever evicts a cache entry, so a stranger able to NOTIFY on the control database
 * can cost us lookups, never grant a token.
 */
export class TokenRevocationListener {
  private running: Promise<void> | null = null;
  private readonly stop = new AbortController();

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly on: RevocationHandlers,
    private readonly backoff: Backoff = exponentialBackoff,
  ) {}

  get closed(): boolean {
    return this.stop.signal.aborted;
  }

  /** Starts listening (idempotent; a no-op once closed). */
  start(): void {
    if (!this.running && !this.closed) this.running = this.run();
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.running;
  }

  private async run(): Promise<void> {
    // Every wait below also ends when close() aborts: pg's connect() may never settle once its
    // socket is destroyed mid-connect, so the loop never waits on it alone.
    const closed = new Promise<never>((_, reject) => {
      this.stop.signal.addEventListener('abort', () => reject(new Error('closed')), { once: true });
    });
    closed.catch(() => undefined);
    for (let attempt = 0; !this.closed; ) {
      const client = new pg.Client({
        ...this.config,
        application_name: 'tenantry-token-listener',
        connectionTimeoutMillis: 10_000,
        // A session lost without a word (a dropped network path) is noticed, not trusted for hours.
        keepAlive: true,
        keepAliveInitialDelayMillis: 10_000,
      });
      const lost = new Promise<Error>((resolve) => {
        client.on('error', resolve);
        client.on('end', () => resolve(new Error('the listening session ended')));
      });
      let connected = false;
      let err: Error | null = null;
      try {
        await Promise.race([client.connect(), closed]);
        connected = true;
        client.on('notification', (n) => {
          if (n.channel === TOKEN_REVOCATIONS && n.payload) this.on.revoked(n.payload);
        });
        await Promise.race([client.query(`LISTEN ${TOKEN_REVOCATIONS}`), closed]);
        attempt = 0;
        this.on.listening();
        err = await Promise.race([lost, closed]);
      } catch (e) {
        err = e instanceof Error ? e : new Error(String(e));
      }
      // Mid-connect, end() destroys the socket and may never resolve: wait only for a session's goodbye.
      const ended = client.end().catch(() => undefined);
      if (connected) await ended;
      if (this.closed) return;
      this.on.lost(err, attempt);
      try {
        await this.backoff(attempt++, this.stop.signal);
      } catch {
        // Aborted: closed while waiting.
      }
    }
  }
}
