import pg from 'pg';
import { hardenDatabase } from '../../control-plane/src/providers/postgres/index.js';
import { adminUrl, tenantClient } from '../helpers/runtime.js';

/**
 * What the red-team isolation suites share: the template's tables with how a tenant's row is seeded
 * and how an intruder tries to insert and update one, the values that must never leak, and the
 * attempt runner (red-team-suite.ts, red-team-promoted.test.ts).
 */
export interface Victim {
  id: string;
  userId: string;
  email: string;
  settingKey: string;
  /** What a version that adds a column (TABLES_V2) stores in it for this tenant. */
  note?: string;
}

export interface Intruder {
  id: string;
  conn: {
    host: string;
    port: number;
    database: string;
    user: string;
    password: string;
    tenantSetting?: string;
  };
}

/** How the suite seeds a tenant's row in a table, and how an intruder inserts and updates one. */
export interface TableDef {
  /** The victim's own row: `(columns) VALUES (…)` and its parameters. */
  seed: (t: Victim) => [string, unknown[]];
  /** A row carrying the victim's tenant id, as an intruder would plant it. */
  insert: (b: Victim) => [string, unknown[]];
  /** An intruder's SET clause. */
  set: string;
}

/**
 * One entry per table of templates/tenant-schema. The suite checks that this list and the
 * live template's tables are the same set, so a new table needs an entry here.
 */
export const TABLES: Record<string, TableDef> = {
  users: {
    seed: (t) => ['(tenant_id, id, email, name) VALUES ($1, $2, $3, $4)', [t.id, t.userId, t.email, 'owner']],
    insert: (b) => ["(tenant_id, email) VALUES ($1, 'intruder@x')", [b.id]],
    set: "name = 'pwned'",
  },
  documents: {
    seed: (t) => [
      "(tenant_id, owner_id, title, body) VALUES ($1, $2, 'plan', 'secret plan')",
      [t.id, t.userId],
    ],
    insert: (b) => ["(tenant_id, owner_id, title) VALUES ($1, $2, 'planted')", [b.id, b.userId]],
    set: "body = 'pwned'",
  },
  settings: {
    seed: (t) => [`(tenant_id, key, value) VALUES ($1, $2, '{"tier": "secret"}')`, [t.id, t.settingKey]],
    insert: (b) => ["(tenant_id, key) VALUES ($1, 'intruder')", [b.id]],
    set: `value = '{"pwned": true}'`,
  },
};
export const TABLE_NAMES = Object.keys(TABLES);

/**
 * The tables of ISOLATION_VERSION_2 (tests/helpers/templates.ts): version 1's, each with a nullable
 * `note` (the intruder's writes set it too), and the new table `tags`. Seeds write version 1's
 * columns only, so a tenant onboarded at version 1 is seeded the same way before the rollout;
 * seedTenant (red-team-suite.ts) then fills `note`.
 */
export const TABLES_V2: Record<string, TableDef> = {
  users: {
    ...TABLES.users!,
    insert: (b) => ["(tenant_id, email, note) VALUES ($1, 'intruder@x', 'planted')", [b.id]],
    set: "name = 'pwned', note = 'pwned'",
  },
  documents: {
    ...TABLES.documents!,
    insert: (b) => [
      "(tenant_id, owner_id, title, note) VALUES ($1, $2, 'planted', 'planted')",
      [b.id, b.userId],
    ],
    set: "body = 'pwned', note = 'pwned'",
  },
  settings: {
    ...TABLES.settings!,
    insert: (b) => ["(tenant_id, key, note) VALUES ($1, 'intruder', 'planted')", [b.id]],
    set: `value = '{"pwned": true}', note = 'pwned'`,
  },
  tags: {
    seed: (t) => [
      '(tenant_id, name, owner_id) VALUES ($1, $2, $3)',
      [t.id, `tag-of-${t.settingKey}`, t.userId],
    ],
    insert: (b) => ["(tenant_id, name, note) VALUES ($1, 'planted', 'planted')", [b.id]],
    set: "name = 'pwned', note = 'pwned'",
  },
};

/** Values of a victim that must never appear in anything an intruder sees, errors included. */
export const secretsOf = (b: Victim) => [
  b.email,
  b.userId,
  b.settingKey,
  'secret plan',
  ...(b.note ? [b.note] : []),
];

/**
 * Runs each statement as `a` on `database`, each in its own transaction with a's tenant setting
 * when a is pooled, and `settings` set locally (`enable_seqscan: 'off'`, say, to go through an
 * index); returns each one's row count or refusal.
 */
export async function attempt(
  a: Intruder,
  statements: [string, unknown[]][],
  database: string,
  settings: Record<string, string> = {},
): Promise<{ refused: string | null; rows: number }[]> {
  let c: pg.Client;
  try {
    c = await tenantClient({ ...a.conn, database });
  } catch (e) {
    return statements.map(() => ({ refused: (e as Error).message, rows: 0 }));
  }
  const out: { refused: string | null; rows: number }[] = [];
  try {
    for (const [sql, params] of statements) {
      try {
        await c.query('BEGIN');
        if (a.conn.tenantSetting)
          await c.query('SELECT set_config($1, $2, true)', [a.conn.tenantSetting, a.id]);
        for (const [name, value] of Object.entries(settings))
          await c.query('SELECT set_config($1, $2, true)', [name, value]);
        const r = await c.query(sql, params);
        await c.query('COMMIT');
        out.push({ refused: null, rows: r.rowCount ?? 0 });
      } catch (e) {
        await c.query('ROLLBACK').catch(() => undefined);
        out.push({ refused: (e as Error).message, rows: 0 });
      }
    }
  } finally {
    await c.end();
  }
  return out;
}

/**
 * Hardens a data-plane database as the superuser, the way bootstrap does for the shared data
 * database (`shared: true`) and the silo template (`shared: false`), and returns what PUBLIC still
 * reaches there (nothing, once hardened).
 */
export async function hardenAsSuperuser(database: string, shared: boolean): Promise<string[]> {
  const c = new pg.Client({ connectionString: adminUrl(database) });
  await c.connect();
  try {
    return (await hardenDatabase(c, { shared })).reachable;
  } finally {
    await c.end();
  }
}

/** The SQLSTATE a statement fails with on `c`, or null when it succeeds. */
export async function sqlstate(c: pg.Client, sql: string, params: unknown[] = []): Promise<string | null> {
  return c.query(sql, params).then(
    () => null,
    (e: { code?: string }) => e.code ?? 'no code',
  );
}
