import type { Db } from '../db/db.js';
import { listEvents } from '../db/outbox.js';
import { findTenantBySlug } from '../db/repo.js';
import { TenantryError } from '../domain/errors.js';
import type { LifecycleEvent } from '../domain/events.js';

/**
 * GET /v1/events, for consumers that pull (docs/lifecycle.md): published events in order, read past a
 * position (`after`, the last `seq` seen). Published means numbered after its change committed
 * (db/outbox.ts), so a consumer that stores its last `seq` and reads on from it never misses an event.
 */
export class EventService {
  constructor(private readonly db: Db) {}

  async list(f: {
    after: number;
    limit: number;
    tenant?: string;
    types?: string[];
  }): Promise<{ items: LifecycleEvent[]; next: number }> {
    let tenantId: string | undefined;
    if (f.tenant !== undefined) {
      const t = await findTenantBySlug(this.db, f.tenant);
      if (!t) throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${f.tenant}`);
      tenantId = t.id;
    }
    const items = await listEvents(this.db, {
      after: f.after,
      limit: f.limit,
      ...(tenantId ? { tenantId } : {}),
      ...(f.types?.length ? { types: f.types } : {}),
    });
    return { items, next: items.at(-1)?.seq ?? f.after };
  }
}
