import type { Queryable } from '../domain/queryable.js';
import type { TenantTemplate } from '../providers/postgres/types.js';

/**
 * The tenant-schema template lint (docs/rollouts.md, "Template lint"), run at start and in tests.
 * What it refuses:
 * - a table without `tenant_id`, or a primary key, unique constraint or index that does not lead
 *   with it (a unique violation would leak another tenant's value; promotion copies by it);
 * - a statement that cannot run inside a transaction (each migration runs in one, with its version
 *   bump), or one that ends or splits the migration's transaction;
 * - a DROP of a table or column in the version that stops using it: a version first marks it
 *   `COMMENT ON … IS 'tenantry:deprecated …'` (expand), a later one drops it (contract).
 *
 * The statement rules are read from the text; the rest from Postgres itself: every version is applied
 * to a scratch schema in a transaction that is rolled back, and the catalogs are read after each.
 */

export const DEPRECATED_MARKER = 'tenantry:deprecated';

export interface LintIssue {
  version: number;
  /** The migration's file name, without `.sql`. */
  migration: string;
  rule: 'tenant-id' | 'transaction' | 'contract';
  message: string;
}

/** A table or column a version drops, and the earlier version that stopped using it. */
export interface TemplateContract {
  version: number;
  /** `table` or `table.column`. */
  object: string;
  deprecatedAt: number;
}

export interface TemplateLint {
  issues: LintIssue[];
  contracts: TemplateContract[];
  /** The template's tables once each version is applied (index = version). */
  tablesByVersion: Record<number, string[]>;
  /** Versions that create tables (their new tables need the freeze guards the schema's others have). */
  createsTables: number[];
}

export class TemplateLintError extends Error {
  override name = 'TemplateLintError';
  constructor(readonly issues: LintIssue[]) {
    super(
      `the tenant-schema template is refused:\n${issues.map((i) => `  ${i.migration}.sql: ${i.message}`).join('\n')}`,
    );
  }
}

/**
 * Splits SQL into statements, skipping comments and never splitting inside a string, a quoted
 * identifier or a dollar-quoted body. Each statement comes back as written (comments removed,
 * trimmed), with `words`: its leading keywords, upper-cased, for the statement rules.
 */
export function splitStatements(sql: string): { text: string; words: string[] }[] {
  const out: { text: string; words: string[] }[] = [];
  let cur = '';
  let i = 0;
  const push = () => {
    const text = cur.trim();
    if (text) out.push({ text, words: leadingWords(text) });
    cur = '';
  };
  while (i < sql.length) {
    const c = sql[i] as string;
    const next = sql[i + 1];
    if (c === '-' && next === '-') {
      const end = sql.indexOf('\n', i);
      i = end === -1 ? sql.length : end;
      continue;
    }
    if (c === '/' && next === '*') {
      let depth = 1;
      i += 2;
      while (i < sql.length && depth > 0) {
        const pair = sql.slice(i, i + 2);
        if (pair === '/*' || pair === '*/') {
          depth += pair === '/*' ? 1 : -1;
          i += 2;
        } else i++;
      }
      cur += ' ';
      continue;
    }
    if (c === "'" || c === '"') {
      const escapes = c === "'" && /[eE]$/.test(cur) && !/[A-Za-z0-9_][eE]$/.test(cur);
      let j = i + 1;
      while (j < sql.length) {
        if (escapes && sql[j] === '\\') j += 2;
        else if (sql[j] === c && sql[j + 1] === c) j += 2;
        else if (sql[j] === c) break;
        else j++;
      }
      cur += sql.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (c === '$') {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i));
      if (tag && !/[A-Za-z0-9_]$/.test(cur)) {
        const end = sql.indexOf(tag[0], i + tag[0].length);
        const stop = end === -1 ? sql.length : end + tag[0].length;
        cur += sql.slice(i, stop);
        i = stop;
        continue;
      }
    }
    if (c === ';') {
      push();
      i++;
      continue;
    }
    cur += c;
    i++;
  }
  push();
  return out;
}

