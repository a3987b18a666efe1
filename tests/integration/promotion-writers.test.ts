import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  auth,
  connectionOf,
  onboard,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';
import { atPoint, type Descriptor } from './promotion-helpers.js';

/**
 * Writers keep inserting, updating and deleting, in multi-row transactions over every table of the
 * template (users, their documents, settings), while a tenant is promoted, and other tenants do the
 * same. Every transaction acknowledged before the freeze and after the cutover must be in the target
 * exactly once; transactions during the freeze are refused whole with a clear error; the other
 * tenants are never frozen and end exactly as their own writers left them.
 */
let s: TestStack;
beforeAll(async () => {
  s = await startStack();
});
afterAll(async () => {
  await s?.close();
});

interface State {
  users: Map<string, string>;
  documents: Map<string, string>;
  settings: Map<string, string>;
}

class Writer {
  /** The state every acknowledged transaction left, replayed: id → value. */
  readonly model: State = { users: new Map(), documents: new Map(), settings: new Map() };
  /** documents per owner, to apply the cascade of a user's deletion to the model. */
  private readonly owned = new Map<string, Set<string>>();
  acknowledged = 0;
  refused = 0;
  refusalMessages = new Set<string>();
  private stop = false;
  private seq = 0;
  private client: pg.Client | null = null;
  private descriptor: Descriptor | null = null;
  private done: Promise<void> = Promise.resolve();
  private waiters: { ready: () => boolean; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private failure: unknown = null;

  constructor(
    private readonly slug: string,
    private readonly tenantId: string,
  ) {}

  start(): this {
    this.done = this.run().catch((e: unknown) => {
      this.failure = e;
      for (const w of this.waiters.splice(0)) w.reject(e);
      throw e;
    });
    return this;
  }

  /** Resolves once `ready()` holds, checked after each transaction the writer ends (no clock). */
  when(ready: () => boolean): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ ready, resolve, reject }));
  }

  private settle(): void {
    this.waiters = this.waiters.filter((w) => {
      if (!w.ready()) return true;
      w.resolve();
      return false;
    });
  }

  private async connect() {
    const d = await connectionOf(s, this.slug);
    if (this.client && d.database === this.descriptor?.database && d.schema === this.descriptor?.schema)
      return;
    await this.client?.end().catch(() => undefined);
    this.descriptor = d;
    this.client = new pg.Client({
      host: d.host,
      port: d.port,
      database: d.database,
      user: d.user,
      password: d.password,
    });
    await this.client.connect();
  }

  private pick<T>(m: Map<string, T>): string | undefined {
    const keys = [...m.keys()];
    return keys[Math.floor(Math.random() * keys.length)];
  }

  /** One transaction of several statements over every table; returns its effect on the model. */
  private async transaction(c: pg.Client, n: number): Promise<() => void> {
    const t = this.tenantId;
    const user = this.pick(this.model.users);
    // Twice as many inserts as updates or deletes: the tenant grows, every kind of change keeps coming.
    const kind = !user || n % 4 < 2 ? 'insert' : n % 4 === 2 ? 'update' : 'delete';
    if (kind === 'insert') {
      const u = await c.query<{ id: string }>(
        `INSERT INTO users (tenant_id, email, name) VALUES ($1, $2, $3) RETURNING id`,
        [t, `w${n}-${this.slug}@x`, `v${n}`],
      );
      const id = u.rows[0]!.id;
      const d = await c.query<{ id: string; title: string }>(
        `INSERT INTO documents (tenant_id, owner_id, title) SELECT $1, $2, 'd' || g || '-' || $3 FROM generate_series(1, 2) g RETURNING id, title`,
        [t, id, n],
      );
      await c.query(
        `INSERT INTO settings (tenant_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, key) DO UPDATE SET value = EXCLUDED.value`,
        [t, `k${n % 7}`, JSON.stringify({ n })],
      );
      return () => {
        this.model.users.set(id, `v${n}`);
        this.owned.set(id, new Set(d.rows.map((r) => r.id)));
        for (const r of d.rows) this.model.documents.set(r.id, r.title);
        this.model.settings.set(`k${n % 7}`, JSON.stringify({ n }));
      };
    }
    if (kind === 'update') {
      await c.query(`UPDATE users SET name = $3 WHERE tenant_id = $1 AND id = $2`, [t, user, `v${n}`]);
      const d = await c.query<{ id: string }>(
        `UPDATE documents SET title = $3 WHERE tenant_id = $1 AND owner_id = $2 RETURNING id`,
        [t, user, `t${n}`],
      );
      const key = this.pick(this.model.settings);
      if (key)
        await c.query(`UPDATE settings SET value = $3 WHERE tenant_id = $1 AND key = $2`, [
          t,
          key,
          JSON.stringify({ u: n }),
        ]);
      return () => {
        this.model.users.set(user!, `v${n}`);
        for (const r of d.rows) this.model.documents.set(r.id, `t${n}`);
        if (key) this.model.settings.set(key, JSON.stringify({ u: n }));
      };
    }
    // Deleting the user deletes its documents (ON DELETE CASCADE).
    await c.query(`DELETE FROM users WHERE tenant_id = $1 AND id = $2`, [t, user]);
    const key = this.pick(this.model.settings);
    if (key) await c.query(`DELETE FROM settings WHERE tenant_id = $1 AND key = $2`, [t, key]);
    return () => {
      this.model.users.delete(user!);
      for (const d of this.owned.get(user!) ?? []) this.model.documents.delete(d);
      this.owned.delete(user!);
      if (key) this.model.settings.delete(key);
    };
  }

  private async run(): Promise<void> {
    await this.connect();
    while (!this.stop) {
      const c = this.client!;
      try {
        await c.query('BEGIN');
        if (this.descriptor?.tenantSetting) {
          await c.query('SELECT set_config($1, $2, true)', [this.descriptor.tenantSetting, this.tenantId]);
        }
        const effect = await this.transaction(c, ++this.seq);
        await c.query('COMMIT');
        this.acknowledged++;
        effect();
        this.settle();
      } catch (e) {
        await c.query('ROLLBACK').catch(() => undefined);
        const msg = (e as Error).message;
        // Frozen, or (a bridge role, just after the cutover) no longer allowed there: refused whole.
        if (!/read-only while it moves|permission denied/.test(msg)) throw e;
        this.refused++;
        this.refusalMessages.add(msg.replace(/[0-9a-f-]{36}/, '<tenant>'));
        this.settle();
        // Follow the routing, as a data plane would.
        for (;;) {
          await new Promise((r) => setTimeout(r, 20));
          if (
            await this.connect().then(
              () => true,
              () => false,
            )
          )
            break;
        }
      }
    }
  }

  async finish() {
    this.stop = true;
    await this.done;
    await this.client?.end().catch(() => undefined);
  }
}

