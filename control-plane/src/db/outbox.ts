import type { EventType, LifecycleEvent } from '../domain/events.js';
import { FLEET_STREAM } from '../domain/events.js';
import { newEventId } from '../domain/ids.js';
import { type NamedStatement, named, type Queryable } from '../domain/queryable.js';
import { deliverJobSql } from './jobs.js';

/**
 * The outbox of lifecycle events (migration 0017, docs/lifecycle.md).
 *
 * An event is inserted in the transaction of the change it reports, so it exists exactly when that
 * change committed: never for one that rolled back, never lost for one that committed. It is then
 * published by one publisher at a time, which gives it its `seq` (the order GET /v1/events reads) and
 * fans it out to the webhooks that want it. Numbering at publish time, not at insert, is what makes
 * `?after=<seq>` safe: a transaction that inserted earlier but committed later cannot slip a lower
 * number behind a reader.
 *
 * Order per tenant: writing a tenant's event takes that tenant's row lock first (events of no tenant
 * take the fleet's advisory lock), so a tenant's events are inserted (`n`) in the order their
 * transactions commit, and published in that order.
 */

export interface NewEvent {
  type: EventType;
  tenant?: { id: string; slug: string } | null;
  operationId?: string | null;
  data?: Record<string, unknown>;
  /** One event per fact: a second insert with the same key is ignored (a runner that lost its lease, a rerun). */
  dedupeKey?: string;
  /** Written only if this operation has this status in the transaction (the fence of a completion). */
  onlyIf?: { operationId: string; status: 'succeeded' | 'failed' };
}

/**
 * The channel an event's transaction notifies on commit (webhooks/publisher.ts listens). A
 * notification, not a job: a job per event cost each event-writing transaction graphile-worker's
 * add_job, then a pickup and a completion (docs/benchmarks.md); Postgres folds a transaction's
 * identical notifications into one, and a notification lost with its listener is made up by the
 * listener's publish on reconnect and by the minute's sweep.
 */
export const EVENTS_CHANNEL = 'tenantry_events';

/** Writes an event in the caller's transaction; its commit wakes the publishers (EVENTS_CHANNEL). */
export async function appendEvent(q: Queryable, e: NewEvent): Promise<void> {
  const tenant = e.tenant ?? null;
  const params: unknown[] = [
    newEventId(),
    e.type,
    tenant?.id ?? null,
    tenant?.slug ?? null,
    e.operationId ?? null,
    e.dedupeKey ?? null,
    JSON.stringify(e.data ?? {}),
  ];
  if (e.onlyIf) params.push(e.onlyIf.operationId, e.onlyIf.status);
  await q.query(named(appendEventStatement(tenant !== null, e.onlyIf !== undefined)), params);
}

/**
 * The event's insert, in its four shapes (a tenant's or the fleet's; fenced by an operation's status
 * or not). The order lock (the tenant's row, or the fleet's advisory lock) is taken by the row's filter,
 * before the insert draws `n`: one statement, one round trip.
 */
function appendEventStatement(ofTenant: boolean, fenced: boolean): NamedStatement {
  const lock = ofTenant
    ? 'SELECT 1 FROM tenants WHERE id = $3::uuid FOR NO KEY UPDATE'
    : `SELECT pg_advisory_xact_lock(hashtext('tenantry.events.fleet'))`;
  const only = fenced ? ' AND EXISTS (SELECT 1 FROM operations WHERE id = $8 AND status = $9)' : '';
  return {
    name: `tenantry.append_event.${ofTenant ? 'tenant' : 'fleet'}${fenced ? '.fenced' : ''}`,
    text: `WITH l AS (${lock}),
     e AS (
       INSERT INTO events (id, type, tenant_id, tenant_slug, operation_id, dedupe_key, data)
       SELECT $1, $2, $3::uuid, $4, $5, $6, $7::jsonb WHERE (SELECT count(*) FROM l) >= 0${only}
       ON CONFLICT (dedupe_key) DO NOTHING RETURNING 1)
     SELECT pg_notify('${EVENTS_CHANNEL}', '') FROM e`,
  };
}

