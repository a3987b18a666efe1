import { ensureMeta } from './meta.js';
import { ident, inTransaction, literal, type Queryable } from './sql.js';

/**
 * The per-tenant write freeze, enforced in the database so that no client can bypass it.
 *
 * Every table of a freezable schema carries guard triggers of its kind (a table under row-level
 * security is shared, any other private), created once (at pool bootstrap, in the
 * silo template, when a bridge schema is created, or the first time an older private schema is
 * frozen), that refuse a statement writing a frozen tenant's rows, as listed in
 * `tenantry_meta.frozen_tenants`. Freezing a tenant inserts a row in that table and unfreezing
 * deletes it: no DDL on shared tables, no lock on them, nothing other tenants wait for.
 *  - Shared (pool) tables: statement-level AFTER INSERT / UPDATE / DELETE triggers read the tenants
 *    of the rows the statement wrote (its transition table) and look them up, once per statement.
 *    The rows themselves decide, not the session's tenant setting (which a statement can change
 *    while it runs). An UPDATE is checked on its new rows: row-level security keeps a row's tenant
 *    from changing under a tenant role.
 *  - A private (bridge or silo) schema holds one tenant: a BEFORE ... FOR EACH STATEMENT trigger
 *    refuses every write while any freeze of that schema stands.
 * The cost is paid per statement, not per row (docs/promotion.md has the measurements).
 *
 * The trigger function is SECURITY DEFINER, owned by the NOLOGIN owner role: tenant roles get no
 * privilege on `tenantry_meta` at all, so they can neither read nor change the table, and they own
 * no table, so they cannot disable the triggers (session_replication_role is superuser-only).
 *
 * The lookup reads the writer's snapshot, so freezing also waits for every transaction of the
 * placement's writer roles that began before the freeze committed: once `freeze` returns, every
 * earlier write is committed (or rolled back), and every later statement sees the freeze.
 */
const SHARED_TRIGGERS = ['tenantry_freeze_ins', 'tenantry_freeze_upd', 'tenantry_freeze_del'];
const PRIVATE_TRIGGERS = ['tenantry_freeze_guard'];
/** Every guard trigger name this module has used; a table carries exactly the set of its kind. */
const ALL_TRIGGERS = ['tenantry_freeze', ...SHARED_TRIGGERS, ...PRIVATE_TRIGGERS];
export const FREEZE_TRIGGERS = {
  shared: SHARED_TRIGGERS,
  private: PRIVATE_TRIGGERS,
  all: ALL_TRIGGERS,
} as const;
const GUARD_FN = 'tenantry_meta.frozen_write_check';
/** Bumped when the function body changes; an older body is replaced in place. */
const GUARD_VERSION = 'tenantry frozen-write check v5';

export type FreezeReason = 'promotion' | 'promotion-target' | 'offboarded' | 'moved';