/** A tenant's rows where its descriptor points, as the superuser. */
async function stateOf(slug: string, tenantId: string): Promise<State> {
  const d = await connectionOf(s, slug);
  const q = (sql: string) => superQuery<{ k: string; v: string }>(d.database, sql, [tenantId]);
  const users = await q(`SELECT id::text AS k, name AS v FROM ${d.schema}.users WHERE tenant_id = $1`);
  const documents = await q(
    `SELECT id::text AS k, title AS v FROM ${d.schema}.documents WHERE tenant_id = $1`,
  );
  const settings = await q(
    `SELECT key AS k, value::text AS v FROM ${d.schema}.settings WHERE tenant_id = $1`,
  );
  const map = (rows: { k: string; v: string }[]) => new Map(rows.map((r) => [r.k, r.v]));
  // jsonb renders with a space after the colon; the model holds JSON.stringify's form.
  const norm = (m: Map<string, string>) =>
    new Map([...m].map(([k, v]) => [k, JSON.stringify(JSON.parse(v))]));
  return { users: map(users), documents: map(documents), settings: norm(map(settings)) };
}

describe('promotion under concurrent writers', () => {
  it.each([
    ['pool', 'silo'],
    ['pool', 'bridge'],
    ['bridge', 'silo'],
  ] as const)('%s → %s loses nothing and duplicates nothing, in any table', async (from, target) => {
    const a = await onboard(s, from);
    const others = [await onboard(s, 'pool'), await onboard(s, 'pool'), await onboard(s, 'bridge')];
    const wa = new Writer(a.slug, a.id).start();
    const wo = others.map((o) => new Writer(o.slug, o.id).start());
    // Every phase overlaps the writers, by their own progress rather than by a clock: some
    // transactions before the promotion, more inside the copy, the catch-up, the full
    // verification and after its last catch-up (only the drain can bring those over), and at
    // least one refused inside the freeze before the promotion goes on.
    const more = (n: number) => {
      const target = wa.acknowledged + n;
      return wa.when(() => wa.acknowledged >= target);
    };
    await more(60);
    for (const point of [
      'copy:after-first-table',
      'catch-up:start',
      'verify-full:after-apply',
      'freeze:before-freeze',
    ])
      atPoint(s, a.id, point, () => more(5));
    atPoint(s, a.id, 'freeze:after-freeze', () => wa.when(() => wa.refused > 0));
    const res = await s.app.inject({
      method: 'POST',
      url: `/v1/tenants/${a.slug}/promotions`,
      headers: auth(s.tokens.sre),
      payload: { targetTier: target },
    });
    expect(res.statusCode).toBe(202);
    const op = await waitForOperation(s, res.json().operation.id, 60_000);
    expect(op.error).toBeUndefined();
    expect(op.status).toBe('succeeded');
    // Keep writing on the new placement for a while.
    await more(20);
    await Promise.all([wa.finish(), ...wo.map((w) => w.finish())]);

    expect((await connectionOf(s, a.slug)).tier).toBe(target);
    expect(wa.acknowledged).toBeGreaterThan(50);
    expect(wa.model.documents.size + wa.model.settings.size).toBeGreaterThan(0);
    expect(await stateOf(a.slug, a.id)).toEqual(wa.model);
    // The freeze refused some transactions, loudly; the other tenants were never refused.
    expect(wa.refused).toBeGreaterThan(0);
    expect([...wa.refusalMessages].join('\n')).toMatch(
      /tenant <tenant> is read-only while it moves to another tier/,
    );
    for (const [i, o] of others.entries()) {
      expect(wo[i]!.refused).toBe(0);
      expect(await stateOf(o.slug, o.id)).toEqual(wo[i]!.model);
    }
  });
});
