import type { EventType, LifecycleEvent } from '../domain/events.js';
import { FLEET_STREAM } from '../domain/events.js';
import { newEventId } from '../domain/ids.js';
import { type NamedStatement, named, type Queryable } from '../domain/queryable.js';
import { WEBHOOK_DELIVER_TASK, WEBHOOK_STREAM_KEY_PREFIX } from './jobs.js';

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
 * The channel an event's transaction notifies on commit (webhooks/delivery.ts listens). A
 * notification, not a job: a job per event cost each event-writing transaction graphile-worker's
 * add_job, then a pickup and a completion (docs/benchmarks.md); Postgres folds a transaction's
 * identical notifications into one, and a notification lost with its listener is made up by the
 * listener's publish on reconnect and by the minute's sweep.
 */
export const EVENTS_CHANNEL = 'tenantry_events';

/** An event's row, as the inserts below take it (the seven values of `eventValues`). */
function eventRow(e: NewEvent): unknown[] {
  const tenant = e.tenant ?? null;
  return [
    newEventId(),
    e.type,
    tenant?.id ?? null,
    tenant?.slug ?? null,
    e.operationId ?? null,
    e.dedupeKey ?? null,
    JSON.stringify(e.data ?? {}),
  ];
}

const EVENT_COLUMNS = 'INSERT INTO events (id, type, tenant_id, tenant_slug, operation_id, dedupe_key, data)';
const eventValues = (p: (i: number) => string) =>
  `${p(1)}, ${p(2)}, ${p(3)}::uuid, ${p(4)}, ${p(5)}, ${p(6)}, ${p(7)}::jsonb`;

/** Writes an event in the caller's transaction; its commit wakes the publishers (EVENTS_CHANNEL). */
export async function appendEvent(q: Queryable, e: NewEvent): Promise<void> {
  const params = eventRow(e);
  if (e.onlyIf) params.push(e.onlyIf.operationId, e.onlyIf.status);
  await q.query(named(appendEventStatement((e.tenant ?? null) !== null, e.onlyIf !== undefined)), params);
}

/**
 * A tenant's event as two CTEs of a caller's statement, for a change that is one statement (an
 * operation's end, its acceptance): `<name>` inserts the event once per row of `source`, and
 * `<name>_wake` notifies the publishers if it did. `wake` is what the statement's final query must
 * select: a CTE that only reads runs only as far as it is read. `source` is the fence and the order
 * lock at once: rows that exist only once the tenant's row is locked (a CTE that updated it, or a
 * subquery that locks it), so the lock is held before `n` is drawn, and no row (a lease lost) writes
 * nothing. Its parameters follow the caller's, numbered from `first`.
 */
export function eventCtes(
  name: string,
  source: string,
  e: NewEvent,
  first: number,
): { sql: string; params: unknown[]; wake: string } {
  const p = (i: number) => `$${first + i - 1}`;
  return {
    wake: `(SELECT count(*) FROM ${name}_wake)`,
    sql: `${name} AS (${EVENT_COLUMNS}
       SELECT ${eventValues(p)} FROM ${source}
       ON CONFLICT (dedupe_key) DO NOTHING RETURNING 1),
     ${name}_wake AS (SELECT pg_notify('${EVENTS_CHANNEL}', '') FROM ${name})`,
    params: eventRow(e),
  };
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
       ${EVENT_COLUMNS}
       SELECT ${eventValues((i) => `$${i}`)} WHERE (SELECT count(*) FROM l) >= 0${only}
       ON CONFLICT (dedupe_key) DO NOTHING RETURNING 1)
     SELECT pg_notify('${EVENTS_CHANNEL}', '') FROM e`,
  };
}

const PUBLISH_BATCH = 500;

/** One publish: the function of migration 0019, whose statements keep their plans for the session. */
const PUBLISH: NamedStatement = {
  name: 'tenantry.publish_events',
  text: 'SELECT published, more, streams FROM tenantry_publish_events($1, $2, $3, $4)',
};

/**
 * Publishes committed events in insertion order, up to a batch: one round trip, its own transaction
 * when called outside one (inside one, the caller's). Publishers queue on an advisory lock, so numbers
 * are handed out one batch at a time. Returns how many it published, how many webhook streams got
 * deliveries (each a delivery job, keyed as `webhookStreamJobKey` spells it: db/jobs.ts), and whether more events wait.
 */
export async function publishEvents(
  q: Queryable,
): Promise<{ published: number; streams: number; more: boolean }> {
  const { rows } = await q.query<{ published: number; more: boolean; streams: number }>(named(PUBLISH), [
    PUBLISH_BATCH,
    FLEET_STREAM,
    WEBHOOK_DELIVER_TASK,
    WEBHOOK_STREAM_KEY_PREFIX,
  ]);
  const row = rows[0];
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
