import { EventEmitter } from 'node:events';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Db } from '../db/db.js';
import {
  type Backoff,
  type TokenInfo,
  TokenRevocationListener,
  tokenByHash,
  tokenKey,
} from '../db/tokens.js';
import {
  can,
  type Permission,
  type Role,
  TOKEN_CHARS,
  TOKEN_MAX_LENGTH,
  TOKEN_MIN_LENGTH,
} from '../domain/auth.js';
import { TenantryError } from '../domain/errors.js';

export interface Principal {
  id: string;
  name: string;
  role: Role;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /** The permission a route needs; routes without one are public (health, metrics, docs). */
    permission?: Permission;
  }
}

/** Where the cache reports its listener's losses and recoveries (a pino logger fits). */
export interface TokenCacheLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface TokenCacheOptions {
  /** How long a lookup is trusted: the bound on a revocation that no notification reached. */
  ttlMs?: number;
  log?: TokenCacheLog;
  /** The wait before each reconnect of the listener (tests gate it). */
  backoff?: Backoff;
}

/**
 * A short-lived cache of token lookups, invalidated across API processes. Revoking a token notifies
 * every process when the revoke commits (db/tokens.ts), and each one evicts the token at once. The
 * cache is only used while its listening session is up: it is emptied when that session is lost and
 * again once LISTEN is back (a notification sent in between is lost). The TTL bounds the one case left,
 * a session that died without a word: a revoked token works there for at most `ttlMs` (5 s).
 *
 * Events: `listening` (LISTEN in place), `evicted` (token id, on a notification), `lost` (Error).
 * The listener starts with the first lookup, so a process that never authenticates never opens it.
 */
export class TokenCache extends EventEmitter {
  private readonly entries = new Map<string, { info: TokenInfo | null; until: number }>();
  private readonly keyById = new Map<string, string>();
  /** Bumped by every eviction: a lookup that overlapped one does not cache what it read. */
  private epoch = 0;
  /**
   * Lookups on their way to the database, by token hash: when an entry expires under load, the
   * requests carrying that token wait for one query instead of sending one each (ten at once, every
   * five seconds, at ten concurrent requests). A lookup joins one only if no eviction happened since
   * it started, so a revocation is never answered by a read from before it.
   */
  private readonly inflight = new Map<string, { epoch: number; info: Promise<TokenInfo | null> }>();
  private active = false;
  private wasLost = false;
  private readonly ttlMs: number;
  private readonly log: TokenCacheLog | undefined;
  private readonly listener: TokenRevocationListener;

  constructor(
    private readonly db: Db,
    opts: TokenCacheOptions = {},
  ) {
    super();
    this.ttlMs = opts.ttlMs ?? 5_000;
    this.log = opts.log;
    const { options } = db.pool;
    // pg-pool keeps the password non-enumerable: carry it over explicitly.
    const config = { ...options, password: options.password };
    this.listener = new TokenRevocationListener(
      config,
      {
        listening: () => {
          this.clear();
          this.active = true;
          if (this.wasLost) this.log?.info({}, 'token revocation listener listening again');
          this.wasLost = false;
          this.emit('listening');
        },
        revoked: (id) => {
          this.evict(id);
          this.emit('evicted', id);
        },
        lost: (err, attempt) => {
          this.active = false;
          this.wasLost = true;
          this.clear();
          if (attempt === 0)
            this.log?.warn({ err: err.message }, 'token revocation listener lost; reconnecting');
          this.emit('lost', err);
        },
      },
      opts.backoff,
    );
  }

  /** Whether the listening session is up (and so lookups are cached). */
  get listening(): boolean {
    return this.active;
  }

  /** Starts listening for revocations (idempotent). The first lookup does it too. */
  start(): void {
    this.listener.start();
  }

  /**
   * The cached lookup of a token, without waiting: undefined when it is not cached (or expired), and
   * then `lookup` reads it. Most requests carry a token read a moment ago, and answering those
   * synchronously spares each one a promise and a turn of the microtask queue.
   */
  cached(token: string): TokenInfo | null | undefined {
    return this.fresh(tokenKey(token));
  }

