import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StartRefused } from '../../control-plane/src/config.js';
import { lintTemplate, splitStatements } from '../../control-plane/src/lib/template-lint.js';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import type { TenantTemplate } from '../../control-plane/src/providers/postgres/types.js';
import { adminUrl, auth, dropStackDatabases, onboard, rand, startStack } from '../helpers/runtime.js';
import { copyTemplates, restartStack, VERSION_2 } from '../helpers/templates.js';

/**
 * The tenant-schema template lint (lib/template-lint.ts) against real Postgres: the repository's
 * template and the rollout tests' version 2 pass; each rule refuses what it is for, naming the file;
 * and a control plane refuses to start on a template it refuses.
 */
let db: pg.Client;
beforeAll(async () => {
  db = new pg.Client({ connectionString: adminUrl('postgres') });
  await db.connect();
});
afterAll(async () => {
  await db?.end();
});

const repo = loadTemplates(path.resolve(import.meta.dirname, '../../templates')).tenantSchema;
const withVersion = (sql: string, name = 'next'): TenantTemplate => ({
  version: repo.version + 1,
  migrations: [
    ...repo.migrations,
    { version: repo.version + 1, name: `000${repo.version + 1}_${name}`, sql },
  ],
});
const twoMore = (a: string, b: string): TenantTemplate => ({
  version: repo.version + 2,
  migrations: [
    ...repo.migrations,
    { version: repo.version + 1, name: '0002_a', sql: a },
    { version: repo.version + 2, name: '0003_b', sql: b },
  ],
});

describe('templates that pass', () => {
  it("the repository's template, with the tables of each version", async () => {
    const lint = await lintTemplate(db, repo);
    expect(lint.issues).toEqual([]);
    expect(lint.tablesByVersion[1]).toEqual(['documents', 'settings', 'users']);
    expect(lint.createsTables).toEqual([1]);
    expect(lint.contracts).toEqual([]);
  });

  it('version 2 of the rollout tests (a column, an index, a check)', async () => {
    const lint = await lintTemplate(db, withVersion(VERSION_2));
    expect(lint.issues).toEqual([]);
    expect(lint.createsTables).toEqual([1]);
  });

  it('a drop one version after the version that stopped using it, recorded as a contract', async () => {
    const lint = await lintTemplate(
      db,
      twoMore(
        `ALTER TABLE users ADD COLUMN display text; COMMENT ON COLUMN users.name IS 'tenantry:deprecated use display';`,
        'ALTER TABLE users DROP COLUMN name;',
      ),
    );
    expect(lint.issues).toEqual([]);
    expect(lint.contracts).toEqual([{ version: 3, object: 'users.name', deprecatedAt: 2 }]);
  });

  it('a new table that follows the rules, with dollar-quoted and commented bodies', async () => {
    const lint = await lintTemplate(
      db,
      withVersion(`-- a comment; with a semicolon
CREATE TABLE events (tenant_id uuid NOT NULL, id bigint NOT NULL, kind text NOT NULL DEFAULT 'a;b', PRIMARY KEY (tenant_id, id));
/* a block comment; COMMIT; */
CREATE INDEX events_kind_idx ON events (tenant_id, kind);
CREATE FUNCTION events_touch() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN NEW.kind := lower(NEW.kind); RETURN NEW; END $fn$;`),
    );
    expect(lint.issues).toEqual([]);
    expect(lint.createsTables).toEqual([1, 2]);
  });
});