const PUBLISH_BATCH = 500;

/**
 * One publish as one simple-protocol string (one round trip, one implicit transaction): the
 * publishers' advisory lock first, then, in a statement of its own (so its snapshot is taken once the
 * lock is held and sees the previous publisher's numbers), the batch numbered after the highest
 * `seq`, a pending delivery for every enabled webhook that wants each event (its stream: the event's
 * tenant, or the fleet's), and a delivery job per stream that got one. Constants only: no bind
 * parameters in the simple protocol.
 */
const PUBLISH_SQL = `SELECT pg_advisory_xact_lock(hashtext('tenantry.events.publish'));
WITH b AS (SELECT id, n FROM events WHERE seq IS NULL ORDER BY n LIMIT ${PUBLISH_BATCH + 1}),
     pick AS (SELECT id, row_number() OVER (ORDER BY n) AS ord FROM (SELECT id, n FROM b ORDER BY n LIMIT ${PUBLISH_BATCH}) x),
     base AS (SELECT coalesce(max(seq), 0) AS base FROM events),
     u AS (UPDATE events e SET seq = base.base + pick.ord, published_at = now()
             FROM pick, base WHERE e.id = pick.id
           RETURNING e.id, e.seq, e.type, e.tenant_id),
     d AS (INSERT INTO webhook_deliveries (webhook_id, event_id, event_seq, stream, status)
           SELECT w.id, u.id, u.seq, coalesce(u.tenant_id::text, '${FLEET_STREAM.replaceAll("'", "''")}'), 'pending'
             FROM u JOIN webhooks w ON w.status = 'enabled' AND u.type = ANY (w.event_types)
           ON CONFLICT (webhook_id, event_id) DO NOTHING
           RETURNING webhook_id, stream),
     s AS (SELECT DISTINCT webhook_id, stream FROM d),
     ins AS (INSERT INTO webhook_streams (webhook_id, stream) SELECT webhook_id, stream FROM s ON CONFLICT DO NOTHING),
     jobs AS (SELECT ${deliverJobSql('s.webhook_id', 's.stream', 'NULL')} FROM s)
SELECT (SELECT count(*) FROM u)::int AS published,
       (SELECT count(*) FROM b) > ${PUBLISH_BATCH} AS more,
       (SELECT count(*) FROM jobs)::int AS streams`;

/**
 * Publishes committed events in insertion order, up to a batch (PUBLISH_SQL): one round trip, its own
 * implicit transaction when called outside one (inside one, the caller's). Publishers queue on an advisory lock, so numbers are
 * handed out one batch at a time. Returns how many it published, how many webhook streams got
 * deliveries, and whether more events wait.
 */
export async function publishEvents(
  q: Queryable,
): Promise<{ published: number; streams: number; more: boolean }> {
  const results = (await q.query(PUBLISH_SQL)) as unknown as { rows: Record<string, unknown>[] }[];
  const row = results[results.length - 1]?.rows[0] as
    | { published: number; more: boolean; streams: number }
    | undefined;
  return { published: row?.published ?? 0, streams: row?.streams ?? 0, more: row?.more === true };
}

interface EventRow {
  id: string;
  seq: string;
  type: EventType;
  tenant_id: string | null;
  tenant_slug: string | null;
  operation_id: string | null;
  data: Record<string, unknown>;
  created_at: Date;
}

const toEvent = (r: EventRow): LifecycleEvent => ({
  id: r.id,
  seq: Number(r.seq),
  type: r.type,
  tenantId: r.tenant_id,
  tenantSlug: r.tenant_slug,
  operationId: r.operation_id,
  data: r.data,
  createdAt: r.created_at.toISOString(),
});