  /** The entry for a token's key while its TTL lasts (entries exist only while listening). */
  private fresh(key: string): TokenInfo | null | undefined {
    const hit = this.entries.get(key);
    return hit && hit.until > Date.now() ? hit.info : undefined;
  }

  async lookup(token: string): Promise<TokenInfo | null> {
    this.start();
    const key = tokenKey(token);
    const hit = this.fresh(key);
    if (hit !== undefined) return hit;
    const epoch = this.epoch;
    const joined = this.inflight.get(key);
    if (joined && joined.epoch === epoch) return joined.info;
    const info = tokenByHash(this.db, Buffer.from(key, 'base64'));
    this.inflight.set(key, { epoch, info });
    try {
      const found = await info;
      if (this.active && epoch === this.epoch) {
        if (this.entries.size > 10_000) this.clear();
        this.entries.set(key, { info: found, until: Date.now() + this.ttlMs });
        if (found) this.keyById.set(found.id, key);
      }
      return found;
    } finally {
      if (this.inflight.get(key)?.info === info) this.inflight.delete(key);
    }
  }

  /** Forgets a token (revoked here, or announced revoked by another process). */
  evict(tokenId: string): void {
    this.epoch++;
    const key = this.keyById.get(tokenId);
    if (key === undefined) return;
    this.keyById.delete(tokenId);
    this.entries.delete(key);
  }

  clear(): void {
    this.epoch++;
    this.entries.clear();
    this.keyById.clear();
  }

  /** Stops the listener and empties the cache (idempotent). */
  async close(): Promise<void> {
    this.active = false;
    await this.listener.close();
    this.clear();
  }
}

const BEARER = new RegExp(`^Bearer (${TOKEN_CHARS}{${TOKEN_MIN_LENGTH},${TOKEN_MAX_LENGTH}})$`);

/** The bearer token a request carries, or null when there is none or it is malformed. */
function bearerToken(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  const m = typeof header === 'string' ? BEARER.exec(header) : null;
  return m?.[1] ?? null;
}

/** Sets the request's principal from its token's lookup, or says why it may not go on. */
function authorize(
  request: FastifyRequest,
  info: TokenInfo | null,
  permission: Permission,
): Error | undefined {
  if (!info) return new TenantryError('UNAUTHENTICATED', 'the token is unknown or revoked');
  request.principal = { id: info.id, name: info.name, role: info.role };
  if (!can(info.role, permission))
    return new TenantryError('FORBIDDEN', `role ${info.role} may not ${permission}`);
  return undefined;
}

export default fp(
  async (app: FastifyInstance, opts: { cache: TokenCache }) => {
    app.decorateRequest('principal', null);
    // The app is the cache's one user: its listener stops with the app (closing twice is harmless).
    app.addHook('onClose', async () => {
      await opts.cache.close();
    });
    // A callback hook, so a token found in the cache lets the request go on at once (TokenCache.cached).
    app.addHook('onRequest', (request, _reply, done) => {
      const permission = request.routeOptions.config?.permission;
      if (!permission) return done();
      const token = bearerToken(request);
      if (token === null)
        return done(new TenantryError('UNAUTHENTICATED', 'send Authorization: Bearer <token>'));
      const hit = opts.cache.cached(token);
      if (hit !== undefined) return done(authorize(request, hit, permission));
      opts.cache.lookup(token).then(
        (info) => done(authorize(request, info, permission)),
        (e: Error) => done(e),
      );
    });
  },
  { name: 'tenantry-auth', dependencies: ['tenantry-errors'] },
);

export function actorOf(request: FastifyRequest): { id: string; name: string; role: string } {
  const p = request.principal;
  if (!p) throw new TenantryError('UNAUTHENTICATED', 'not authenticated');
  return { id: p.id, name: p.name, role: p.role };
}
