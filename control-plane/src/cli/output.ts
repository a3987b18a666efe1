import Table from 'cli-table3';
import pc from 'picocolors';
import YAML from 'yaml';

/**
 * What a command prints on stdout: a table for people (the default), or the API's own object as
 * JSON or YAML for scripts (`tenantry … -o json | jq` reads exactly what the API answered).
 * Diagnostics and progress go to stderr (`say`), so stdout stays data.
 */

export const FORMATS = ['table', 'json', 'yaml'] as const;
export type Format = (typeof FORMATS)[number];

export interface Column<T> {
  header: string;
  value: (row: T) => unknown;
}

export interface Out {
  format: Format;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** The process's own streams. */
export const processOut = (format: Format): Out => ({
  format,
  stdout: process.stdout,
  stderr: process.stderr,
});

/** A line of diagnostics (progress, notes, errors) on stderr. */
export const say = (out: Out, line: string) => out.stderr.write(`${line}\n`);

/** Prints `data` as JSON or YAML, or calls `table` for the human form. */
export function emit(out: Out, data: unknown, table: () => string): void {
  if (out.format === 'json') out.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
  else if (out.format === 'yaml') out.stdout.write(YAML.stringify(data));
  else out.stdout.write(`${table()}\n`);
}

/** A cell: empty for nothing, ISO timestamps shortened, objects as compact JSON. */
export function cell(v: unknown): string {
  if (v === null || v === undefined || v === '') return pc.dim('-');
  if (typeof v === 'string') return /^\d{4}-\d\d-\d\dT/.test(v) ? shortTime(v) : v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return v.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(', ');
  return JSON.stringify(v);
}

export const shortTime = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');

/** Rows under a header, one per item; "no …" when there are none. */
export function listTable<T>(items: readonly T[], columns: Column<T>[], empty = '(none)'): string {
  if (items.length === 0) return pc.dim(empty);
  const t = new Table({ head: columns.map((c) => pc.bold(c.header)), style: { head: [], border: [] } });
  for (const item of items) t.push(columns.map((c) => cell(c.value(item))));
  return t.toString();
}

/** A keyset page: its rows, and where the next page starts (the JSON and YAML forms: the page itself). */
export function emitPage<T>(
  out: Out,
  page: { items: readonly T[]; nextCursor: string | null },
  columns: Column<T>[],
  empty: string,
): void {
  emit(out, page, () => {
    const t = listTable(page.items, columns, empty);
    return page.nextCursor ? `${t}\n${pc.dim(`more: --cursor ${page.nextCursor} (or --all)`)}` : t;
  });
}

/** One object as field / value rows. */
export function recordTable(fields: [string, unknown][]): string {
  const t = new Table({ style: { head: [], border: [] } });
  for (const [k, v] of fields) t.push({ [pc.bold(k)]: cell(v) });
  return t.toString();
}

/** Status words coloured by outcome (colour only on a terminal: picocolors checks). */
export function status(s: string): string {
  if (['succeeded', 'active', 'ok', 'repaired', 'completed', 'healthy', 'ready'].includes(s))
    return pc.green(s);
  if (['failed', 'cancelled', 'unrepaired', 'offboarded', 'suspended', 'unhealthy', 'parked'].includes(s))
    return pc.red(s);
  if (['running', 'provisioning', 'offboarding', 'queued', 'open', 'paused', 'pending'].includes(s))
    return pc.yellow(s);
  return s;
}
