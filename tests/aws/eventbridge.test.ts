/**
 * TENANTRY_EVENTBRIDGE_BUS against the AWS API emulator (moto_server): a whole control plane whose
 * published lifecycle events also go to an EventBridge bus, read back through a rule that sends the
 * bus's `tenantry` events to an SQS queue (read with the `aws` CLI: no SQS client is a dependency).
 * PutEvents, its 10-entry batches and its partial failures (`FailedEntryCount`: moto refuses an entry
 * whose detail is not JSON, as AWS does) are the emulator's, on the wire.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EVENTBRIDGE_SOURCE,
  EventBridgePublisher,
  eventBridgeEntry,
} from '../../control-plane/src/aws/eventbridge.js';
import { ConfigError, loadConfig } from '../../control-plane/src/config.js';
import { appendEvent, publishEvents } from '../../control-plane/src/db/outbox.js';
import { SBT_AWS_DETAIL_TYPES } from '../../control-plane/src/domain/events.js';
import { auth, onboard, rand, startStack, type TestStack } from '../helpers/runtime.js';
import { until } from '../helpers/server.js';
import { MOTO_ACCOUNT, MOTO_REGION, skipReason, useMoto } from './helpers/moto.js';

const moto = useMoto({ reset: false });
const run = promisify(execFile);
const BUS = `tenantry-${rand(3)}`;
const QUEUE = `events-${rand(3)}`;
/** A second bus, not the stack's: the publishers the tests build themselves send there, to their own queue. */
const BUS2 = `tenantry-own-${rand(3)}`;
const QUEUE2 = `events-own-${rand(3)}`;

async function aws(...args: string[]): Promise<unknown> {
  const { stdout } = await run(
    'aws',
    ['--endpoint-url', moto.endpoint(), '--region', MOTO_REGION, '--output', 'json', ...args],
    {
      env: { ...process.env, AWS_DEFAULT_REGION: MOTO_REGION },
    },
  );
  return stdout.trim() ? JSON.parse(stdout) : null;
}

const queueUrl = (queue: string) => `${moto.endpoint()}/${MOTO_ACCOUNT}/${queue}`;

interface BusMessage {
  'detail-type': string;
  source: string;
  detail: { eventId: string; seq: number; type: string; tenantId: string | null; tenantSlug: string | null };
}

/** Everything the queue holds now, taken off it (hidden for an hour once received: never read twice). */
async function drain(queue = QUEUE): Promise<BusMessage[]> {
  const out: BusMessage[] = [];
  for (;;) {
    const got = (await aws(
      'sqs',
      'receive-message',
      '--queue-url',
      queueUrl(queue),
      '--max-number-of-messages',
      '10',
      '--visibility-timeout',
      '3600',
    )) as { Messages?: { Body: string }[] } | null;
    const msgs = got?.Messages ?? [];
    if (msgs.length === 0) return out;
    for (const m of msgs) out.push(JSON.parse(m.Body) as BusMessage);
  }
}

/** The bus's messages, gathered until `done` holds for them (bounded by until()'s timeout). */
async function receiveUntil(done: (all: BusMessage[]) => boolean, queue = QUEUE): Promise<BusMessage[]> {
  const all: BusMessage[] = [];
  await until('the bus to deliver the events to the queue', async () => {
    all.push(...(await drain(queue)));
    return done(all) ? true : undefined;
  });
  return all;
}

const tagOf = (m: BusMessage): string | undefined => (m.detail as { tag?: string }).tag;

/** A spy on the real client's calls: each PutEvents' entries' seqs, in call order. */
function spy(client: EventBridgeClient): number[][] {
  const calls: number[][] = [];
  const send = client.send.bind(client) as (c: unknown) => Promise<unknown>;
  (client as unknown as { send: (c: unknown) => Promise<unknown> }).send = (cmd: unknown) => {
    if (cmd instanceof PutEventsCommand)
      calls.push((cmd.input.Entries ?? []).map((e) => Number(/"seq":(\d+)/.exec(e.Detail ?? '')?.[1] ?? -1)));
    return send(cmd);
  };
  return calls;
}

