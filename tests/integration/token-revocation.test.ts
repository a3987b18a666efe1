import { once } from 'node:events';
import net from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import app, { serverOptions } from '../../control-plane/src/app.js';
import { Db } from '../../control-plane/src/db/db.js';
import { TokenCache } from '../../control-plane/src/plugins/auth.js';
import { TokenService } from '../../control-plane/src/services/tokens.js';
import { adminUrl, auth, startStack, superQuery, type TestStack } from '../helpers/runtime.js';
import { freePort } from '../helpers/server.js';

/**
 * Two API processes over one control database: A is the test stack, B a second app with its own
 * pool, token cache and token service. B's cache trusts a lookup for a minute, so that only a
 * notification (never its TTL) can explain B refusing a revoked token within these tests.
 */
let s: TestStack;
let dbB: Db;
let cacheB: TokenCache;
let b: FastifyInstance;
/** B's listener reconnects only when the test opens this gate. */
let openGate: () => void = () => undefined;
let gate: Promise<void> = Promise.resolve();

beforeAll(async () => {
  s = await startStack();
  dbB = new Db(adminUrl(s.controlDb), 2);
  cacheB = new TokenCache(dbB, {
    ttlMs: 60_000,
    backoff: (_attempt, signal) =>
      new Promise<void>((resolve, reject) => {
        signal.addEventListener('abort', () => reject(signal.reason), { once: true });
        void gate.then(resolve);
      }),
  });
  b = Fastify({ ...serverOptions, logger: false });
  await b.register(app, {
    services: { ...s.runtime.services, db: dbB, tokenCache: cacheB, tokens: new TokenService(dbB, cacheB) },
  });
  await b.ready();
});
afterAll(async () => {
  openGate();
  await b?.close();
  await dbB?.close();
  await s?.close();
});

const createToken = async (name: string) => {
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/tokens',
    headers: auth(s.tokens.admin),
    payload: { name, role: 'sre' },
  });
  expect(res.statusCode).toBe(201);
  return res.json() as { token: string; info: { id: string } };
};
const revokeOnA = async (id: string) => {
  const res = await s.app.inject({
    method: 'DELETE',
    url: `/v1/tokens/${id}`,
    headers: auth(s.tokens.admin),
  });
  expect(res.statusCode).toBe(200);
};
const statusOnB = async (token: string) =>
  (await b.inject({ method: 'GET', url: '/v1/audit?limit=1', headers: auth(token) })).statusCode;
const evictionOf = (cache: TokenCache, id: string) =>
  new Promise<void>((resolve) => {
    const on = (evicted: string) => {
      if (evicted !== id) return;
      cache.off('evicted', on);
      resolve();
    };
    cache.on('evicted', on);
  });

describe('revoking a token on one API process', () => {
  // Without the notification, the eviction below never comes and the test fails on its timeout.
  it('is refused by another process as soon as the revoke commits', { timeout: 20_000 }, async () => {
    const { token, info } = await createToken('two-processes');
    const listening = cacheB.listening ? Promise.resolve() : once(cacheB, 'listening');
    expect(await statusOnB(token)).toBe(200); // starts B's listener
    await listening;
    expect(await statusOnB(token)).toBe(200); // now served from B's cache, without waiting
    expect(cacheB.cached(token)?.id).toBe(info.id);
    const evicted = evictionOf(cacheB, info.id);
    await revokeOnA(info.id);
    await evicted;
    expect(cacheB.cached(token)).toBeUndefined();
    expect(await statusOnB(token)).toBe(401);
  });

  it('is refused by a process whose listening session was lost meanwhile, and it listens again', async () => {
    const { token, info } = await createToken('listener-lost');
    if (!cacheB.listening) await once(cacheB, 'listening');
    expect(await statusOnB(token)).toBe(200);
    expect(await statusOnB(token)).toBe(200); // cached
    gate = new Promise<void>((resolve) => {
      openGate = resolve;
    });
    const lost = once(cacheB, 'lost');
    // Ends every token listener on this database (A's reconnects by itself).
    await superQuery(
      'postgres',
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE application_name = 'tenantry-token-listener' AND datname = $1`,
      [s.controlDb],
    );
    await lost;
    expect(cacheB.cached(token)).toBeUndefined(); // nothing is trusted while B cannot listen
    // B cannot hear this revocation: its listener waits at the gate.
    await revokeOnA(info.id);
    expect(await statusOnB(token)).toBe(401);
    const again = once(cacheB, 'listening');
    openGate();
    await again;
    expect(cacheB.listening).toBe(true);
    expect(await statusOnB(token)).toBe(401);
    const { token: fresh } = await createToken('after-reconnect');
    expect(await statusOnB(fresh)).toBe(200);
  });
});

describe('the token cache', () => {
  // Each entry expires under load with every request carrying its token in flight: without the
  // fix, ten requests sent ten identical queries at that moment, every five seconds.
  it('sends one query for concurrent lookups of a token, and never joins one begun before a revocation', async () => {
    const { token, info } = await createToken('single-flight');
    const db = new Db(adminUrl(s.controlDb), 2);
    const cache = new TokenCache(db, { ttlMs: 60_000 });
    let openQueries: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      openQueries = resolve;
    });
    let queries = 0;
    const query = db.query;
    // Real queries on real Postgres, counted, and held until the test lets them go.
    db.query = (async (text: Parameters<Db['query']>[0], params?: unknown[]) => {
      queries++;
      await held;
      return query(text, params);
    }) as Db['query'];
    try {
      const listening = once(cache, 'listening');
      cache.start();
      await listening;
      const before = Array.from({ length: 10 }, () => cache.lookup(token));
      expect(queries).toBe(1);

      // Revoked now: a lookup after the revocation's notification waits for its own read.
      const evicted = evictionOf(cache, info.id);
      await revokeOnA(info.id);
      await evicted;
      const after = cache.lookup(token);
      expect(queries).toBe(2);

      openQueries();
      expect(await after).toBeNull();
      const early = await Promise.all(before);
      expect(new Set(early.map((e) => e?.id ?? null)).size).toBe(1);
      // The answer kept is the one read after the revocation, never the overlapped one.
      expect(await cache.lookup(token)).toBeNull();
      expect(queries).toBe(2);
    } finally {
      openQueries();
      await cache.close();
      await db.close();
    }
  });

  it('stops its listener on close, even while the database refuses it', async () => {
    const db = new Db(`postgres://nobody@127.0.0.1:${await freePort()}/nowhere`, 1);
    const cache = new TokenCache(db);
    try {
      const lost = once(cache, 'lost');
      await expect(cache.lookup(`tnt_${'x'.repeat(43)}`)).rejects.toThrow();
      await lost; // the listener now waits to reconnect
      expect(cache.listening).toBe(false);
    } finally {
      await cache.close();
      await db.close();
    }
  });

  // Without the fix, close() waited on pg's connect(), which never settles here.
  it('stops its listener on close while it is still connecting', { timeout: 5_000 }, async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => sockets.push(socket)); // accepts, never answers
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const port = (silent.address() as net.AddressInfo).port;
    const db = new Db(`postgres://nobody@127.0.0.1:${port}/nowhere`, 1);
    const cache = new TokenCache(db);
    try {
      const accepted = once(silent, 'connection');
      cache.start();
      await accepted;
      await cache.close();
      expect(cache.listening).toBe(false);
    } finally {
      for (const socket of sockets) socket.destroy();
      silent.close();
      await db.close();
    }
  });
});
