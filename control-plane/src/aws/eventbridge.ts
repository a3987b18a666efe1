import {
  type EventBridgeClient,
  PutEventsCommand,
  type PutEventsRequestEntry,
  type PutEventsResultEntry,
} from '@aws-sdk/client-eventbridge';
import type { Logger } from 'pino';
import type { Db } from '../db/db.js';
import { advanceSink, ensureEventSink, lockSinkBatch, sinkBehind } from '../db/outbox.js';
import { type LifecycleEvent, SBT_AWS_DETAIL_TYPES, streamOf } from '../domain/events.js';
import type { Queryable } from '../domain/queryable.js';
import { isThrottling, withRetry } from './retry.js';

/** The `source` of every entry Tenantry puts on the bus (rules match on it). */
export const EVENTBRIDGE_SOURCE = 'tenantry';
/** PutEvents takes at most 10 entries per call. */
export const PUT_EVENTS_MAX_ENTRIES = 10;
/** PutEvents takes at most 256 KiB per call (entries' sizes summed); kept below it. */
const PUT_EVENTS_MAX_BYTES = 250 * 1024;
/** A detail above this is replaced by a pointer to GET /v1/events (one entry must fit in a call). */
const MAX_DETAIL_BYTES = 200 * 1024;

/** The sink's row in `event_sinks`: one position per bus. */
export const eventBridgeSinkName = (bus: string): string => `eventbridge:${bus}`;

/**
 * An event as an EventBridge entry: the detail-type an sbt-aws user knows (`domain/events.ts`), the
 * detail the same fields a webhook receives (docs/lifecycle.md), the event's commit time.
 */
export function eventBridgeEntry(e: LifecycleEvent, bus: string): PutEventsRequestEntry {
  const head = {
    eventId: e.id,
    seq: e.seq,
    type: e.type,
    tenantId: e.tenantId,
    tenantSlug: e.tenantSlug,
    operationId: e.operationId,
  };
  let detail = JSON.stringify({ ...head, ...e.data });
  if (Buffer.byteLength(detail) > MAX_DETAIL_BYTES)
    detail = JSON.stringify({ ...head, truncated: true, readFrom: `/v1/events?after=${e.seq - 1}&limit=1` });
  return {
    Source: EVENTBRIDGE_SOURCE,
    DetailType: SBT_AWS_DETAIL_TYPES[e.type],
    Detail: detail,
    EventBusName: bus,
    Time: new Date(e.createdAt),
    Resources: [],
  };
}

/** The size AWS counts for an entry (its strings' UTF-8 bytes, 14 for the time). */
const entrySize = (x: PutEventsRequestEntry): number =>
  14 +
  Buffer.byteLength(x.Source ?? '') +
  Buffer.byteLength(x.DetailType ?? '') +
  Buffer.byteLength(x.Detail ?? '') +
  (x.Resources ?? []).reduce((n, r) => n + Buffer.byteLength(r), 0);

/** How many of a call's entries were accepted before the first one that was not. */
export function acceptedPrefix(sent: number, results: readonly PutEventsResultEntry[] | undefined): number {
  let ok = 0;
  while (ok < sent && results?.[ok]?.EventId && !results[ok]?.ErrorCode) ok++;
  return ok;
}

export interface EventBridgeOptions {
  /** The bus's name or ARN (TENANTRY_EVENTBRIDGE_BUS). */
  bus: string;
  log: Logger;
  /** Tests only: how an event becomes an entry (a malformed one shows PutEvents' partial failure). */
  entry?: (e: LifecycleEvent, bus: string) => PutEventsRequestEntry;
}