function leadingWords(text: string): string[] {
  return (text.match(/^[\s(]*((?:[A-Za-z_]+\s*){1,4})/)?.[1] ?? '')
    .trim()
    .split(/\s+/)
    .map((w) => w.toUpperCase());
}

const TRANSACTION_CONTROL = new Set([
  'BEGIN',
  'START',
  'COMMIT',
  'END',
  'ROLLBACK',
  'ABORT',
  'SAVEPOINT',
  'RELEASE',
  'PREPARE',
]);
/** Statements Postgres refuses inside a transaction block (the rest are caught by running them). */
const NOT_IN_TRANSACTION: [RegExp, string][] = [
  [/\bCONCURRENTLY\b/i, 'CONCURRENTLY'],
  [/^VACUUM\b/i, 'VACUUM'],
  [/^(CREATE|DROP|ALTER)\s+DATABASE\b/i, 'a DATABASE statement'],
  [/^ALTER\s+SYSTEM\b/i, 'ALTER SYSTEM'],
  [/^(CREATE|DROP)\s+TABLESPACE\b/i, 'a TABLESPACE statement'],
  [/^REINDEX\s+(SYSTEM|DATABASE)\b/i, 'REINDEX SYSTEM/DATABASE'],
  [/^(CREATE|DROP|ALTER)\s+SUBSCRIPTION\b/i, 'a SUBSCRIPTION statement'],
];

/** The statement rules, from the text alone (nothing runs). */
export function statementIssues(template: TenantTemplate): LintIssue[] {
  const issues: LintIssue[] = [];
  for (const m of template.migrations) {
    for (const s of splitStatements(m.sql)) {
      const first = s.words[0] ?? '';
      const flat = s.text.replace(/\s+/g, ' ');
      const show = flat.length > 80 ? `${flat.slice(0, 77)}...` : flat;
      if (TRANSACTION_CONTROL.has(first)) {
        issues.push({
          version: m.version,
          migration: m.name,
          rule: 'transaction',
          message: `"${show}" controls the transaction; each migration already runs in one transaction with its version bump`,
        });
        continue;
      }
      const hit = NOT_IN_TRANSACTION.find(([re]) => re.test(flat));
      if (hit) {
        issues.push({
          version: m.version,
          migration: m.name,
          rule: 'transaction',
          message: `"${show}" cannot run inside a transaction (${hit[1]}); each migration runs in one`,
        });
      }
    }
  }
  return issues;
}

interface Snapshot {
  tables: Map<string, { comment: string | null; columns: Map<string, string | null> }>;
  indexes: { name: string; table: string; first: string | null; kind: string }[];
}

async function snapshot(db: Queryable, schema: string): Promise<Snapshot> {
  const { rows: cols } = await db.query<{
    t: string;
    tc: string | null;
    a: string | null;
    ac: string | null;
  }>(
    `SELECT c.relname AS t, obj_description(c.oid, 'pg_class') AS tc, a.attname AS a,
            col_description(c.oid, a.attnum) AS ac
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')`,
    [schema],
  );
  const tables: Snapshot['tables'] = new Map();
  for (const r of cols) {
    const t = tables.get(r.t) ?? { comment: r.tc, columns: new Map() };
    if (r.a !== null) t.columns.set(r.a, r.ac);
    tables.set(r.t, t);
  }
  const { rows: indexes } = await db.query<{
    name: string;
    table: string;
    first: string | null;
    kind: string;
  }>(
    `SELECT i.relname AS name, c.relname AS "table",
            (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = x.indkey[0]) AS first,
            CASE WHEN k.contype = 'p' THEN 'primary key' WHEN k.contype = 'u' THEN 'unique constraint'
                 WHEN k.contype = 'x' THEN 'exclusion constraint' WHEN x.indisunique THEN 'unique index'
                 ELSE 'index' END AS kind
       FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_constraint k ON k.conindid = x.indexrelid AND k.conrelid = c.oid
      WHERE n.nspname = $1 ORDER BY 1`,
    [schema],
  );
  return { tables, indexes };
}

const deprecated = (comment: string | null | undefined) => (comment ?? '').startsWith(DEPRECATED_MARKER);

/**
 * Lints the template against a real Postgres (a scratch schema in a transaction that is rolled back;
 * `db` must be one session). The statement rules run first; a template they refuse is not executed.
 */
export async function lintTemplate(db: Queryable, template: TenantTemplate): Promise<TemplateLint> {
  const result: TemplateLint = {
    issues: statementIssues(template),
    contracts: [],
    tablesByVersion: {},
    createsTables: [],
  };
  if (result.issues.length > 0) return result;
  const schema = `tenantry_lint_${Math.random().toString(16).slice(2, 10)}`;
  const deprecatedAt = new Map<string, number>();
  await db.query('BEGIN');
  try {
    await db.query(`CREATE SCHEMA "${schema}"`);
    await db.query(`SET LOCAL search_path TO "${schema}"`);
    let before = await snapshot(db, schema);
    result.tablesByVersion[0] = [];
    for (const m of [...template.migrations].sort((a, b) => a.version - b.version)) {
      const issue = (rule: LintIssue['rule'], message: string) =>
        result.issues.push({ version: m.version, migration: m.name, rule, message });
      for (const s of splitStatements(m.sql)) {
        try {
          await db.query(s.text);
        } catch (e) {
          const err = e as { code?: string; message?: string };
          const flat = s.text.replace(/\s+/g, ' ');
          const show = flat.length > 80 ? `${flat.slice(0, 77)}...` : flat;
          issue(
            'transaction',
            err.code === '25001'
              ? `"${show}" cannot run inside a transaction; each migration runs in one`
              : `"${show}" fails on an empty schema: ${err.message ?? String(e)}`,
          );
          return result;
        }
      }
      const after = await snapshot(db, schema);
      for (const [t, def] of after.tables) {
        if (!def.columns.has('tenant_id')) issue('tenant-id', `table ${t} has no tenant_id column`);
        if (deprecated(def.comment) && !deprecatedAt.has(t)) deprecatedAt.set(t, m.version);
        for (const [c, comment] of def.columns)
          if (deprecated(comment) && !deprecatedAt.has(`${t}.${c}`)) deprecatedAt.set(`${t}.${c}`, m.version);
      }
      for (const ix of after.indexes) {
        if (ix.first !== 'tenant_id')
          issue('tenant-id', `${ix.kind} ${ix.name} on ${ix.table} does not lead with tenant_id`);
      }
      const contract = (object: string, wasMarked: boolean, what: string) => {
        const at = deprecatedAt.get(object);
        if (!wasMarked || at === undefined || at >= m.version) {
          issue(
            'contract',
            `drops ${what} ${object}, which no earlier version marked ${DEPRECATED_MARKER} (COMMENT ON ${what.toUpperCase()} ${object} IS '${DEPRECATED_MARKER}'): stop using it in one version, drop it in a later one`,
          );
        } else result.contracts.push({ version: m.version, object, deprecatedAt: at });
      };
      for (const [t, def] of before.tables) {
        const now = after.tables.get(t);
        if (!now) {
          contract(t, deprecated(def.comment), 'table');
          continue;
        }
        for (const [c, comment] of def.columns)
          if (!now.columns.has(c)) contract(`${t}.${c}`, deprecated(comment), 'column');
      }
      if ([...after.tables.keys()].some((t) => !before.tables.has(t))) result.createsTables.push(m.version);
      result.tablesByVersion[m.version] = [...after.tables.keys()].sort();
      before = after;
    }
    return result;
  } finally {
    await db.query('ROLLBACK').catch(() => undefined);
  }
}

/** Lints and throws `TemplateLintError` naming every issue. */
export async function assertTemplateLint(db: Queryable, template: TenantTemplate): Promise<TemplateLint> {
  const lint = await lintTemplate(db, template);
  if (lint.issues.length > 0) throw new TemplateLintError(lint.issues);
  return lint;
}