describe('templates the lint refuses', () => {
  it.each([
    [
      'a table without tenant_id',
      'CREATE TABLE notes (id uuid PRIMARY KEY, body text);',
      'tenant-id',
      /table notes has no tenant_id column/,
    ],
    [
      'a primary key that does not lead with tenant_id',
      'CREATE TABLE notes (tenant_id uuid NOT NULL, id uuid NOT NULL, PRIMARY KEY (id, tenant_id));',
      'tenant-id',
      /primary key notes_pkey on notes does not lead with tenant_id/,
    ],
    [
      'a unique constraint that does not lead with tenant_id',
      'ALTER TABLE users ADD CONSTRAINT users_name_key UNIQUE (name);',
      'tenant-id',
      /unique constraint users_name_key on users does not lead with tenant_id/,
    ],
    [
      'an index that does not lead with tenant_id',
      'CREATE INDEX users_name_idx ON users (name, tenant_id);',
      'tenant-id',
      /index users_name_idx on users does not lead with tenant_id/,
    ],
    [
      'an expression index',
      'CREATE INDEX users_lower_idx ON users (lower(email));',
      'tenant-id',
      /users_lower_idx on users does not lead with tenant_id/,
    ],
    [
      'CREATE INDEX CONCURRENTLY',
      'CREATE INDEX CONCURRENTLY users_n_idx ON users (tenant_id, name);',
      'transaction',
      /cannot run inside a transaction \(CONCURRENTLY\)/,
    ],
    ['VACUUM', 'VACUUM users;', 'transaction', /cannot run inside a transaction \(VACUUM\)/],
    [
      'a COMMIT',
      'ALTER TABLE users ADD COLUMN a text; COMMIT;',
      'transaction',
      /"COMMIT" controls the transaction/,
    ],
    [
      'a BEGIN',
      'BEGIN; ALTER TABLE users ADD COLUMN a text;',
      'transaction',
      /"BEGIN" controls the transaction/,
    ],
    [
      'a bare CLUSTER (only Postgres knows)',
      'CLUSTER;',
      'transaction',
      /"CLUSTER" cannot run inside a transaction/,
    ],
    [
      'a DROP COLUMN no earlier version deprecated',
      'ALTER TABLE users DROP COLUMN name;',
      'contract',
      /drops column users.name, which no earlier version marked tenantry:deprecated/,
    ],
    [
      'a DROP TABLE no earlier version deprecated',
      'DROP TABLE settings;',
      'contract',
      /drops table settings, which no earlier version marked tenantry:deprecated/,
    ],
    [
      'a RENAME (a drop for the old code)',
      'ALTER TABLE users RENAME COLUMN name TO full_name;',
      'contract',
      /drops column users.name/,
    ],
  ])('%s', async (_what, sql, rule, message) => {
    const lint = await lintTemplate(db, withVersion(sql));
    expect(lint.issues.map((i) => i.rule)).toContain(rule);
    const issue = lint.issues.find((i) => i.rule === rule);
    expect(issue?.migration).toBe(`000${repo.version + 1}_next`);
    expect(issue?.message).toMatch(message);
  });

  it('a DROP in the same version that stops using it', async () => {
    const lint = await lintTemplate(
      db,
      withVersion(
        `COMMENT ON COLUMN users.name IS 'tenantry:deprecated'; ALTER TABLE users DROP COLUMN name;`,
      ),
    );
    expect(lint.issues).toEqual([
      {
        version: 2,
        migration: '0002_next',
        rule: 'contract',
        message: expect.stringMatching(/^drops column users.name, which no earlier version marked/),
      },
    ]);
  });

  it('splits statements without breaking strings, quoted names, comments or dollar-quoted bodies', () => {
    const parts = splitStatements(`SELECT 'a;b'; SELECT "x;y" FROM t; -- c;d
SELECT $$ e;f $$; /* g; /* nested; */ h; */ SELECT E'i\\';j'`);
    expect(parts.map((p) => p.text)).toEqual([
      "SELECT 'a;b'",
      'SELECT "x;y" FROM t',
      'SELECT $$ e;f $$',
      "SELECT E'i\\';j'",
    ]);
  });
});

describe('at start', () => {
  const tpl = copyTemplates();
  afterAll(() => tpl.remove());

  it('a control plane refuses to start on a template the lint refuses, saying why', async () => {
    tpl.addVersion(2, 'bad_index', 'CREATE INDEX users_email_idx ON users (email);');
    let dbs: { controlDb: string; dataDb: string } | undefined;
    let refusal: unknown;
    try {
      const s = await startStack((names) => {
        dbs = names;
        return { TENANTRY_TEMPLATES_DIR: tpl.dir };
      });
      await s.close();
    } catch (e) {
      refusal = e;
    } finally {
      if (dbs) await dropStackDatabases(dbs.controlDb, dbs.dataDb);
    }
    expect(refusal).toBeInstanceOf(StartRefused);
    expect((refusal as Error).message).toBe(
      'the tenant-schema template is refused:\n  0002_bad_index.sql: index users_email_idx on users does not lead with tenant_id',
    );
    expect(fs.existsSync(path.join(tpl.dir, 'tenant-schema', '0002_bad_index.sql'))).toBe(true);
  });
});

describe('the contract rule at rollout time', () => {
  const tpl = copyTemplates();
  afterAll(() => tpl.remove());

  it('a rollout that would drop what a tenant still uses is refused; the deprecating version goes first', async () => {
    let s = await startStack({ TENANTRY_TEMPLATES_DIR: tpl.dir });
    try {
      const t = await onboard(s, 'bridge', `ct-${rand(3)}`);
      tpl.addVersion(
        2,
        'display',
        `ALTER TABLE users ADD COLUMN display text; COMMENT ON COLUMN users.name IS 'tenantry:deprecated use display';`,
      );
      tpl.addVersion(3, 'drop_name', 'ALTER TABLE users DROP COLUMN name;');
      s = await restartStack(s);
      const post = (toVersion: number) =>
        s.app.inject({
          method: 'POST',
          url: '/v1/rollouts',
          headers: auth(s.tokens.sre),
          payload: { toVersion },
        });
      const early = await post(3);
      expect(early.statusCode).toBe(422);
      expect(early.json().error).toMatchObject({
        code: 'ROLLOUT_INVALID',
        message: `version 3 drops users.name, which version 2 stopped using; 1 tenant(s) are still below version 2 (${t.slug}): roll out version 2 first`,
      });
      const first = await post(2);
      expect(first.statusCode).toBe(202);
    } finally {
      await s.close();
    }
  });
});
