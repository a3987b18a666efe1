import type { Queryable } from '../domain/queryable.js';

/**
 * Webhooks and their deliveries (migration 0017): registrations, each stream's lease, the delivery
 * log. The signing secret is never here (the secret store holds it: `webhookSecretName`).
 */

export type WebhookStatus = 'enabled' | 'disabled' | 'deleted';

export interface Webhook {
  id: string;
  url: string;
  eventTypes: string[];
  description: string | null;
  status: WebhookStatus;
  disabledReason: string | null;
  failingSince: string | null;
  createdBy: string | null;
  createdAt: string;
  updatedAt: string;
}

/** The secret store's name of a webhook's signing secret. */
export const webhookSecretName = (id: string): string => `tenantry/platform/webhook/${id}`;

interface WebhookRow {
  id: string;
  url: string;
  event_types: string[];
  description: string | null;
  status: WebhookStatus;
  disabled_reason: string | null;
  failing_since: Date | null;
  created_by: string | null;
  created_at: Date;
  updated_at: Date;
}

const toWebhook = (r: WebhookRow): Webhook => ({
  id: r.id,
  url: r.url,
  eventTypes: r.event_types,
  description: r.description,
  status: r.status,
  disabledReason: r.disabled_reason,
  failingSince: r.failing_since?.toISOString() ?? null,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

export async function insertWebhook(
  q: Queryable,
  w: { id: string; url: string; eventTypes: string[]; description: string | null; createdBy: string | null },
): Promise<Webhook> {
  const { rows } = await q.query<WebhookRow & Record<string, unknown>>(
    `INSERT INTO webhooks (id, url, event_types, description, status, created_by)
     VALUES ($1, $2, $3::text[], $4, 'enabled', $5) RETURNING *`,
    [w.id, w.url, w.eventTypes, w.description, w.createdBy],
  );
  return toWebhook(rows[0] as WebhookRow);
}

export async function findWebhook(
  q: Queryable,
  id: string,
  opts: { forUpdate?: boolean } = {},
): Promise<Webhook | null> {
  const { rows } = await q.query<WebhookRow & Record<string, unknown>>(
    `SELECT * FROM webhooks WHERE id = $1 AND status <> 'deleted' ${opts.forUpdate ? 'FOR UPDATE' : ''}`,
    [id],
  );
  return rows[0] ? toWebhook(rows[0] as WebhookRow) : null;
}

/** Every webhook not deleted, oldest first. */
export async function listWebhooks(q: Queryable): Promise<Webhook[]> {
  const { rows } = await q.query<WebhookRow & Record<string, unknown>>(
    `SELECT * FROM webhooks WHERE status <> 'deleted' ORDER BY created_at, id`,
  );
  return rows.map((r) => toWebhook(r as WebhookRow));
}

/** Deletes a webhook (kept as a row for its delivery log's sake) and abandons what it had pending. */
export async function deleteWebhook(q: Queryable, id: string): Promise<void> {
  await q.query(`UPDATE webhooks SET status = 'deleted', updated_at = now() WHERE id = $1`, [id]);
  await abandonPending(q, id, 'the webhook was deleted');
}

async function abandonPending(q: Queryable, id: string, why: string): Promise<void> {
  await q.query(
    `UPDATE webhook_deliveries SET status = 'abandoned', last_error = coalesce(last_error || '; ', '') || $2
      WHERE webhook_id = $1 AND status = 'pending'`,
    [id, why],
  );
}

/** Disables a webhook that kept failing, abandoning its pending deliveries. False if it was not enabled. */
export async function disableWebhook(q: Queryable, id: string, reason: string): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE webhooks SET status = 'disabled', disabled_reason = $2, updated_at = now()
      WHERE id = $1 AND status = 'enabled'`,
    [id, reason],
  );
  if (!rowCount) return false;
  await abandonPending(q, id, 'the webhook was disabled');
  return true;
}

/* ---- streams: one webhook's deliveries of one tenant, one runner at a time */

/** Takes a stream's lease for `owner` if it is free (or already its own). False when another runner holds it. */
export async function claimStream(
  q: Queryable,
  webhookId: string,
  stream: string,
  owner: string,
  leaseMs: number,
): Promise<boolean> {
  const { rowCount } = await q.query(
    `INSERT INTO webhook_streams AS s (webhook_id, stream, lease_owner, lease_until)
     VALUES ($1, $2, $3, now() + make_interval(secs => $4::double precision / 1000))
     ON CONFLICT (webhook_id, stream) DO UPDATE SET lease_owner = EXCLUDED.lease_owner, lease_until = EXCLUDED.lease_until
      WHERE s.lease_until IS NULL OR s.lease_until < now() OR s.lease_owner = EXCLUDED.lease_owner`,
    [webhookId, stream, owner, leaseMs],
  );
  return (rowCount ?? 0) > 0;
}

/** When another runner's lease on a stream ends (null: free). */
export async function streamLeaseUntil(
  q: Queryable,
  webhookId: string,
  stream: string,
): Promise<Date | null> {
  const { rows } = await q.query<{ until: Date | null }>(
    'SELECT lease_until AS until FROM webhook_streams WHERE webhook_id = $1 AND stream = $2',
    [webhookId, stream],
  );
  return rows[0]?.until ?? null;
}

export async function releaseStream(
  q: Queryable,
  webhookId: string,
  stream: string,
  owner: string,
): Promise<void> {
  await q.query(
    `UPDATE webhook_streams SET lease_owner = NULL, lease_until = NULL
      WHERE webhook_id = $1 AND stream = $2 AND lease_owner = $3`,
    [webhookId, stream, owner],
  );
}

export interface DueDelivery {
  id: number;
  eventId: string;
  eventSeq: number;
  attempts: number;
  nextAttemptAt: Date;
  /** The event as a receiver gets it. */
  type: string;
  data: Record<string, unknown>;
  tenantId: string | null;
  tenantSlug: string | null;
  operationId: string | null;
  createdAt: Date;
}

/** The oldest pending delivery of a stream (its head: nothing after it goes first), with its event. */
export async function headDelivery(
  q: Queryable,
  webhookId: string,
  stream: string,
): Promise<DueDelivery | null> {
  const { rows } = await q.query<{
    id: string;
    event_id: string;
    event_seq: string;
    attempts: number;
    next_attempt_at: Date;
    type: string;
    data: Record<string, unknown>;
    tenant_id: string | null;
    tenant_slug: string | null;
    operation_id: string | null;
    created_at: Date;
  }>(
    `SELECT d.id, d.event_id, d.event_seq, d.attempts, d.next_attempt_at,
            e.type, e.data, e.tenant_id, e.tenant_slug, e.operation_id, e.created_at
       FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
      WHERE d.webhook_id = $1 AND d.stream = $2 AND d.status = 'pending'
      ORDER BY d.event_seq LIMIT 1`,
    [webhookId, stream],
  );
  const r = rows[0];
  if (!r) return null;
  return {
    id: Number(r.id),
    eventId: r.event_id,
    eventSeq: Number(r.event_seq),
    attempts: r.attempts,
    nextAttemptAt: r.next_attempt_at,
    type: r.type,
    data: r.data,
    tenantId: r.tenant_id,
    tenantSlug: r.tenant_slug,
    operationId: r.operation_id,
    createdAt: r.created_at,
  };
}

/**
 * A delivery's outcome, fenced by the stream's lease (a runner that lost it records nothing). A
 * success clears the webhook's failing streak; a failure schedules the next attempt and starts one.
 * Returns false when the lease was lost.
 */
export async function recordAttempt(
  q: Queryable,
  a: {
    deliveryId: number;
    webhookId: string;
    stream: string;
    owner: string;
    ok: boolean;
    status: number | null;
    error: string | null;
    nextAttemptAt: Date | null;
  },
): Promise<{ recorded: boolean; failingSince: Date | null; firstFailedAt: Date | null }> {
  const { rows } = await q.query<{ failing_since: Date | null; first_failed_at: Date | null }>(
    `WITH lease AS (
       SELECT 1 FROM webhook_streams WHERE webhook_id = $2 AND stream = $3 AND lease_owner = $4 FOR UPDATE),
     d AS (
       UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = now(), last_status = $6,
              last_error = $7, status = CASE WHEN $5 THEN 'delivered' ELSE status END,
              delivered_at = CASE WHEN $5 THEN now() END,
              first_failed_at = CASE WHEN $5 THEN first_failed_at ELSE coalesce(first_failed_at, now()) END,
              next_attempt_at = coalesce($8::timestamptz, next_attempt_at)
        WHERE id = $1 AND status = 'pending' AND EXISTS (SELECT 1 FROM lease) RETURNING first_failed_at)
     UPDATE webhooks SET failing_since = CASE WHEN $5 THEN NULL ELSE coalesce(failing_since, now()) END
      WHERE id = $2 AND EXISTS (SELECT 1 FROM d)
      RETURNING failing_since, (SELECT first_failed_at FROM d) AS first_failed_at`,
    [
      a.deliveryId,
      a.webhookId,
      a.stream,
      a.owner,
      a.ok,
      a.status,
      a.error,
      a.nextAttemptAt?.toISOString() ?? null,
    ],
  );
  return {
    recorded: rows.length > 0,
    failingSince: rows[0]?.failing_since ?? null,
    firstFailedAt: rows[0]?.first_failed_at ?? null,
  };
}

/** Gives up on one delivery the endpoint kept refusing while it took others: the stream moves on. */
export async function abandonDelivery(q: Queryable, id: number, why: string): Promise<void> {
  await q.query(
    `UPDATE webhook_deliveries SET status = 'abandoned', last_error = coalesce(last_error || '; ', '') || $2
      WHERE id = $1 AND status = 'pending'`,
    [id, why],
  );
}

export interface DeliveryLogEntry {
  id: number;
  eventId: string;
  eventType: string;
  eventSeq: number;
  tenantSlug: string | null;
  status: 'pending' | 'delivered' | 'abandoned';
  attempts: number;
  lastAttemptAt: string | null;
  lastStatus: number | null;
  lastError: string | null;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
  createdAt: string;
}

/** A webhook's deliveries, newest first, keyset-paginated on their id (`before`). */
export async function listDeliveries(
  q: Queryable,
  webhookId: string,
  f: { limit: number; before?: number; status?: string },
): Promise<DeliveryLogEntry[]> {
  const params: unknown[] = [webhookId];
  const where = ['d.webhook_id = $1'];
  if (f.before) where.push(`d.id < $${params.push(f.before)}`);
  if (f.status) where.push(`d.status = $${params.push(f.status)}`);
  const lim = params.push(f.limit);
  const { rows } = await q.query<{
    id: string;
    event_id: string;
    type: string;
    event_seq: string;
    tenant_slug: string | null;
    status: DeliveryLogEntry['status'];
    attempts: number;
    last_attempt_at: Date | null;
    last_status: number | null;
    last_error: string | null;
    next_attempt_at: Date;
    delivered_at: Date | null;
    created_at: Date;
  }>(
    `SELECT d.id, d.event_id, e.type, d.event_seq, e.tenant_slug, d.status, d.attempts, d.last_attempt_at,
            d.last_status, d.last_error, d.next_attempt_at, d.delivered_at, d.created_at
       FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
      WHERE ${where.join(' AND ')} ORDER BY d.id DESC LIMIT $${lim}`,
    params,
  );
  return rows.map((r) => ({
    id: Number(r.id),
    eventId: r.event_id,
    eventType: r.type,
    eventSeq: Number(r.event_seq),
    tenantSlug: r.tenant_slug,
    status: r.status,
    attempts: r.attempts,
    lastAttemptAt: r.last_attempt_at?.toISOString() ?? null,
    lastStatus: r.last_status,
    lastError: r.last_error,
    nextAttemptAt: r.status === 'pending' ? r.next_attempt_at.toISOString() : null,
    deliveredAt: r.delivered_at?.toISOString() ?? null,
    createdAt: r.created_at.toISOString(),
  }));
}
