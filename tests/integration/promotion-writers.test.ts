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

/**
 * Writers keep inserting, updating and deleting while a pool tenant is promoted. Every write
 * acknowledged before the freeze and after the cutover must be in the target exactly once; writes
 * during the freeze are refused with a clear error; the other pool tenant is never frozen.
 */
type Descriptor = Awaited<ReturnType<typeof connectionOf>>;

let s: TestStack;
beforeAll(async () => {
  // Slow every step a little so the writers overlap each phase of the promotion.
  s = await startStack({ TENANTRY_FAULT_STEP_DELAY_MS: '150' });
});
afterAll(async () => {
  await s?.close();
});

class Writer {
  /** id → expected name, or null when deleted: the acknowledged history, replayed. */
  readonly model = new Map<string, string | null>();
  acknowledged = 0;
  refused = 0;
  refusalMessages = new Set<string>();
  private stop = false;
  private seq = 0;
  private client: pg.Client | null = null;
  private descriptor: Descriptor | null = null;

  constructor(
    private readonly slug: string,
    private readonly tenantId: string,
  ) {}

  private async connect() {
    const d = await connectionOf(s, this.slug);
    if (
      this.client &&
      this.descriptor &&
      d.database === this.descriptor.database &&
      d.schema === this.descriptor.schema
    )
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

  async run(): Promise<void> {
    await this.connect();
    while (!this.stop) {
      const c = this.client!;
      const n = ++this.seq;
      const ids = [...this.model.entries()].filter(([, v]) => v !== null).map(([k]) => k);
      const pick = ids[Math.floor(Math.random() * ids.length)];
      const kind = !pick || n % 3 === 0 ? 'insert' : n % 3 === 1 ? 'update' : 'delete';
      try {
        await c.query('BEGIN');
        if (this.descriptor?.tenantSetting) {
          await c.query('SELECT set_config($1, $2, true)', [this.descriptor.tenantSetting, this.tenantId]);
        }
        let effect: [string, string | null] | null = null;
        if (kind === 'insert') {
          const r = await c.query<{ id: string }>(
            `INSERT INTO users (tenant_id, email, name) VALUES ($1, $2, $3) RETURNING id`,
            [this.tenantId, `w${n}-${this.slug}@x`, `v${n}`],
          );
          effect = [r.rows[0]!.id, `v${n}`];
        } else if (kind === 'update') {
          const r = await c.query(`UPDATE users SET name = $2 WHERE tenant_id = $1 AND id = $3`, [
            this.tenantId,
            `v${n}`,
            pick,
          ]);
          if (r.rowCount === 1) effect = [pick!, `v${n}`];
        } else {
          const r = await c.query(`DELETE FROM users WHERE tenant_id = $1 AND id = $2`, [
            this.tenantId,
            pick,
          ]);
          if (r.rowCount === 1) effect = [pick!, null];
        }
        await c.query('COMMIT');
        this.acknowledged++;
        if (effect) this.model.set(effect[0], effect[1]);
      } catch (e) {
        await c.query('ROLLBACK').catch(() => undefined);
        const msg = (e as Error).message;
        if (!/read-only while it moves/.test(msg)) throw e;
        this.refused++;
        this.refusalMessages.add(msg.replace(/[0-9a-f-]{36}/, '<tenant>'));
        // Frozen: follow the routing, as a data plane would.
        await new Promise((r) => setTimeout(r, 20));
        await this.connect();
      }
    }
  }

  async finish() {
    this.stop = true;
    await new Promise((r) => setTimeout(r, 50));
    await this.client?.end().catch(() => undefined);
  }

  /** Reads a pool tenant's users at their current placement, as the superuser. */
  expected(): Map<string, string> {
    return new Map([...this.model.entries()].filter((e): e is [string, string] => e[1] !== null));
  }
}

async function usersAt(database: string, schema: string, tenantId: string): Promise<Map<string, string>> {
  const rows = await superQuery<{ id: string; name: string }>(
    database,
    `SELECT id, name FROM ${schema}.users WHERE tenant_id = $1`,
    [tenantId],
  );
  return new Map(rows.map((r) => [r.id, r.name]));
}

describe('promotion under concurrent writers', () => {
  it.each(['silo', 'bridge'] as const)('pool → %s loses nothing and duplicates nothing', async (target) => {
    const a = await onboard(s, 'pool');
    const b = await onboard(s, 'pool');
    const wa = new Writer(a.slug, a.id);
    const wb = new Writer(b.slug, b.id);
    const runs = [wa.run(), wb.run()];
    await new Promise((r) => setTimeout(r, 300));
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
    const ackAtCutover = wa.acknowledged;
    // Keep writing on the new placement for a while.
    const until = Date.now() + 700;
    while (Date.now() < until || wa.acknowledged < ackAtCutover + 20)
      await new Promise((r) => setTimeout(r, 20));
    await wa.finish();
    await wb.finish();
    await Promise.all(runs);

    const d = await connectionOf(s, a.slug);
    expect(d.tier).toBe(target);
    const actual = await usersAt(d.database, d.schema!, a.id);
    expect(wa.acknowledged).toBeGreaterThan(50);
    expect(actual).toEqual(wa.expected());
    // The freeze refused some writes, loudly; the other tenant was never refused.
    expect(wa.refused).toBeGreaterThan(0);
    expect([...wa.refusalMessages].join('\n')).toMatch(
      /tenant <tenant> is read-only while it moves to another tier/,
    );
    expect(wb.refused).toBe(0);
    expect(await usersAt(s.dataDb, 'pool', b.id)).toEqual(wb.expected());
  });
});
