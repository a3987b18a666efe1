/**
 * The one thing every SQL function needs from a connection: a parameterized query. A pg client,
 * a pool and a transaction's client all fit, so repositories and providers compose with the
 * caller's transaction. (pg's own types stay out of the domain.)
 */
export interface Queryable {
  query<R extends Record<string, unknown> = Record<string, unknown>>(
    text: string | NamedStatement | DriverStatement,
    params?: unknown[],
  ): Promise<{ rows: R[]; rowCount: number | null }>;
}

/**
 * A statement object of the driver's own, its values on it, handed to `query` as it is: how db/ reads
 * rows as the server's text (db/text-rows.ts). Opaque here, so the domain stays free of pg.
 */
export interface DriverStatement {
  readonly submit: unknown;
}

/**
 * A statement the driver prepares once per connection under `name` and then runs by name, so the
 * server neither parses nor plans it again (after its first runs, a cached plan): for the hot ones
 * (an operation's step records, its lease, its events). One name, one text, and a result whose
 * columns never change (a cached plan may not change its result type).
 */
export interface NamedStatement {
  readonly name: string;
  readonly text: string;
}

/** A fresh copy to hand to `query` (the driver writes the call's values onto the object it gets). */
export const named = (s: NamedStatement): NamedStatement => ({ ...s });
