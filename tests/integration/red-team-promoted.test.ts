import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectionOf,
  onboard,
  startStack,
  superQuery,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';
import { type Descriptor, promote } from './promotion-helpers.js';
import { attempt, secretsOf, TABLE_NAMES, TABLES } from './red-team-shared.js';

/**
 * The red-team isolation attempts (see red-team.test.ts) for tenants promoted pool → bridge,
 * pool → silo and bridge → silo, during their rollback window: each promoted tenant, with its new
 * credentials, against pool, bridge and silo tenants and the other promoted ones; and every tenant
 * against the promoted tenants' new placements and the placements they left (kept for rollback).
 * Every read sees nothing, every write is refused or touches nothing, nothing leaks in an error.
 */
type Tier = 'pool' | 'bridge' | 'silo';
interface Placement {
  database: string;
  schema: string;
}
interface T {
  label: string;
  tier: Tier;
  slug: string;
  id: string;
  conn: Descriptor;
  /** The placement a promoted tenant left, kept frozen for the rollback window. */
  left?: Placement;
  userId: string;
  email: string;
  settingKey: string;
}

let s: TestStack;
const tenants: T[] = [];
const here = (t: T): Placement => ({ database: t.conn.database, schema: t.conn.schema! });

async function snapshot(t: T, p: Placement) {
  const out: Record<string, unknown[]> = {};
  for (const name of TABLE_NAMES) {
    out[name] = await superQuery(
      p.database,
      `SELECT row_to_json(x)::text AS r FROM ${p.schema}.${name} x WHERE tenant_id = $1 ORDER BY 1`,
      [t.id],
    );
  }
  return out;
}

const as = attempt;
const promoted = () => tenants.filter((t) => t.left);

/** Every (attacker, victim, placement) where the attacker or the victim was promoted. */
function attacks(): { a: T; b: T; p: Placement; where: string }[] {
  const out: { a: T; b: T; p: Placement; where: string }[] = [];
  for (const a of tenants)
    for (const b of tenants) {
      if (a === b || (!a.left && !b.left)) continue;
      out.push({ a, b, p: here(b), where: `${a.label} -> ${b.label}` });
      if (b.left) out.push({ a, b, p: b.left, where: `${a.label} -> ${b.label} (the placement it left)` });
    }
  return out;
}

beforeAll(async () => {
  s = await startStack({ TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: '600000' });
  const plan: [string, Tier, Tier | null][] = [
    ['pool', 'pool', null],
    ['pool-2', 'pool', null],
    ['bridge', 'bridge', null],
    ['silo', 'silo', null],
    ['pool→bridge', 'pool', 'bridge'],
    ['pool→silo', 'pool', 'silo'],
    ['bridge→silo', 'bridge', 'silo'],
  ];
  for (const [label, tier, to] of plan) {
    const o = await onboard(s, tier);
    const t: T = {
      label,
      tier,
      slug: o.slug,
      id: o.id,
      conn: await connectionOf(s, o.slug),
      userId: crypto.randomUUID(),
      email: `owner@${o.slug}.example`,
      settingKey: `key-of-${o.slug}`,
    };
    for (const name of TABLE_NAMES) {
      const [values, params] = TABLES[name]!.seed(t);
      await superQuery(t.conn.database, `INSERT INTO ${t.conn.schema}.${name} ${values}`, params);
    }
    if (to) {
      const res = await promote(s, t.slug, to);
      const op = await waitForOperation(s, res.json().operation.id, 60_000);
      if (op.status !== 'succeeded') throw new Error(`promotion of ${label} failed: ${op.error}`);
      t.left = here(t);
      t.tier = to;
      t.conn = await connectionOf(s, t.slug);
    }
    tenants.push(t);
  }
}, 180_000);

afterAll(async () => {
  await s?.close();
});

describe('isolation of promoted tenants, inside the rollback window', () => {
  it('each promoted tenant moved with all its rows, and left a frozen copy behind', async () => {
    expect(promoted().map((t) => t.label)).toEqual(['pool→bridge', 'pool→silo', 'bridge→silo']);
    for (const t of promoted()) {
      expect(t.conn.tier).toBe(t.tier);
      for (const p of [here(t), t.left!])
        for (const [name, rows] of Object.entries(await snapshot(t, p)))
          expect(rows, `${t.label} ${p.schema}.${name}`).toHaveLength(1);
    }
  });

  it("no tenant reads another's rows, at either placement of a promoted tenant", async () => {
    for (const { a, b, p, where } of attacks()) {
      const results = await as(
        a,
        TABLE_NAMES.map((name) => [`SELECT * FROM ${p.schema}.${name} WHERE tenant_id = $1`, [b.id]]),
        p.database,
      );
      results.forEach((r, i) => {
        expect(r.rows, `${where}.${TABLE_NAMES[i]}`).toBe(0);
        for (const secret of secretsOf(b)) expect(r.refused ?? '', where).not.toContain(secret);
      });
    }
  });

  it("no tenant inserts, updates or deletes another's rows, at either placement of a promoted tenant", async () => {
    for (const { a, b, p, where } of attacks()) {
      const before = await snapshot(b, p);
      const statements: [string, unknown[]][] = TABLE_NAMES.flatMap((name) => {
        const [values, params] = TABLES[name]!.insert(b);
        return [
          [`INSERT INTO ${p.schema}.${name} ${values}`, params],
          [`UPDATE ${p.schema}.${name} SET ${TABLES[name]!.set} WHERE tenant_id = $1`, [b.id]],
          [`DELETE FROM ${p.schema}.${name} WHERE tenant_id = $1`, [b.id]],
        ] as [string, unknown[]][];
      });
      const results = await as(a, statements, p.database);
      results.forEach((r, i) => {
        const what = `${where}: ${statements[i]![0]}`;
        expect(r.refused !== null || r.rows === 0, what).toBe(true);
        for (const secret of secretsOf(b)) expect(r.refused ?? '', what).not.toContain(secret);
      });
      expect(await snapshot(b, p), where).toEqual(before);
    }
  });

  it('a promoted tenant cannot write the placement it left, and reaches no database but its own', async () => {
    for (const t of promoted()) {
      const insert = TABLES.users!.insert(t);
      const [r] = await as(
        t,
        [[`INSERT INTO ${t.left!.schema}.users ${insert[0]}`, insert[1]]],
        t.left!.database,
      );
      // Its new role has no access there at all.
      expect(r!.refused, t.label).toMatch(/permission denied/);
      if (t.left!.schema === 'pool') {
        // The shared pool role still reaches the pool: the tenant's rows there are frozen.
        const pool = tenants.find((o) => o.tier === 'pool')!;
        const asShared = { ...pool, id: t.id };
        const [w] = await as(asShared, [[`INSERT INTO pool.users ${insert[0]}`, insert[1]]], s.dataDb);
        expect(w!.refused, t.label).toMatch(/read-only while it moves to another tier/);
      }
      const others = [
        s.controlDb,
        'postgres',
        'template1',
        ...(t.tier === 'silo' ? [s.dataDb] : []),
        ...tenants.filter((o) => o !== t && o.tier === 'silo').map((o) => o.conn.database),
      ];
      for (const db of others) {
        const [c] = await as(t, [['SELECT 1', []]], db);
        expect(c!.refused, `${t.label} -> ${db}`).toMatch(
          /permission denied for database|does not have CONNECT privilege/,
        );
      }
    }
  });
});