/** Creates the frozen-tenants table and the guard function in the current database (idempotent). */
export async function ensureFreezeSupport(db: Queryable, owner: string): Promise<void> {
  const ready = async () => {
    const { rows } = await db.query<{ ok: boolean }>(
      `SELECT to_regclass('tenantry_meta.frozen_tenants') IS NOT NULL
          AND obj_description(to_regprocedure('${GUARD_FN}()'), 'pg_proc') = ${literal(GUARD_VERSION)} AS ok`,
    );
    return rows[0]?.ok === true;
  };
  if (await ready()) return;
  await ensureMeta(db);
  await inTransaction(db, async () => {
    await db.query(`SELECT pg_advisory_xact_lock(hashtext('tenantry.freeze-support'))`);
    if (await ready()) return;
    const o = ident(owner);
    await db.query(`
      CREATE TABLE IF NOT EXISTS tenantry_meta.frozen_tenants (
        tenant_id   uuid        NOT NULL,
        schema_name text        NOT NULL,
        reason      text        NOT NULL,
        frozen_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, schema_name)
      );
      CREATE INDEX IF NOT EXISTS frozen_tenants_schema ON tenantry_meta.frozen_tenants (schema_name);
      GRANT USAGE ON SCHEMA tenantry_meta TO ${o};
      GRANT SELECT ON tenantry_meta.frozen_tenants TO ${o};
      CREATE OR REPLACE FUNCTION ${GUARD_FN}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $fn$
      DECLARE
        t uuid;
        r text;
      BEGIN
        IF TG_WHEN OPERATOR(pg_catalog.=) 'BEFORE' THEN
          -- A private schema: one tenant, any freeze of the schema is its.
          SELECT f.tenant_id, f.reason INTO t, r FROM tenantry_meta.frozen_tenants f
           WHERE f.schema_name OPERATOR(pg_catalog.=) TG_TABLE_SCHEMA LIMIT 1;
        ELSE
          -- Shared tables: the tenants of the rows this statement wrote.
          SELECT f.tenant_id, f.reason INTO t, r
            FROM (SELECT DISTINCT x.tenant_id FROM tenantry_rows x) w
            JOIN tenantry_meta.frozen_tenants f
              ON f.tenant_id OPERATOR(pg_catalog.=) w.tenant_id
             AND f.schema_name OPERATOR(pg_catalog.=) TG_TABLE_SCHEMA
           LIMIT 1;
        END IF;
        IF t IS NULL THEN RETURN NULL; END IF;
        IF r OPERATOR(pg_catalog.=) 'promotion' THEN
          RAISE EXCEPTION 'tenant % is read-only while it moves to another tier; retry after the cutover', t
            USING ERRCODE = '25006', HINT = 'tenantry promotion freeze: re-read the connection descriptor and retry';
        ELSIF r OPERATOR(pg_catalog.=) 'promotion-target' THEN
          RAISE EXCEPTION 'tenant % is read-only while it moves to another tier (this placement takes over at the cutover); retry after the cutover', t
            USING ERRCODE = '25006', HINT = 'tenantry promotion target: not writable before the cutover';
        ELSIF r OPERATOR(pg_catalog.=) 'offboarded' THEN
          RAISE EXCEPTION 'tenant % is offboarded; its rows are no longer writable', t
            USING ERRCODE = '25006', HINT = 'tenantry offboarding';
        ELSE
          RAISE EXCEPTION 'tenant % has moved to another placement; re-read its connection descriptor', t
            USING ERRCODE = '25006', HINT = 'tenantry placement retired';
        END IF;
      END $fn$;
      -- A new owner needs CREATE on the schema (a superuser admin skips that check, an RDS master
      -- user does not): granted for the transfer only.
      GRANT CREATE ON SCHEMA tenantry_meta TO ${o};
      ALTER FUNCTION ${GUARD_FN}() OWNER TO ${o};
      REVOKE CREATE ON SCHEMA tenantry_meta FROM ${o};
      REVOKE ALL ON FUNCTION ${GUARD_FN}() FROM PUBLIC;
      COMMENT ON FUNCTION ${GUARD_FN}() IS ${literal(GUARD_VERSION)};
    `);
  });
}

/**
 * Tables of a schema whose guard triggers are not exactly the set of their kind, with their kind:
 * a table under row-level security holds several tenants' rows (the pool), any other one tenant's.
 */
async function unguarded(db: Queryable, schema: string): Promise<{ table: string; shared: boolean }[]> {
  const { rows } = await db.query<{ t: string; shared: boolean }>(
    `SELECT c.relname AS t, c.relrowsecurity AS shared FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
        AND array(SELECT g.tgname::text FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = ANY ($2::text[]) ORDER BY 1)
            IS DISTINCT FROM (CASE WHEN c.relrowsecurity THEN $3::text[] ELSE $4::text[] END)
      ORDER BY 1`,
    [schema, ALL_TRIGGERS, [...SHARED_TRIGGERS].sort(), [...PRIVATE_TRIGGERS].sort()],
  );
  return rows.map((r) => ({ table: r.t, shared: r.shared }));
}

/**
 * Puts the guard triggers on every table of a schema that lacks them (of the kind its row-level
 * security says: shared or private). A no-op (one catalog read) when they are all there, which is
 * the case for the pool after bootstrap: freezing then takes no lock.
 */
