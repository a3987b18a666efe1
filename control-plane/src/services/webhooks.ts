import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import {
  type DeliveryLogEntry,
  deleteWebhook,
  findWebhook,
  insertWebhook,
  listDeliveries,
  listWebhooks,
  type Webhook,
  webhookSecretName,
} from '../db/webhooks.js';
import { TenantryError } from '../domain/errors.js';
import type { EventType } from '../domain/events.js';
import { newWebhookId } from '../domain/ids.js';
import { PLATFORM_KEY_ALIAS } from '../domain/naming.js';
import type { KeyStore, SecretStore } from '../domain/ports.js';
import type { RequestContext } from './tenants.js';

/**
 * Webhooks (docs/lifecycle.md): an admin registers a URL and the event types it wants, and gets the
 * signing secret once; it is kept in the secret store (never in a row, a log or a response after
 * this one). A URL whose host is (or resolves to) a private or link-local address is refused unless
 * an operator allowed its network; every delivery checks the address it connects to again.
 */
export class WebhookService {
  private platformKey: Promise<unknown> | undefined;

  constructor(
    private readonly db: Db,
    /**
     * Where signing secrets are kept: the local target's key store, or Secrets Manager (aws/store.ts:
     * the aws target, and the local target with TENANTRY_SECRETS=aws), under the platform key, which
     * `ensureKey` creates the first time a webhook is registered.
     */
    private readonly store: (SecretStore & Partial<Pick<KeyStore, 'ensureKey'>>) | undefined,
    /** Where a webhook may point (webhooks/addresses.ts) and how its secret is made (webhooks/signing.ts). */
    private readonly signing: {
      urlRefusal(url: string): Promise<string | null>;
      generateSecret(): string;
    },
    private readonly target: string,
  ) {}

  private assertAvailable(): SecretStore {
    if (!this.store)
      throw new TenantryError(
        'WEBHOOKS_NOT_AVAILABLE_ON_TARGET',
        `webhooks are not available on the ${this.target} target: this process has no secret store for their signing secrets; pull events from GET /v1/events instead`,
      );
    return this.store;
  }

  async create(
    ctx: RequestContext,
    input: { url: string; eventTypes: EventType[]; description?: string },
  ): Promise<{ webhook: Webhook; secret: string }> {
    const store = this.assertAvailable();
    const why = await this.signing.urlRefusal(input.url);
    if (why) throw new TenantryError('WEBHOOK_URL_REFUSED', `webhook URL refused: ${why}`);
    const id = newWebhookId();
    const secret = this.signing.generateSecret();
    // The secret first (outside the transaction: the store has its own connections); a webhook row
    // never exists without it. A secret whose row then fails to commit is never used.
    await this.ensurePlatformKey(store);
    await store.putSecret(webhookSecretName(id), PLATFORM_KEY_ALIAS, { secret });
    try {
      const webhook = await this.db.tx(async (q) => {
        const w = await insertWebhook(q, {
          id,
          url: input.url,
          eventTypes: [...new Set(input.eventTypes)].sort(),
          description: input.description ?? null,
          createdBy: ctx.actor.id,
        });
        await appendAudit(q, {
          actor: ctx.actor,
          action: 'webhook.create',
          requestId: ctx.requestId,
          // The host only: a webhook URL often carries a token in its path or query.
          details: { webhookId: id, host: new URL(input.url).host, eventTypes: w.eventTypes },
        });
        return w;
      });
      return { webhook, secret };
    } catch (e) {
      await store.deleteSecret(webhookSecretName(id)).catch(() => undefined);
      throw e;
    }
  }

  /** The platform key the secrets are written under, made once per process (idempotent where it exists). */
  private async ensurePlatformKey(store: SecretStore & Partial<Pick<KeyStore, 'ensureKey'>>): Promise<void> {
    if (!store.ensureKey) return;
    this.platformKey ??= store.ensureKey(null, PLATFORM_KEY_ALIAS).catch((e: unknown) => {
      this.platformKey = undefined;
      throw e;
    });
    await this.platformKey;
  }

  list(): Promise<Webhook[]> {
    return listWebhooks(this.db);
  }

  async get(id: string): Promise<Webhook> {
    const w = await findWebhook(this.db, id);
    if (!w) throw new TenantryError('WEBHOOK_NOT_FOUND', `no webhook ${id}`);
    return w;
  }

  /** Deletes a webhook: its pending deliveries are abandoned, its secret shredded; its log stays. */
  async delete(ctx: RequestContext, id: string): Promise<Webhook> {
    const w = await this.db.tx(async (q) => {
      const found = await findWebhook(q, id, { forUpdate: true });
      if (!found) throw new TenantryError('WEBHOOK_NOT_FOUND', `no webhook ${id}`);
      await deleteWebhook(q, id);
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'webhook.delete',
        requestId: ctx.requestId,
        details: { webhookId: id, host: new URL(found.url).host },
      });
      return { ...found, status: 'deleted' as const };
    });
    await this.store?.deleteSecret(webhookSecretName(id)).catch(() => undefined);
    return w;
  }

  async deliveries(
    id: string,
    f: { limit: number; before?: number; status?: string },
  ): Promise<DeliveryLogEntry[]> {
    await this.get(id);
    return listDeliveries(this.db, id, f);
  }
}