/**
 * Sends every published lifecycle event to an EventBridge bus, in the published order (`seq`), which
 * keeps each tenant's events in the order their changes committed (docs/lifecycle.md, "EventBridge").
 *
 * The bus's position is a row (`event_sinks`, migration 0018) locked while a batch is sent and moved
 * past what PutEvents accepted in the same transaction:
 * - an event is sent only once it is published, so only once its change committed: one rolled back is
 *   never sent;
 * - a crash (kill -9) anywhere before that commit leaves the position where it was: the next send (the
 *   publish job, or the minute's sweep) sends those events again; nothing committed is lost. At least
 *   once: a consumer deduplicates on `detail.eventId`;
 * - PutEvents takes 10 entries per call and may accept some and refuse others (`FailedEntryCount`),
 *   the ones after a refused entry included. So a call carries at most one event per tenant (the
 *   fleet's events count as one tenant), and the position moves past the accepted prefix only; the
 *   send then fails (the job retries with backoff) and starts again at the refused event: no tenant's
 *   event ever reaches the bus before an earlier one of the same tenant. Other tenants' events the
 *   bus accepted after the refused one are sent again.
 */
export class EventBridgePublisher {
  readonly name: string;

  constructor(
    private readonly db: Db,
    private readonly client: EventBridgeClient,
    private readonly opts: EventBridgeOptions,
  ) {
    this.name = eventBridgeSinkName(opts.bus);
  }

  /** The bus's row, at the current end of the published order the first time the bus is configured. */
  async start(): Promise<void> {
    await ensureEventSink(this.db, this.name);
  }

  /** Whether published events wait to be sent. */
  behind(): Promise<boolean> {
    return sinkBehind(this.db, this.name);
  }

  /** Sends what waits, batch by batch; returns how many events the bus accepted. Throws on a refusal. */
  async forward(): Promise<number> {
    let total = 0;
    for (;;) {
      const r = await this.db.tx((q) => this.sendBatch(q));
      total += r.accepted;
      if (r.refused) {
        this.opts.log.warn(
          { sink: this.name, eventId: r.refused.eventId, err: r.refused.error },
          'EventBridge refused an event; its send is retried',
        );
        throw new Error(`EventBridge refused event ${r.refused.eventId}: ${r.refused.error}`);
      }
      if (!r.more) return total;
    }
  }

  private async sendBatch(q: Queryable): Promise<{
    accepted: number;
    more: boolean;
    refused: { eventId: string; error: string } | null;
  }> {
    const batch = await lockSinkBatch(q, this.name, PUT_EVENTS_MAX_ENTRIES);
    if (!batch || batch.events.length === 0) return { accepted: 0, more: false, refused: null };
    const toEntry = this.opts.entry ?? eventBridgeEntry;
    const events: LifecycleEvent[] = [];
    const entries: PutEventsRequestEntry[] = [];
    let bytes = 0;
    const streams = new Set<string>();
    for (const e of batch.events) {
      // One event per tenant (stream) per call: PutEvents accepts the entries after one it refuses, so
      // a tenant's later event in the same call would overtake the refused one.
      if (streams.has(streamOf(e.tenantId))) break;
      streams.add(streamOf(e.tenantId));
      const entry = toEntry(e, this.opts.bus);
      const size = entrySize(entry);
      if (entries.length > 0 && bytes + size > PUT_EVENTS_MAX_BYTES) break;
      events.push(e);
      entries.push(entry);
      bytes += size;
    }
    const out = await withRetry(() => this.client.send(new PutEventsCommand({ Entries: entries })), {
      maxAttempts: 4,
      isRetryable: isThrottling,
    });
    const ok = acceptedPrefix(entries.length, out.Entries);
    const refusedAt = ok < events.length ? events[ok] : undefined;
    const result = out.Entries?.[ok];
    const refused = refusedAt
      ? {
          eventId: refusedAt.id,
          error: `${result?.ErrorCode ?? 'NoResult'}${result?.ErrorMessage ? `: ${result.ErrorMessage}` : ''}`,
        }
      : null;
    const last = ok > 0 ? events[ok - 1] : undefined;
    await advanceSink(
      q,
      this.name,
      last ? last.seq : batch.deliveredSeq,
      refused ? `event ${refused.eventId}: ${refused.error}` : null,
    );
    this.opts.log.debug(
      { sink: this.name, accepted: ok, sent: entries.length },
      'events sent to EventBridge',
    );
    return { accepted: ok, more: !refused, refused };
  }
}
