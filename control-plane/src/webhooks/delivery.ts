import { randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { TaskList } from 'graphile-worker';
import type { Logger } from 'pino';
import type { Db } from '../db/db.js';
import {
  EVENTS_PUBLISH_TASK,
  enqueueStalledWebhookStreams,
  enqueueWebhookStreams,
  LIFECYCLE_SWEEP_TASK,
  WEBHOOK_DELIVER_TASK,
} from '../db/jobs.js';
import { appendEvent, EVENTS_CHANNEL, hasUnpublishedEvents, publishEvents } from '../db/outbox.js';
import {
  abandonDelivery,
  claimStream,
  type DueDelivery,
  disableWebhook,
  findWebhook,
  headDelivery,
  recordAttempt,
  releaseStream,
  streamLeaseUntil,
  type Webhook,
  webhookSecretName,
} from '../db/webhooks.js';
import { runLeaseOwner } from '../domain/ids.js';
import type { SecretStore } from '../domain/ports.js';
import { safeMessage } from '../lib/errors.js';
import { AddressPolicy } from './addresses.js';
import { signedHeaders } from './signing.js';

/**
 * Publishes the outbox and delivers webhooks, on the job queue (docs/lifecycle.md):
 * - `events-publish` (asked for by every transaction that writes an event) numbers committed events and
 *   fans them out into pending deliveries, one stream per webhook and tenant;
 * - `webhook-deliver` delivers one stream's deliveries in order, one at a time, under the stream's
 *   lease; a failed delivery holds the stream (nothing after it goes first) and is retried with
 *   exponential backoff by a job scheduled for its next attempt;
 * - `lifecycle-sweep` (every minute, and at start) publishes what a lost publish left, and re-enqueues
 *   streams whose job died with its worker (graphile-worker keeps a dead worker's job locked for hours;
 *   a stream's lease expires within seconds).
 * Deliveries are at least once: a worker killed after the receiver answered and before the answer was
 * recorded delivers again, with the same `webhook-id`, which receivers deduplicate on.
 */
export interface DeliveryOptions {
  timeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  disableAfterMs: number;
  /** A stream's lease beyond the delivery's own timeout (TENANTRY_OPERATION_LEASE_MS). */
  leaseMs: number;
  allowedNetworks: readonly string[];
  /**
   * Outside sinks the published events also go to, in order (an EventBridge bus: aws/eventbridge.ts).
   * Each keeps its own position; a publish job sends to them once it has numbered its events, and the
   * minute's sweep sends what a failed or lost send left.
   */
  sinks?: readonly EventSink[];
  /** How long a wake-up waits for more events before publishing (default PUBLISH_COALESCE_MS). */
  publishCoalesceMs?: number;
}

/** An outside receiver of the published events, in `seq` order, at least once. */
export interface EventSink {
  readonly name: string;
  /** Sends what waits after the sink's position; throws when something was refused (retried later). */
  forward(): Promise<number>;
  /** Whether published events wait to be sent. */
  behind(): Promise<boolean>;
}

/** How long a wake-up of the publisher waits for more events before it publishes (`wake`). */
const PUBLISH_COALESCE_MS = 20;

/** Deliveries one job makes before it hands the stream to a fresh job (other streams get their turn). */
const BATCH = 100;
const USER_AGENT = 'tenantry-webhooks/1';

export class WebhookDeliverer {
  readonly runnerId = `whr_${randomBytes(6).toString('hex')}`;
  readonly policy: AddressPolicy;
  private readonly secrets = new Map<string, string>();

  constructor(
    private readonly db: Db,
    private readonly store: SecretStore | undefined,
    private readonly log: Logger,
    private readonly opts: DeliveryOptions,
  ) {
    this.policy = new AddressPolicy(opts.allowedNetworks);
  }

  /** Publishes every committed event waiting, batch by batch; returns how many. */
  async publish(): Promise<number> {
    let total = 0;
    for (;;) {
      const out = await publishEvents(this.db);
      total += out.published;
      if (!out.more) return total;
    }
  }

  private publishing: Promise<void> | undefined;
  private again = false;

  /**
   * Publishes shortly after the first wake-up (PUBLISH_COALESCE_MS), and once more after the publish
   * in flight if woken meanwhile: wake-ups in the window and during a publish fold into one. So a
   * burst of events is one publish (one transaction numbering them all), and a publish does not run
   * in the same instant as the commit that woke it, which its writer's next statements need. A
   * failure is logged; the next event or the minute's sweep retries.
   */
  wake(): void {
    if (this.publishing) {
      this.again = true;
      return;
    }
    this.publishing = (async () => {
      await new Promise((r) => setTimeout(r, this.opts.publishCoalesceMs ?? PUBLISH_COALESCE_MS));
      do {
        this.again = false;
        try {
          await this.publish();
          await this.forwardToSinks();
        } catch (e) {
          this.log.warn(
            { err: safeMessage(e) },
            'publishing events failed; the next event or the sweep retries',
          );
        }
      } while (this.again);
    })().finally(() => {
      this.publishing = undefined;
    });
  }

  /**
   * Publishes on every committed event (db/outbox.ts EVENTS_CHANNEL) and on each (re)connect of the
   * listening session, until closed; closing waits for the publish in flight.
   */
  listen(): { close(): Promise<void> } {
    const session = this.db.listen(EVENTS_CHANNEL, () => this.wake(), {
      onError: (e) =>
        this.log.warn({ err: safeMessage(e) }, 'the events listener lost its session; reconnecting'),
    });
    return {
      close: async () => {
        await session.close();
        this.again = false;
        await this.publishing;
      },
    };
  }

  /** The minute's catch-up: stragglers published, stalled streams enqueued again, sinks caught up. */
  async sweep(): Promise<void> {
    if (await hasUnpublishedEvents(this.db)) await this.publish();
    const n = await this.db.tx((q) => enqueueStalledWebhookStreams(q));
    if (n > 0) this.log.warn({ streams: n }, 're-enqueued webhook streams whose delivery job had stopped');
    for (const sink of this.opts.sinks ?? []) {
      if (!(await sink.behind())) continue;
      await sink
        .forward()
        .catch((e: unknown) =>
          this.log.warn(
            { sink: sink.name, err: safeMessage(e) },
            'an event sink is behind; the next sweep retries',
          ),
        );
    }
  }

  /** Sends the published events to every outside sink; the first refusal fails the job (retried). */
  async forwardToSinks(): Promise<void> {
    const failures: unknown[] = [];
    for (const sink of this.opts.sinks ?? []) await sink.forward().catch((e: unknown) => failures.push(e));
    if (failures.length > 0) throw failures[0];
  }

  private get streamLeaseMs(): number {
    return this.opts.timeoutMs * 2 + this.opts.leaseMs;
  }

  /** Delivers a stream's due deliveries in order, until one fails, none is due, or a batch is done. */
  async deliverStream(webhookId: string, stream: string): Promise<void> {
    const log = this.log.child({ webhookId, ...(stream === '-' ? {} : { tenantId: stream }) });
    // The lease is this run's, not this process's: a second job of the same stream (an enqueue while
    // this one runs makes one) may run beside it in another worker slot of this process, and must
    // find the stream taken rather than deliver the same head again.
    const owner = runLeaseOwner(this.runnerId);
    if (!(await claimStream(this.db, webhookId, stream, owner, this.streamLeaseMs))) {
      // Another runner has it: look again when its lease ends (it may have finished by then).
      const until = await streamLeaseUntil(this.db, webhookId, stream);
      await enqueueWebhookStreams(
        this.db,
        [[webhookId, stream]],
        new Date((until?.getTime() ?? Date.now()) + 50),
      );
      return;
    }
    let next: Date | null = null;
    try {
      next = await this.deliverBatch(webhookId, stream, owner, log);
    } finally {
      await releaseStream(this.db, webhookId, stream, owner).catch(() => undefined);
    }
    if (next) await enqueueWebhookStreams(this.db, [[webhookId, stream]], next);
  }

  /** Returns when the stream should be looked at again, or null when it is drained or its webhook is off. */
  private async deliverBatch(
    webhookId: string,
    stream: string,
    owner: string,
    log: Logger,
  ): Promise<Date | null> {
    for (let i = 0; i < BATCH; i++) {
      const webhook = await findWebhook(this.db, webhookId);
      if (webhook?.status !== 'enabled') return null;
      const head = await headDelivery(this.db, webhookId, stream);
      if (!head) return null;
      if (head.nextAttemptAt.getTime() > Date.now()) return head.nextAttemptAt;
      // Renew the lease for this attempt (its timeout included).
      if (!(await claimStream(this.db, webhookId, stream, owner, this.streamLeaseMs))) return null;
      const result = await this.post(webhook, head);
      if (result.ok) {
        const r = await this.db.tx((q) =>
          recordAttempt(q, {
            deliveryId: head.id,
            webhookId,
            stream,
            owner,
            ok: true,
            status: result.status,
            error: null,
            nextAttemptAt: null,
          }),
        );
        if (!r.recorded) return null; // the lease was lost: its new holder goes on
        log.debug({ eventId: head.eventId, attempts: head.attempts + 1 }, 'webhook delivered');
        continue;
      }
      const delay = this.backoff(head.attempts + 1);
      const at = new Date(Date.now() + delay);
      const outcome = await this.db.tx(async (q) => {
        const r = await recordAttempt(q, {
          deliveryId: head.id,
          webhookId,
          stream,
          owner,
          ok: false,
          status: result.status,
          error: result.error,
          nextAttemptAt: at,
        });
        if (!r.recorded) return 'lost' as const;
        const now = Date.now();
        if (r.failingSince && now - r.failingSince.getTime() >= this.opts.disableAfterMs) {
          const reason = `every delivery failed since ${r.failingSince.toISOString()} (last: ${result.error})`;
          if (await disableWebhook(q, webhookId, reason)) {
            await appendEvent(q, {
              type: 'webhook.disabled',
              tenant: null,
              // Not the URL: webhook URLs often carry a token, and events are read by more roles than webhooks are.
              data: {
                webhookId,
                host: new URL(webhook.url).host,
                reason,
                failingSince: r.failingSince.toISOString(),
              },
              dedupeKey: `webhook.disabled:${webhookId}:${r.failingSince.toISOString()}`,
            });
          }
          return 'disabled' as const;
        }
        if (r.firstFailedAt && now - r.firstFailedAt.getTime() >= this.opts.disableAfterMs) {
          // The endpoint takes other events but has refused this one for the whole period.
          await abandonDelivery(q, head.id, `refused since ${r.firstFailedAt.toISOString()}; given up`);
          return 'abandoned' as const;
        }
        return 'retry' as const;
      });
      log.warn(
        {
          eventId: head.eventId,
          attempts: head.attempts + 1,
          status: result.status,
          err: result.error,
          outcome,
        },
        'webhook delivery failed',
      );
      if (outcome === 'abandoned') continue;
      return outcome === 'retry' ? at : null;
    }
    return new Date();
  }

  /** The delay before attempt `attempt + 1`: the base, doubled per failure, capped, plus up to 10% jitter. */
  backoff(attempt: number): number {
    const raw = Math.min(this.opts.retryMaxMs, this.opts.retryBaseMs * 2 ** Math.min(30, attempt - 1));
    return Math.round(raw * (1 + Math.random() * 0.1));
  }

  private async secret(webhookId: string): Promise<string> {
    const cached = this.secrets.get(webhookId);
    if (cached) return cached;
    const s = await this.store?.getSecret(webhookSecretName(webhookId));
    const value = s?.value.secret;
    if (typeof value !== 'string') throw new Error('the webhook signing secret is missing');
    this.secrets.set(webhookId, value);
    return value;
  }

  /** The body a receiver gets (Standard Webhooks' shape: type, timestamp, data). */
  static body(head: DueDelivery): string {
    return JSON.stringify({
      type: head.type,
      timestamp: head.createdAt.toISOString(),
      data: {
        eventId: head.eventId,
        seq: head.eventSeq,
        tenantId: head.tenantId,
        tenantSlug: head.tenantSlug,
        operationId: head.operationId,
        ...head.data,
      },
    });
  }

  /** One signed POST; never throws (a failure is an outcome). */
  private async post(
    webhook: Webhook,
    head: DueDelivery,
  ): Promise<{ ok: boolean; status: number | null; error: string | null }> {
    let secret: string;
    try {
      secret = await this.secret(webhook.id);
    } catch (e) {
      return { ok: false, status: null, error: safeMessage(e) };
    }
    const body = WebhookDeliverer.body(head);
    const url = new URL(webhook.url);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (net.isIP(host)) {
      const why = this.policy.refusal(host);
      if (why) return { ok: false, status: null, error: why };
    }
    const headers = {
      'content-type': 'application/json',
      'user-agent': USER_AGENT,
      'content-length': String(Buffer.byteLength(body)),
      ...signedHeaders(secret, head.eventId, Math.floor(Date.now() / 1000), body),
    };
    const client = url.protocol === 'https:' ? https : http;
    return new Promise((resolve) => {
      const req = client.request(
        url,
        {
          method: 'POST',
          headers,
          lookup: this.policy.lookup(),
          agent: false,
          signal: AbortSignal.timeout(this.opts.timeoutMs),
        },
        (res) => {
          res.resume(); // the answer's body is not needed
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            const ok = status >= 200 && status < 300;
            resolve({ ok, status, error: ok ? null : `the receiver answered ${status}` });
          });
          res.on('error', (e) =>
            resolve({ ok: false, status: res.statusCode ?? null, error: safeMessage(e) }),
          );
        },
      );
      req.on('error', (e) => {
        const error =
          e.name === 'AbortError' || e.name === 'TimeoutError'
            ? `no answer within ${this.opts.timeoutMs} ms`
            : safeMessage(e);
        resolve({ ok: false, status: null, error });
      });
      req.end(body);
    });
  }

  /** graphile-worker tasks: publish, deliver a stream, sweep. */
  get taskList(): TaskList {
    return {
      [EVENTS_PUBLISH_TASK]: async () => {
        await this.publish();
        await this.forwardToSinks();
      },
      [WEBHOOK_DELIVER_TASK]: async (payload) => {
        const { webhookId, stream } = payload as { webhookId?: unknown; stream?: unknown };
        if (typeof webhookId !== 'string' || typeof stream !== 'string')
          throw new Error('webhook-deliver payload lacks webhookId or stream');
        await this.deliverStream(webhookId, stream);
      },
      [LIFECYCLE_SWEEP_TASK]: async () => {
        await this.sweep();
      },
    };
  }

  /** The sweep's cron line: once a minute across processes. */
  get crontab(): string {
    return `* * * * * ${LIFECYCLE_SWEEP_TASK} ?jobKey=lifecycle-sweep&max=1\n`;
  }
}
