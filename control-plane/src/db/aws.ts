import type { Queryable } from '../domain/queryable.js';
import { appendAudit } from './audit.js';

/**
 * The aws target's bookkeeping in the control database: each tenant stack's Pulumi settings, and
 * the queue of account closures (migration 0011).
 */

/** What a stack's `Pulumi.<stack>.yaml` holds besides its config: the secrets provider and its state. */
export interface StackSettingsRecord {
  secretsProvider?: string;
  encryptedKey?: string;
  encryptionSalt?: string;
}

export async function getStackSettings(q: Queryable, stack: string): Promise<StackSettingsRecord | null> {
  const { rows } = await q.query<{
    secrets_provider: string | null;
    encrypted_key: string | null;
    encryption_salt: string | null;
  }>('SELECT secrets_provider, encrypted_key, encryption_salt FROM pulumi_stack_settings WHERE stack = $1', [
    stack,
  ]);
  const r = rows[0];
  if (!r) return null;
  return {
    ...(r.secrets_provider ? { secretsProvider: r.secrets_provider } : {}),
    ...(r.encrypted_key ? { encryptedKey: r.encrypted_key } : {}),
    ...(r.encryption_salt ? { encryptionSalt: r.encryption_salt } : {}),
  };
}

export async function saveStackSettings(q: Queryable, stack: string, s: StackSettingsRecord): Promise<void> {
  await q.query(
    `INSERT INTO pulumi_stack_settings (stack, secrets_provider, encrypted_key, encryption_salt)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (stack) DO UPDATE SET secrets_provider = EXCLUDED.secrets_provider,
       encrypted_key = EXCLUDED.encrypted_key, encryption_salt = EXCLUDED.encryption_salt, updated_at = now()`,
    [stack, s.secretsProvider ?? null, s.encryptedKey ?? null, s.encryptionSalt ?? null],
  );
}

/** Who requests account closures in the audit log. */
export const ACCOUNT_CLOSURE_ACTOR = { id: null, name: 'tenantry-account-closures', role: 'system' };

/** Queues an account's closure (once: a repeated offboarding step queues nothing new), audited with it. */
export async function queueAccountClosure(
  q: Queryable,
  c: { accountId: string; tenantId: string; tenantSlug: string; operationId: string },
): Promise<boolean> {
  const { rowCount } = await q.query(
    `INSERT INTO account_closures (account_id, tenant_id, tenant_slug) VALUES ($1, $2, $3)
     ON CONFLICT (account_id) DO NOTHING`,
    [c.accountId, c.tenantId, c.tenantSlug],
  );
  if (!rowCount) return false;
  await appendAudit(q, {
    actor: ACCOUNT_CLOSURE_ACTOR,
    action: 'account.closure.queued',
    tenantId: c.tenantId,
    tenantSlug: c.tenantSlug,
    operationId: c.operationId,
    details: { accountId: c.accountId },
  });
  return true;
}

/** CloseAccount requests sent since `since` (what the rolling quota counts). */
export async function closuresRequestedSince(q: Queryable, since: Date): Promise<number> {
  const { rows } = await q.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM account_closures WHERE requested_at >= $1',
    [since],
  );
  return rows[0]?.n ?? 0;
}

export interface QueuedClosure {
  accountId: string;
  tenantId: string;
  tenantSlug: string;
}

/** The oldest queued closures, at most `limit`, locked for this transaction (one drainer at a time). */
export async function takeQueuedClosures(q: Queryable, limit: number): Promise<QueuedClosure[]> {
  if (limit <= 0) return [];
  const { rows } = await q.query<{ account_id: string; tenant_id: string; tenant_slug: string }>(
    `SELECT account_id, tenant_id::text, tenant_slug FROM account_closures
      WHERE requested_at IS NULL ORDER BY queued_at, account_id LIMIT $1 FOR UPDATE SKIP LOCKED`,
    [limit],
  );
  return rows.map((r) => ({ accountId: r.account_id, tenantId: r.tenant_id, tenantSlug: r.tenant_slug }));
}

/** Records that CloseAccount was sent, audited in the same transaction. */
export async function markClosureRequested(q: Queryable, c: QueuedClosure, at: Date): Promise<void> {
  await q.query('UPDATE account_closures SET requested_at = $2 WHERE account_id = $1', [c.accountId, at]);
  await appendAudit(q, {
    actor: ACCOUNT_CLOSURE_ACTOR,
    action: 'account.closure.requested',
    tenantId: c.tenantId,
    tenantSlug: c.tenantSlug,
    details: { accountId: c.accountId },
  });
}

/** How many closures wait for quota. */
export async function queuedClosures(q: Queryable): Promise<number> {
  const { rows } = await q.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM account_closures WHERE requested_at IS NULL',
  );
  return rows[0]?.n ?? 0;
}