/** A bus whose `tenantry` events a rule sends to a queue. */
async function busToQueue(bus: string, queue: string): Promise<void> {
  await aws('events', 'create-event-bus', '--name', bus);
  await aws('sqs', 'create-queue', '--queue-name', queue);
  const pattern = JSON.stringify({ source: [EVENTBRIDGE_SOURCE] });
  await aws(
    'events',
    'put-rule',
    '--name',
    'all-tenantry',
    '--event-bus-name',
    bus,
    '--event-pattern',
    pattern,
  );
  const arn = `arn:aws:sqs:${MOTO_REGION}:${MOTO_ACCOUNT}:${queue}`;
  await aws(
    'events',
    'put-targets',
    '--rule',
    'all-tenantry',
    '--event-bus-name',
    bus,
    '--targets',
    `Id=q,Arn=${arn}`,
  );
}

/** A publisher of this test's own, to BUS2, as a fresh process would build it (its position in the database). */
async function ownPublisher(
  s: TestStack,
  entry?: ConstructorParameters<typeof EventBridgePublisher>[2]['entry'],
): Promise<{ bridge: EventBridgePublisher; client: EventBridgeClient }> {
  const client = new EventBridgeClient({ region: MOTO_REGION, endpoint: moto.endpoint() });
  const bridge = new EventBridgePublisher(s.runtime.services.db, client, {
    bus: BUS2,
    log: pino({ level: 'silent' }),
    ...(entry ? { entry } : {}),
  });
  await bridge.start();
  return { bridge, client };
}

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `EventBridge: the lifecycle events on a bus${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    let s: TestStack;

    beforeAll(async () => {
      await busToQueue(BUS, QUEUE);
      await busToQueue(BUS2, QUEUE2);
      s = await startStack({
        AWS_REGION: MOTO_REGION,
        TENANTRY_AWS_ENDPOINT: moto.endpoint(),
        TENANTRY_EVENTBRIDGE_BUS: BUS,
      });
    }, 60_000);
    afterAll(async () => {
      await s?.close();
    });

    it('sends every lifecycle event of a tenant, in order, with the detail-types an sbt-aws user knows', async () => {
      await drain();
      const t = await onboard(s, 'bridge');
      const patch = await s.app.inject({
        method: 'PATCH',
        url: `/v1/tenants/${t.slug}`,
        headers: { ...auth(s.tokens.sre), 'if-match': '"1"' },
        payload: { plan: 'gold' },
      });
      expect(patch.statusCode, patch.body).toBe(200);
      const want = ['tenant.created', 'tenant.activated', 'tenant.updated'];
      const got = await receiveUntil(
        (all) => all.filter((m) => m.detail.tenantId === t.id).length >= want.length,
      );
      const mine = got.filter((m) => m.detail.tenantId === t.id);
      expect(mine.map((m) => m.detail.type)).toEqual(want);
      expect(mine.map((m) => m['detail-type'])).toEqual([
        'onboardingRequest',
        'provisionSuccess',
        'tenantUpdated',
      ]);
      expect(mine.every((m) => m.source === 'tenantry' && m.detail.tenantSlug === t.slug)).toBe(true);
      // The same events, with the same ids, as GET /v1/events serves.
      const pulled = await s.app.inject({
        method: 'GET',
        url: `/v1/events?after=0&limit=100&tenant=${t.slug}`,
        headers: auth(s.tokens.sre),
      });
      expect(mine.map((m) => m.detail.eventId)).toEqual(
        (pulled.json().items as { id: string }[]).map((e) => e.id),
      );
    });

    it('sends a committed event that was never sent (a crash before its send) and never one whose change rolled back', async () => {
      await drain(QUEUE2);
      const db = s.runtime.services.db;
      const { bridge, client } = await ownPublisher(s);
      const tag = rand(4);
      // Committed, numbered, and nothing sent: where a process killed -9 after the commit leaves it.
      await db.tx((q) => appendEvent(q, { type: 'drift.findings', data: { tag, committed: true } }));
      await expect(
        db.tx(async (q) => {
          await appendEvent(q, { type: 'drift.findings', data: { tag, committed: false } });
          throw new Error('the change fails');
        }),
      ).rejects.toThrow('the change fails');
      await db.tx((q) => publishEvents(q));
      // A fresh process's publisher (ownPublisher), from the position in the database.
      try {
        await bridge.forward();
        expect(await bridge.behind()).toBe(false);
      } finally {
        client.destroy();
      }
      const got = await receiveUntil((all) => all.some((m) => tagOf(m) === tag), QUEUE2);
      const tagged = got.filter((m) => tagOf(m) === tag);
      expect(tagged.map((m) => (m.detail as { committed?: boolean }).committed)).toEqual([true]);
      expect(tagged[0]?.['detail-type']).toBe(SBT_AWS_DETAIL_TYPES['drift.findings']);
    });

    it('sends at most 10 entries and one per tenant per PutEvents, and after a partial failure resends from the refused event: no tenant has an event overtaken', async () => {
      await drain(QUEUE2);
      const db = s.runtime.services.db;
      const tag = rand(4);
      // 12 tenants (rows need not exist: the outbox only stamps the id), two events each: every first, then every second.
      const tenants = Array.from({ length: 12 }, (_, k) => ({
        id: `00000000-0000-4000-8000-${String(k).padStart(12, '0')}`,
        slug: `eb-${tag}-${k}`,
      }));
      let broken = true;
      const { bridge, client } = await ownPublisher(s, (e, bus) => {
        // Tenant 3's second event has a detail that is not JSON while `broken`: moto refuses that entry
        // alone (MalformedDetail) and accepts the others of the call, as AWS does.
        const x = eventBridgeEntry(e, bus);
        return broken && e.tenantSlug === tenants[3]?.slug && e.data.n === 1
          ? { ...x, Detail: `{"seq":${e.seq}, not json` }
          : x;
      });
      const calls = spy(client);
      for (const n of [0, 1])
        for (const t of tenants)
          await db.tx((q) => appendEvent(q, { type: 'drift.findings', tenant: t, data: { tag, n } }));
      await db.tx((q) => publishEvents(q));
      try {
        await expect(bridge.forward()).rejects.toThrow(/MalformedDetail/);
        expect(await bridge.behind()).toBe(true);
        broken = false;
        await bridge.forward();
        expect(await bridge.behind()).toBe(false);
      } finally {
        client.destroy();
      }
      // Call 1: every tenant's first event for tenants 0-9; call 2: tenants 10-11's first, then 0-7's
      // second, of which tenant 3's (the 6th) is refused; call 3 starts again with it: 3-11's second.
      expect(calls.map((c) => c.length)).toEqual([10, 10, 9]);
      for (const c of calls) expect(c).toEqual([...c].sort((a, b) => a - b));
      expect(calls[2]?.[0]).toBe(calls[1]?.[5]);
      const got = await receiveUntil(
        (all) => new Set(all.filter((m) => tagOf(m) === tag).map((m) => m.detail.seq)).size >= 24,
        QUEUE2,
      );
      for (const t of tenants) {
        const firsts: number[] = [];
        for (const m of got.filter((x) => tagOf(x) === tag && x.detail.tenantSlug === t.slug)) {
          const n = (m.detail as unknown as { n: number }).n;
          if (!firsts.includes(n)) firsts.push(n);
        }
        expect(firsts, t.slug).toEqual([0, 1]);
      }
    });
  },
);

describe('TENANTRY_EVENTBRIDGE_BUS', () => {
  const base = { AWS_REGION: MOTO_REGION };
  it('takes a bus name or its ARN, in AWS_REGION', () => {
    expect(
      loadConfig({ ...base, TENANTRY_EVENTBRIDGE_BUS: 'tenantry-events' }).lifecycle.eventBridge,
    ).toEqual({
      bus: 'tenantry-events',
      region: MOTO_REGION,
      endpoint: undefined,
    });
    const arn = `arn:aws:events:${MOTO_REGION}:${MOTO_ACCOUNT}:event-bus/tenantry-events`;
    expect(loadConfig({ ...base, TENANTRY_EVENTBRIDGE_BUS: arn }).lifecycle.eventBridge?.bus).toBe(arn);
    expect(loadConfig(base).lifecycle.eventBridge).toBeUndefined();
  });
  it('refuses a malformed bus, and a bus without a region, saying what to set', () => {
    expect(() => loadConfig({ ...base, TENANTRY_EVENTBRIDGE_BUS: 'my bus!' })).toThrow(ConfigError);
    expect(() => loadConfig({ ...base, TENANTRY_EVENTBRIDGE_BUS: 'my bus!' })).toThrow(/name .* or its ARN/);
    expect(() => loadConfig({ TENANTRY_EVENTBRIDGE_BUS: 'tenantry-events' })).toThrow(/needs AWS_REGION/);
  });
});
