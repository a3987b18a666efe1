import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildMigrations, MIGRATIONS_DIR } from '../../control-plane/src/db/migrate.js';

/**
 * Migrations are expand-first (docs/operations.md, "Rolling restarts"): a migration only adds what
 * the running, older build ignores, so that build keeps working while a newer one migrates and starts.
 * Removing or changing what an older build uses (a contract step) ships in a later release, once no
 * process of the build that used it runs; such a file says so on a line `-- contract: <why it is safe>`.
 * The check below reads statements, not intent: a statement it flags that an older build still lives
 * with (a CHECK widened to admit a new value, a unique index over rows only the new build writes) says
 * why in a comment `compatible: <why>` (or `expand-only: <why>`). 0001 is the first schema, before any
 * build ran against another.
 */
const CONTRACT: [RegExp, string][] = [
  [/\bDROP\s+(TABLE|COLUMN|INDEX|CONSTRAINT|VIEW|FUNCTION|TYPE|SCHEMA|TRIGGER|SEQUENCE)\b/i, 'drops'],
  [/\bRENAME\b/i, 'renames'],
  [
    /\bALTER\s+COLUMN\s+\S+\s+(SET\s+NOT\s+NULL|TYPE|SET\s+DATA\s+TYPE|DROP\s+DEFAULT)\b/i,
    'changes a column',
  ],
  [
    /\bADD\s+COLUMN\b(?:(?!\bDEFAULT\b)[^;])*\bNOT\s+NULL\b(?:(?!\bDEFAULT\b)[^;])*;/i,
    'adds a NOT NULL column without a default',
  ],
  [/\bADD\s+(CONSTRAINT|CHECK|UNIQUE|PRIMARY\s+KEY|EXCLUDE)\b/i, 'adds a constraint to an existing table'],
  [/\b(TRUNCATE|DELETE\s+FROM)\b/i, 'deletes rows'],
];

/** Unique indexes are constraints too: one on a table this file did not create refuses an older build's writes. */
function uniqueIndexOnExistingTable(sql: string): string | null {
  const created = new Set(
    [...sql.matchAll(/CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)/gi)].map((m) => m[1]),
  );
  for (const m of sql.matchAll(
    /CREATE\s+UNIQUE\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?\w+\s+ON\s+(\w+)/gi,
  )) {
    if (!created.has(m[1])) return m[1] as string;
  }
  return null;
}

/** What makes `sql` a contract step (comments aside), or null when it only expands. */
function contractStep(sql: string): string | null {
  const code = sql.replace(/--[^\n]*/g, '');
  for (const [pattern, what] of CONTRACT) if (pattern.test(code)) return what;
  const table = uniqueIndexOnExistingTable(code);
  return table ? `adds a unique index to the existing table ${table}` : null;
}

describe('control-plane migrations are expand-first', () => {
  const files = buildMigrations().filter((n) => !n.startsWith('0001_'));

  it.each(files)('%s only expands, or says why its contract step is safe', (name) => {
    const sql = fs.readFileSync(path.join(MIGRATIONS_DIR, `${name}.sql`), 'utf8');
    const declared = /^--.*\b(contract|compatible|expand-only):\s*\S/im.test(sql);
    if (!declared) expect(contractStep(sql)).toBeNull();
  });

  it.each([
    ['ALTER TABLE tenants DROP COLUMN plan;', 'drops'],
    ['ALTER TABLE tenants RENAME COLUMN plan TO tier_plan;', 'renames'],
    ['ALTER TABLE tenants ALTER COLUMN plan SET NOT NULL;', 'changes a column'],
    ['ALTER TABLE tenants ALTER COLUMN plan TYPE varchar(20);', 'changes a column'],
    ['ALTER TABLE tenants ADD COLUMN owner text NOT NULL;', 'adds a NOT NULL column without a default'],
    [
      "ALTER TABLE tenants ADD CONSTRAINT plan_known CHECK (plan IN ('a'));",
      'adds a constraint to an existing table',
    ],
    [
      'CREATE UNIQUE INDEX tenants_name ON tenants (name);',
      'adds a unique index to the existing table tenants',
    ],
    ['DELETE FROM audit_log;', 'deletes rows'],
  ])('flags a contract step: %s', (sql, what) => {
    expect(contractStep(sql)).toBe(what);
  });

  it.each([
    'ALTER TABLE tenants ADD COLUMN labels jsonb;',
    "ALTER TABLE operations ADD COLUMN progress jsonb NOT NULL DEFAULT '{}'::jsonb;",
    'CREATE TABLE notes (id text PRIMARY KEY, n text NOT NULL);\nCREATE UNIQUE INDEX notes_n ON notes (n);',
    'CREATE INDEX tenants_by_plan ON tenants (plan);',
    'ALTER TABLE local_keys ADD COLUMN root_key_id text REFERENCES root_keys (id);',
  ])('lets an expand step through: %s', (sql) => {
    expect(contractStep(sql)).toBeNull();
  });
});