export async function ensureFreezeTriggers(
  db: Queryable,
  schema: string,
  opts: { owner: string },
): Promise<void> {
  await ensureFreezeSupport(db, opts.owner);
  if ((await unguarded(db, schema)).length === 0) return;
  const fn = `EXECUTE FUNCTION ${GUARD_FN}()`;
  // One table per transaction: holding one table's lock while waiting for the next could deadlock
  // with a writer's transaction that touches both in the other order.
  for (const { table } of await unguarded(db, schema)) {
    const q = `${ident(schema)}.${ident(table)}`;
    await inTransaction(db, async () => {
      await db.query(`SET LOCAL lock_timeout = '5s'`);
      await db.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tenantry.freeze-triggers.${schema}`]);
      const now = (await unguarded(db, schema)).find((x) => x.table === table);
      if (!now) return;
      for (const name of ALL_TRIGGERS) await db.query(`DROP TRIGGER IF EXISTS ${ident(name)} ON ${q}`);
      const ddl = now.shared
        ? [
            `CREATE TRIGGER tenantry_freeze_ins AFTER INSERT ON ${q} REFERENCING NEW TABLE AS tenantry_rows FOR EACH STATEMENT ${fn}`,
            `CREATE TRIGGER tenantry_freeze_upd AFTER UPDATE ON ${q} REFERENCING NEW TABLE AS tenantry_rows FOR EACH STATEMENT ${fn}`,
            `CREATE TRIGGER tenantry_freeze_del AFTER DELETE ON ${q} REFERENCING OLD TABLE AS tenantry_rows FOR EACH STATEMENT ${fn}`,
          ]
        : [
            `CREATE TRIGGER tenantry_freeze_guard BEFORE INSERT OR UPDATE OR DELETE ON ${q} FOR EACH STATEMENT ${fn}`,
          ];
      for (const stmt of ddl) await db.query(stmt);
    });
  }
}

/**
 * Guards a private schema nobody writes yet (a bridge schema just created from the template, before
 * its grants): every table gets its trigger in one round trip and one transaction. No writer can hold
 * a lock on these tables, so the one-table-per-transaction care of ensureFreezeTriggers is not needed.
 */
export async function guardNewPrivateSchema(
  db: Queryable,
  schema: string,
  opts: { owner: string },
): Promise<void> {
  await ensureFreezeSupport(db, opts.owner);
  await db.query(guardPrivateSchemaSql(schema));
}

/**
 * The statement that puts the private guard on every unguarded table of a schema: run it in the
 * transaction that creates the schema (see applySchema), after ensureFreezeSupport.
 */
export function guardPrivateSchemaSql(schema: string): string {
  return `DO $guard$
DECLARE t record;
BEGIN
  FOR t IN SELECT c.relname FROM pg_class c
            WHERE c.relnamespace = ${literal(schema)}::regnamespace AND c.relkind IN ('r', 'p')
              AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = ANY (${sqlTextArray(ALL_TRIGGERS)}))
  LOOP
    EXECUTE format('CREATE TRIGGER tenantry_freeze_guard BEFORE INSERT OR UPDATE OR DELETE ON %I.%I FOR EACH STATEMENT EXECUTE FUNCTION ${GUARD_FN}()',
                   ${literal(schema)}, t.relname);
  END LOOP;
END $guard$`;
}

const sqlTextArray = (xs: readonly string[]) => `ARRAY[${xs.map((x) => literal(x)).join(', ')}]::text[]`;

export interface FreezeSpec {
  schema: string;
  tenantId: string;
  reason: FreezeReason;
  /** Owner of the schema's tables; owns the guard function. Read from the schema when omitted. */
  owner?: string;
  /** Login roles that can write the placement: the freeze waits for their older transactions. */
  writers?: string[];
  /** How long to wait for those transactions before giving up (the freeze is then lifted). */
  waitMs?: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function schemaOwner(db: Queryable, schema: string): Promise<string> {
  const { rows } = await db.query<{ owner: string }>(
    'SELECT pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = $1',
    [schema],
  );
  if (!rows[0]) throw new Error(`schema ${schema} does not exist`);
  return rows[0].owner;
}

/**
 * Freezes one tenant's rows in one schema and returns once no earlier transaction of its writers
 * is still open: every write acknowledged before is committed, every write after is refused with
 * SQLSTATE 25006. Times out (code 55P03, retryable) if a writer keeps a transaction open; the
 * freeze is then lifted again unless `keepOnTimeout`.
 */
export async function freezeTenant(
  db: Queryable,
  spec: FreezeSpec,
  opts: { keepOnTimeout?: boolean } = {},
): Promise<void> {
  if (!UUID.test(spec.tenantId)) throw new Error('bad tenant id');
  const owner = spec.owner ?? (await schemaOwner(db, spec.schema));
  await ensureFreezeTriggers(db, spec.schema, { owner });
  await db.query(
    `INSERT INTO tenantry_meta.frozen_tenants (tenant_id, schema_name, reason) VALUES ($1, $2, $3)
     ON CONFLICT (tenant_id, schema_name) DO UPDATE SET reason = EXCLUDED.reason`,
    [spec.tenantId, spec.schema, spec.reason],
  );
  // The insert has committed: transactions that begin after this instant see the freeze.
  const since = (await db.query<{ at: string }>('SELECT clock_timestamp()::text AS at')).rows[0]!.at;
  try {
    await waitForOlderTransactions(db, since, spec.writers, spec.waitMs ?? 15_000);
  } catch (e) {
    if (!opts.keepOnTimeout) await unfreezeTenant(db, spec.schema, spec.tenantId);
    throw e;
  }
}

/**
 * Waits until no client session of `roles` (every non-superuser session when omitted) on this
 * database has a transaction that began before `since`.
 */
export async function waitForOlderTransactions(
  db: Queryable,
  /** A timestamptz as text (microseconds kept). */
  since: string,
  roles: string[] | undefined,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity a
        WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
          AND a.xact_start < $1::timestamptz
          AND CASE WHEN $2::text[] IS NULL
                   THEN NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = a.usesysid), false)
                   ELSE a.usename = ANY ($2::text[]) END`,
      [since, roles ?? null],
    );
    if ((rows[0]?.n ?? 0) === 0) return;
    if (Date.now() > deadline) {
      throw Object.assign(
        new Error(
          `${rows[0]?.n} writer transaction(s) begun before the freeze are still open after ${timeoutMs} ms; retrying later`,
        ),
        { code: '55P03' },
      );
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Lifts a tenant's freeze in one schema (and any freeze triggers of the older, per-tenant kind). */
export async function unfreezeTenant(db: Queryable, schema: string, tenantId: string): Promise<void> {
  const { rows } = await db.query<{ ok: boolean }>(
    `SELECT to_regclass('tenantry_meta.frozen_tenants') IS NOT NULL AS ok`,
  );
  if (rows[0]?.ok) {
    await db.query('DELETE FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2', [
      tenantId,
      schema,
    ]);
  }
  await dropLegacyTriggers(db, schema, tenantId);
}

/** Lifts every freeze of a private (bridge or silo) schema: the schema holds one tenant. */
export async function unfreezeSchema(db: Queryable, schema: string): Promise<void> {
  const { rows } = await db.query<{ ok: boolean }>(
    `SELECT to_regclass('tenantry_meta.frozen_tenants') IS NOT NULL AS ok`,
  );
  if (rows[0]?.ok)
    await db.query('DELETE FROM tenantry_meta.frozen_tenants WHERE schema_name = $1', [schema]);
}

/** Freeze triggers of the earlier design (one set per tenant, created and dropped at each freeze). */
async function dropLegacyTriggers(db: Queryable, schema: string, tenantId: string): Promise<void> {
  const base = `tenantry_freeze_${tenantId.replaceAll('-', '').slice(0, 32)}`;
  const { rows } = await db.query<{ t: string; g: string }>(
    `SELECT c.relname AS t, g.tgname AS g FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND g.tgname LIKE $2`,
    [schema, `${base}\\_%`],
  );
  for (const r of rows)
    await db.query(`DROP TRIGGER IF EXISTS ${ident(r.g)} ON ${ident(schema)}.${ident(r.t)}`);
}

export async function isTenantFrozen(db: Queryable, schema: string, tenantId: string): Promise<boolean> {
  const { rows } = await db.query<{ frozen: boolean }>(
    `SELECT CASE WHEN to_regclass('tenantry_meta.frozen_tenants') IS NULL THEN false
            ELSE EXISTS (SELECT 1 FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2) END AS frozen`,
    [tenantId, schema],
  );
  return rows[0]?.frozen === true;
}

/**
 * Runs `fn` in one transaction in which this session, and only this session, writes past the
 * tenant's freeze: the freeze row is deleted and re-inserted inside the transaction, so every other
 * session keeps seeing it (MVCC) and nothing else slips through. Works without superuser rights.
 */
export async function withFreezeLifted<T>(
  db: Queryable,
  schema: string,
  tenantId: string,
  fn: () => Promise<T>,
): Promise<T> {
  return inTransaction(db, async () => {
    const { rows } = await db.query<{ reason: string }>(
      'DELETE FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2 RETURNING reason',
      [tenantId, schema],
    );
    const out = await fn();
    if (rows[0]) {
      await db.query(
        'INSERT INTO tenantry_meta.frozen_tenants (tenant_id, schema_name, reason) VALUES ($1, $2, $3)',
        [tenantId, schema, rows[0].reason],
      );
    }
    return out;
  });
}
