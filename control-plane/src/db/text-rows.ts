import type { EventEmitter } from 'node:events';
import pg from 'pg';
import type { DriverStatement, NamedStatement, Queryable } from '../domain/queryable.js';

/** A row as the server sent it: one text per column, null for NULL. */
export type TextRow = (string | null)[];

/** What this module touches of pg's Query beyond its typings: the statement's name and its result's rows. */
interface QueryInternals {
  name: string;
  _result: { rows: TextRow[] };
}

/**
 * pg's Query, keeping each data row as the protocol parser hands it over: an array of the server's
 * text. For a caller that renders the columns itself (the tenant list and the one-tenant read of
 * db/repo.ts). pg's own row path (`Result.addFields`, building a prototype row object keyed by every
 * column's name on every execution, then one type parser call per column per row) was, in a CPU
 * profile of the one-tenant read under load, the largest single cost in the control plane's process
 * after the socket writes (docs/benchmarks.md). The two hooks overridden here are the ones pg's
 * Submittable interface names (pg-cursor implements the same); everything else (parse once per
 * connection, bind, describe, execute, sync, errors) is pg's own.
 */
class TextRowsQuery extends pg.Query {
  handleRowDescription(): void {}

  handleDataRow(msg: { fields: TextRow }): void {
    (this as unknown as QueryInternals)._result.rows.push(msg.fields);
  }
}

/**
 * What pg's `query` answered, as a promise. A pool answers a statement object with a promise (it sets
 * the query's callback, to release its connection); a client answers with the statement object
 * itself, which then reports by its events (`end` with the result, `error`).
 */
export function answerOf(sent: unknown): Promise<unknown> {
  if (typeof (sent as PromiseLike<unknown> | null)?.then === 'function') return Promise.resolve(sent);
  return new Promise((resolve, reject) => (sent as EventEmitter).once('end', resolve).once('error', reject));
}

/** Runs `s` (prepared once per connection under its name; '' for the unnamed statement) and returns its rows as text. */
export async function queryText(q: Queryable, s: NamedStatement, values: unknown[]): Promise<TextRow[]> {
  // The text as a string: pg copies a config object property by property, a string it does not.
  const query = new TextRowsQuery(s.text, values);
  (query as unknown as QueryInternals).name = s.name;
  const result = (await answerOf(q.query(query as unknown as DriverStatement))) as { rows: TextRow[] };
  return result.rows;
}