/** Published events after `after`, in order; optionally of one tenant (by id) and of some types. */
export async function listEvents(
  q: Queryable,
  f: { after: number; limit: number; tenantId?: string; types?: string[] },
): Promise<LifecycleEvent[]> {
  const params: unknown[] = [f.after];
  const where = ['seq > $1'];
  if (f.tenantId) where.push(`tenant_id = $${params.push(f.tenantId)}::uuid`);
  if (f.types?.length) where.push(`type = ANY ($${params.push(f.types)}::text[])`);
  const lim = params.push(f.limit);
  const { rows } = await q.query<EventRow & Record<string, unknown>>(
    `SELECT id, seq, type, tenant_id, tenant_slug, operation_id, data, created_at FROM events
      WHERE ${where.join(' AND ')} ORDER BY seq LIMIT $${lim}`,
    params,
  );
  return rows.map((r) => toEvent(r as EventRow));
}

/** One event by id (published or not: a delivery names it). */
export async function findEvent(
  q: Queryable,
  id: string,
): Promise<(LifecycleEvent & { published: boolean }) | null> {
  const { rows } = await q.query<EventRow & Record<string, unknown>>(
    'SELECT id, seq, type, tenant_id, tenant_slug, operation_id, data, created_at FROM events WHERE id = $1',
    [id],
  );
  const r = rows[0] as EventRow | undefined;
  return r ? { ...toEvent(r), published: r.seq !== null } : null;
}

/** Whether committed events wait to be published (the sweep publishes them if a publish job was lost). */
export async function hasUnpublishedEvents(q: Queryable): Promise<boolean> {
  const { rows } = await q.query<{ any: boolean }>(
    'SELECT EXISTS (SELECT 1 FROM events WHERE seq IS NULL) AS any',
  );
  return rows[0]?.any === true;
}

/* ------------------------------------------------------------ outside sinks (migration 0018) */

/**
 * Registers an outside sink of the events (an EventBridge bus) the first time it is configured, at the
 * current end of the published order: what was published before the sink existed is not replayed to
 * it (GET /v1/events has it); everything published from then on is.
 */
export async function ensureEventSink(q: Queryable, name: string): Promise<void> {
  await q.query(
    `INSERT INTO event_sinks (name, delivered_seq)
     SELECT $1, coalesce(max(seq), 0) FROM events
     ON CONFLICT (name) DO NOTHING`,
    [name],
  );
}

/**
 * Locks a sink's row for the caller's transaction (one sender per sink at a time) and reads the
 * published events after its position, in `seq` order, up to `limit`. Null when the sink is unknown.
 */
export async function lockSinkBatch(
  q: Queryable,
  name: string,
  limit: number,
): Promise<{ deliveredSeq: number; events: LifecycleEvent[] } | null> {
  const { rows } = await q.query<{ delivered_seq: string }>(
    'SELECT delivered_seq FROM event_sinks WHERE name = $1 FOR UPDATE',
    [name],
  );
  const at = rows[0];
  if (!at) return null;
  const deliveredSeq = Number(at.delivered_seq);
  return { deliveredSeq, events: await listEvents(q, { after: deliveredSeq, limit }) };
}

/** Moves a sink past what it accepted (never backwards), and records the last refusal, if any. */
export async function advanceSink(
  q: Queryable,
  name: string,
  deliveredSeq: number,
  error: string | null,
): Promise<void> {
  await q.query(
    `UPDATE event_sinks SET delivered_seq = greatest(delivered_seq, $2), updated_at = now(),
            last_error = coalesce($3, last_error), last_error_at = CASE WHEN $3::text IS NULL THEN last_error_at ELSE now() END
      WHERE name = $1`,
    [name, deliveredSeq, error],
  );
}

/** Whether a sink is behind the published order (the sweep sends what a failed send left). */
export async function sinkBehind(q: Queryable, name: string): Promise<boolean> {
  const { rows } = await q.query<{ behind: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM events e, event_sinks s WHERE s.name = $1 AND e.seq > s.delivered_seq) AS behind`,
    [name],
  );
  return rows[0]?.behind === true;
}
