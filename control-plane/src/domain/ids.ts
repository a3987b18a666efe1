import { randomBytes, randomUUID } from 'node:crypto';

/**
 * Prefixed, sortable ids: `<prefix>_<12 hex of ms time><16 hex random>`.
 * Tenants use a plain UUID because the data plane keys every row by `tenant_id uuid`.
 */
function prefixed(prefix: string): string {
  const time = Date.now().toString(16).padStart(12, '0');
  return `${prefix}_${time}${randomBytes(8).toString('hex')}`;
}

export const newOperationId = (): string => prefixed('op');
export const newTokenId = (): string => prefixed('tok');
export const newRolloutId = (): string => prefixed('ro');
export const newTenantId = (): string => randomUUID();
export const newExportId = (): string => prefixed('exp');
export const newEventId = (): string => prefixed('evt');
export const newWebhookId = (): string => prefixed('wh');

/**
 * A lease owner for one run of a runner (`<runnerId>:<token>`): leases of operations and webhook
 * streams are held by a run, so two runs in one process never both hold one. The runner's own id is
 * the part before the colon (db/handback.ts hands back every run of a stopping runner by it).
 */
export const runLeaseOwner = (runnerId: string): string => `${runnerId}:${randomBytes(6).toString('hex')}`;
