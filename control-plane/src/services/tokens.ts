import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import {
  createToken,
  hasAnyAdmin,
  listTokens,
  revokeToken,
  type TokenInfo,
  tokenHashExists,
} from '../db/tokens.js';
import type { Role } from '../domain/auth.js';
import { TenantryError } from '../domain/errors.js';
import type { RequestContext } from './tenants.js';

/**
 * What the service needs of the authentication cache: a revocation takes effect at once in this
 * process (other processes hear of it from the revoke's notification, see db/tokens.ts).
 */
export interface RevocationListener {
  evict(tokenId: string): void;
}

/**
 * API token use cases. Each change and its audit record commit in one transaction; the token
 * itself is returned once, at creation, and only its hash is stored.
 */
export class TokenService {
  constructor(
    private readonly db: Db,
    private readonly cache: RevocationListener,
  ) {}

  async create(
    ctx: RequestContext,
    input: { name: string; role: Role },
  ): Promise<{ token: string; info: TokenInfo }> {
    return this.db.tx(async (q) => {
      const created = await createToken(q, { name: input.name, role: input.role, createdBy: ctx.actor.id });
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'token.create',
        requestId: ctx.requestId,
        details: { tokenId: created.info.id, role: created.info.role, name: created.info.name },
      });
      return created;
    });
  }

  list(): Promise<TokenInfo[]> {
    return listTokens(this.db);
  }

  async revoke(ctx: RequestContext, id: string): Promise<TokenInfo> {
    const info = await this.db.tx(async (q) => {
      const revoked = await revokeToken(q, id);
      if (!revoked) throw new TenantryError('TOKEN_NOT_FOUND', `no token ${id}`);
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'token.revoke',
        requestId: ctx.requestId,
        details: { tokenId: revoked.id },
      });
      return revoked;
    });
    this.cache.evict(info.id);
    return info;
  }

  /**
   * Seeds the configured admin token, or, when none is configured and no admin exists yet,
   * generates one and returns it (the caller shows it once; only its hash is stored).
   */
  async seedAdmin(configured: string | undefined): Promise<string | undefined> {
    if (configured) {
      if (!(await tokenHashExists(this.db, configured))) {
        await createToken(this.db, {
          name: 'bootstrap-admin',
          role: 'admin',
          createdBy: null,
          token: configured,
        });
      }
      return undefined;
    }
    return this.db.tx(async (q) => {
      await q.query(`SELECT pg_advisory_xact_lock(hashtext('tenantry.seed-admin'))`);
      if (await hasAnyAdmin(q)) return undefined;
      const { token } = await createToken(q, { name: 'generated-admin', role: 'admin', createdBy: null });
      return token;
    });
  }
}
