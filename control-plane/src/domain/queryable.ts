/**
 * The one thing every SQL function needs from a connection: a parameterized query. A pg client,
 * a pool and a transaction's client all fit, so repositories and providers compose with the
 * caller's transaction. (pg's own types stay out of the domain.)
 */
export interface Queryable {
  query<R extends Record<string, unknown> = Record<string, unknown>>(
    text: string,
    params?: unknown[],
  ): Promise<{ rows: R[]; rowCount: number | null }>;
}
