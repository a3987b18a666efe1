import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Db } from '../db/db.js';
import { hashToken, type TokenInfo, tokenByHash } from '../db/tokens.js';
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

/** A short-lived cache of token lookups; revocation through the API clears it at once. */
export class TokenCache {
  private readonly entries = new Map<string, { info: TokenInfo | null; until: number }>();
  constructor(
    private readonly db: Db,
    private readonly ttlMs = 5_000,
  ) {}

  async lookup(token: string): Promise<TokenInfo | null> {
    const hash = hashToken(token);
    const key = hash.toString('base64');
    const hit = this.entries.get(key);
    if (hit && hit.until > Date.now()) return hit.info;
    const info = await tokenByHash(this.db, hash);
    if (this.entries.size > 10_000) this.entries.clear();
    this.entries.set(key, { info, until: Date.now() + this.ttlMs });
    return info;
  }

  clear(): void {
    this.entries.clear();
  }
}

const BEARER = new RegExp(`^Bearer (${TOKEN_CHARS}{${TOKEN_MIN_LENGTH},${TOKEN_MAX_LENGTH}})$`);

async function authenticate(cache: TokenCache, request: FastifyRequest): Promise<Principal> {
  const header = request.headers.authorization;
  const m = typeof header === 'string' ? BEARER.exec(header) : null;
  if (!m?.[1]) throw new TenantryError('UNAUTHENTICATED', 'send Authorization: Bearer <token>');
  const info = await cache.lookup(m[1]);
  if (!info) throw new TenantryError('UNAUTHENTICATED', 'the token is unknown or revoked');
  return { id: info.id, name: info.name, role: info.role };
}

export default fp(
  async (app: FastifyInstance, opts: { cache: TokenCache }) => {
    app.decorateRequest('principal', null);
    app.addHook('onRequest', async (request) => {
      const permission = request.routeOptions.config?.permission;
      if (!permission) return;
      const principal = await authenticate(opts.cache, request);
      request.principal = principal;
      if (!can(principal.role, permission)) {
        throw new TenantryError('FORBIDDEN', `role ${principal.role} may not ${permission}`);
      }
    });
  },
  { name: 'tenantry-auth', dependencies: ['tenantry-errors'] },
);

export function actorOf(request: FastifyRequest): { id: string; name: string; role: string } {
  const p = request.principal;
  if (!p) throw new TenantryError('UNAUTHENTICATED', 'not authenticated');
  return { id: p.id, name: p.name, role: p.role };
}
