import { ensureMeta } from './meta.js';
import { ident, inTransaction, literal, metaLock, type Queryable, relationsOfSchemaSql } from './sql.js';

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
const GUARD_VERSION = 'tenantry frozen-write check v7';

/** `suspended`: a suspended pool tenant's writes (docs/lifecycle.md); the others are a promotion's and an offboarding's. */
export type FreezeReason = 'promotion' | 'promotion-target' | 'offboarded' | 'moved' | 'suspended';

/** The private guard trigger on one table (`table`: already quoted and qualified). */
const privateGuardSql = (table: string) =>
  `CREATE TRIGGER tenantry_freeze_guard BEFORE INSERT OR UPDATE OR DELETE ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION ${GUARD_FN}()`;

/** Whether the frozen-tenants table and the guard function at its current version are in place. */
const READY_SQL = `to_regclass('tenantry_meta.frozen_tenants') IS NOT NULL
          AND obj_description(to_regprocedure('${GUARD_FN}()'), 'pg_proc') = ${literal(GUARD_VERSION)}`;
/** What `requireFreezeSupportSql` fails with: a cast of this text, so it names itself in the error. */
const NOT_READY = 'tenantry freeze support is missing or outdated in database ';

/**
 * A statement that fails (`isFreezeSupportMissing`) unless freeze support is in place at its current
 * version: for a transaction that creates guard triggers, which then needs no round trip of its own
 * to check first (on that failure: `ensureFreezeSupport`, and again). Plain SQL, no PL/pgSQL block to
 * compile per use: the failure is a cast of a text naming it (not folded at plan time, since it
 * reads current_database()), as the migration version guard's is.
 */
export function requireFreezeSupportSql(): string {
  return `SELECT CASE WHEN coalesce(${READY_SQL}, false) THEN 0
    ELSE (${literal(NOT_READY)} || pg_catalog.current_database())::int END AS freeze_support`;
}

export const isFreezeSupportMissing = (e: unknown): boolean => {
  const err = e as { code?: string; message?: string };
  return err.code === '22P02' && (err.message ?? '').includes(NOT_READY);
};

/** Creates the frozen-tenants table and the guard function in the current database (idempotent). */
export async function ensureFreezeSupport(db: Queryable, owner: string): Promise<void> {
  const ready = async () => {
    const { rows } = await db.query<{ ok: boolean }>(`SELECT ${READY_SQL} AS ok`);
    return rows[0]?.ok === true;
  };
  if (await ready()) return;
  await ensureMeta(db);
  await inTransaction(db, async () => {
    await metaLock(db, 'tenantry.freeze-support');
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
      -- A freeze with a deadline ends by itself when it passes, even if nobody lifts it.
      ALTER TABLE tenantry_meta.frozen_tenants ADD COLUMN IF NOT EXISTS frozen_until timestamptz;
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
           WHERE f.schema_name OPERATOR(pg_catalog.=) TG_TABLE_SCHEMA
             AND (f.frozen_until IS NULL OR f.frozen_until OPERATOR(pg_catalog.>) pg_catalog.now())
           LIMIT 1;
        ELSE
          -- Shared tables: the tenants of the rows this statement wrote.
          SELECT f.tenant_id, f.reason INTO t, r
            FROM (SELECT DISTINCT x.tenant_id FROM tenantry_rows x) w
            JOIN tenantry_meta.frozen_tenants f
              ON f.tenant_id OPERATOR(pg_catalog.=) w.tenant_id
             AND f.schema_name OPERATOR(pg_catalog.=) TG_TABLE_SCHEMA
             AND (f.frozen_until IS NULL OR f.frozen_until OPERATOR(pg_catalog.>) pg_catalog.now())
           LIMIT 1;
        END IF;
        IF t IS NULL THEN RETURN NULL; END IF;
        IF r OPERATOR(pg_catalog.=) 'promotion' THEN
          RAISE EXCEPTION 'tenant % is read-only while it moves to another tier; retry after the cutover', t
            USING ERRCODE = '25006', HINT = 'tenantry promotion freeze: re-read the connection descriptor and retry';
        ELSIF r OPERATOR(pg_catalog.=) 'promotion-target' THEN
          RAISE EXCEPTION 'tenant % is read-only while it moves to another tier (this placement takes over at the cutover); retry after the cutover', t
            USING ERRCODE = '25006', HINT = 'tenantry promotion target: not writable before the cutover';
        ELSIF r OPERATOR(pg_catalog.=) 'suspended' THEN
          RAISE EXCEPTION 'tenant % is suspended; its rows are read-only until it is reactivated', t
            USING ERRCODE = '25006', HINT = 'tenantry suspension';
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
    `SELECT c.relname AS t, c.relrowsecurity AS shared FROM ${relationsOfSchemaSql('to_regnamespace($1)')}
      WHERE c.relkind IN ('r', 'p')
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
      await metaLock(db, `tenantry.freeze-triggers.${schema}`);
      const now = (await unguarded(db, schema)).find((x) => x.table === table);
      if (!now) return;
      for (const name of ALL_TRIGGERS) await db.query(`DROP TRIGGER IF EXISTS ${ident(name)} ON ${q}`);
      const ddl = now.shared
        ? [
            `CREATE TRIGGER tenantry_freeze_ins AFTER INSERT ON ${q} REFERENCING NEW TABLE AS tenantry_rows FOR EACH STATEMENT ${fn}`,
            `CREATE TRIGGER tenantry_freeze_upd AFTER UPDATE ON ${q} REFERENCING NEW TABLE AS tenantry_rows FOR EACH STATEMENT ${fn}`,
            `CREATE TRIGGER tenantry_freeze_del AFTER DELETE ON ${q} REFERENCING OLD TABLE AS tenantry_rows FOR EACH STATEMENT ${fn}`,
          ]
        : [privateGuardSql(q)];
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
  FOR t IN SELECT c.relname FROM ${relationsOfSchemaSql(`${literal(schema)}::regnamespace`)}
            WHERE c.relkind IN ('r', 'p')
              AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = ANY (${sqlTextArray(ALL_TRIGGERS)}))
  LOOP
    EXECUTE format('CREATE TRIGGER tenantry_freeze_guard BEFORE INSERT OR UPDATE OR DELETE ON %I.%I FOR EACH STATEMENT EXECUTE FUNCTION ${GUARD_FN}()',
                   ${literal(schema)}, t.relname);
  END LOOP;
END $guard$`;
}

/**
 * The private guard on each of `tables` of a schema just created in the caller's transaction, as
 * plain statements: for a schema built from a template whose tables are known (templateRelations),
 * instead of guardPrivateSchemaSql's catalog search.
 */
export function guardNewTablesSql(schema: string, tables: readonly string[]): string[] {
  return tables.map((t) => privateGuardSql(`${ident(schema)}.${ident(t)}`));
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
  /**
   * A freeze that ends by itself this long after its last renewal, enforced by the guard (so a
   * crashed control plane holds the tenant's writes for at most this long). Without it, the freeze
   * stands until lifted.
   */
  deadlineMs?: number;
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
  const until = untilSql(spec.deadlineMs ?? null);
  await db.query(
    `INSERT INTO tenantry_meta.frozen_tenants (tenant_id, schema_name, reason, frozen_until) VALUES ($1, $2, $3, ${until})
     ON CONFLICT (tenant_id, schema_name) DO UPDATE SET reason = EXCLUDED.reason, frozen_until = EXCLUDED.frozen_until`,
    [spec.tenantId, spec.schema, spec.reason],
  );
  // The insert has committed: transactions that begin after this instant see the freeze.
  const since = (await db.query<{ at: string }>('SELECT clock_timestamp()::text AS at')).rows[0]!.at;
  try {
    await waitForOlderTransactions(
      db,
      since,
      spec.writers,
      spec.waitMs ?? 15_000,
      // A wait longer than the deadline must not let the freeze lapse under it.
      spec.deadlineMs ? () => renewFreeze(db, spec.schema, spec.tenantId, spec.deadlineMs!) : undefined,
      spec.deadlineMs ? Math.max(50, Math.floor(spec.deadlineMs / 3)) : undefined,
    );
  } catch (e) {
    if (!opts.keepOnTimeout) await unfreezeTenant(db, spec.schema, spec.tenantId);
    throw e;
  }
}

/** `now() + ms` as a timestamptz expression, or NULL (no deadline). */
const untilSql = (ms: number | null) =>
  ms === null ? 'NULL::timestamptz' : `clock_timestamp() + make_interval(secs => ${Number(ms) / 1000})`;

/**
 * Moves a standing freeze's deadline to `deadlineMs` from now (null: no deadline, the freeze
 * stands until lifted). Returns false when no freeze is in force: none, or its deadline passed
 * (a lapsed freeze is not revived: writes may have gone through, and the caller must freeze anew,
 * wait for the writers and drain again).
 */
export async function renewFreeze(
  db: Queryable,
  schema: string,
  tenantId: string,
  deadlineMs: number | null,
): Promise<boolean> {
  const { rows } = await db.query(
    `UPDATE tenantry_meta.frozen_tenants SET frozen_until = ${untilSql(deadlineMs)}
      WHERE tenant_id = $1 AND schema_name = $2 AND (frozen_until IS NULL OR frozen_until > clock_timestamp())
      RETURNING 1`,
    [tenantId, schema],
  );
  return rows.length > 0;
}

/**
 * A freeze shown not to hold (as opposed to a probe that could not run: a lost connection, a lock
 * timeout, which stay retryable): `code` FREEZE_DOES_NOT_HOLD.
 */
function freezeDoesNotHold(message: string): Error {
  return Object.assign(new Error(message), { code: 'FREEZE_DOES_NOT_HOLD' });
}

export interface FreezeProbe {
  /** The schema whose freeze is proven. */
  schema: string;
  tenantId: string;
  /** Shared (pool) tables: rows of several tenants, statement-level guards on the rows written. */
  shared: boolean;
  /** A login role that writes the placement: the probe writes as this role when it may. */
  writer?: string;
  /** The shared tables' tenant setting (`app.tenant_id`), set for the probe under row-level security. */
  tenantSetting?: string;
}

/**
 * Proves that a tenant's freeze holds, from inside it: every table of the schema carries the
 * guards of its kind and each of them fires (not disabled, not replica-only), and a write as the
 * tenant is refused with 25006 (private tables: a zero-row update on each, which a statement-level
 * guard refuses; shared tables: a no-op update of one of the tenant's rows per table that has
 * one). Everything runs in a transaction that is rolled back. Throws a description of what does
 * not hold; a superuser's `DISABLE TRIGGER`, a guard made replica-only or a replaced guard
 * function all fail it.
 */
export async function proveFreeze(
  db: Queryable,
  probe: FreezeProbe,
): Promise<{ tables: number; probed: number }> {
  const { rows: tables } = await db.query<{
    t: string;
    col: string;
    guards: string[] | null;
    off: string[] | null;
  }>(
    `SELECT c.relname AS t,
            (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum LIMIT 1) AS col,
            array(SELECT g.tgname::text FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = ANY ($2::text[]) ORDER BY 1) AS guards,
            array(SELECT g.tgname::text FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = ANY ($2::text[])
                     AND g.tgenabled NOT IN ('O', 'A') ORDER BY 1) AS off
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`,
    [probe.schema, probe.shared ? SHARED_TRIGGERS : PRIVATE_TRIGGERS],
  );
  const expected = [...(probe.shared ? SHARED_TRIGGERS : PRIVATE_TRIGGERS)].sort();
  const broken: string[] = [];
  for (const t of tables) {
    const missing = expected.filter((g) => !(t.guards ?? []).includes(g));
    if (missing.length > 0) broken.push(`${t.t}: guard ${missing.join(', ')} missing`);
    if ((t.off ?? []).length > 0) broken.push(`${t.t}: guard ${(t.off ?? []).join(', ')} disabled`);
  }
  if (broken.length > 0)
    throw freezeDoesNotHold(`the write freeze of ${probe.schema} does not hold: ${broken.join('; ')}`);
  let probed = 0;
  const leaks: string[] = [];
  await db.query('BEGIN');
  try {
    // Guards fire in origin mode (a session in replica mode skips them; tenants cannot set it). An
    // admin that may not set it (not a superuser) probes in the mode its session has, if origin.
    await db.query('SAVEPOINT tenantry_probe_mode');
    try {
      await db.query('SET LOCAL session_replication_role = origin');
      await db.query('RELEASE SAVEPOINT tenantry_probe_mode');
    } catch {
      await db.query('ROLLBACK TO SAVEPOINT tenantry_probe_mode');
      const { rows } = await db.query<{ mode: string }>(
        `SELECT current_setting('session_replication_role') AS mode`,
      );
      if (rows[0]?.mode !== 'origin')
        throw new Error('the freeze probe needs a session in origin replication mode');
    }
    if (probe.writer) {
      await db.query('SAVEPOINT tenantry_probe_role');
      try {
        await db.query(`SET LOCAL ROLE ${ident(probe.writer)}`);
        await db.query('RELEASE SAVEPOINT tenantry_probe_role');
      } catch {
        // An admin that may not act as the tenant probes as itself: the guards fire for every role.
        await db.query('ROLLBACK TO SAVEPOINT tenantry_probe_role');
      }
    }
    if (probe.tenantSetting)
      await db.query('SELECT set_config($1, $2, true)', [probe.tenantSetting, probe.tenantId]);
    for (const t of tables) {
      if (!t.col) continue;
      const q = `${ident(probe.schema)}.${ident(t.t)}`;
      const sql = probe.shared
        ? `UPDATE ${q} SET tenant_id = tenant_id WHERE ctid = (SELECT ctid FROM ${q} WHERE tenant_id = ${literal(probe.tenantId)}::uuid LIMIT 1)`
        : `UPDATE ${q} SET ${ident(t.col)} = ${ident(t.col)} WHERE false`;
      await db.query('SAVEPOINT tenantry_probe');
      try {
        const r = await db.query(sql);
        // A shared table without a row of this tenant proves nothing either way (its guards were
        // checked above); any other statement that went through is a leak.
        if (!probe.shared || (r.rowCount ?? 0) > 0) leaks.push(t.t);
      } catch (e) {
        if ((e as { code?: string }).code !== '25006') throw e;
        probed++;
      } finally {
        await db.query('ROLLBACK TO SAVEPOINT tenantry_probe');
      }
    }
  } finally {
    await db.query('ROLLBACK').catch(() => undefined);
  }
  if (leaks.length > 0) {
    throw freezeDoesNotHold(
      `the write freeze of ${probe.schema} does not hold: a write as the tenant went through on ${leaks.join(', ')}`,
    );
  }
  return { tables: tables.length, probed };
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
  /** Run every `renewEveryMs` while waiting (a freeze with a deadline renews it). */
  renew?: () => Promise<unknown>,
  renewEveryMs = 1000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let renewed = Date.now();
  for (;;) {
    if (renew && Date.now() - renewed >= renewEveryMs) {
      await renew();
      renewed = Date.now();
    }
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

/** Whether the database has the freeze bookkeeping (a database Tenantry never froze may not). */
async function hasFreezeTable(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ ok: boolean }>(
    `SELECT to_regclass('tenantry_meta.frozen_tenants') IS NOT NULL AS ok`,
  );
  return rows[0]?.ok === true;
}

/** Lifts a tenant's freeze for one reason only (a suspension's): a freeze for any other reason stays. */
export async function unfreezeTenantFor(
  db: Queryable,
  schema: string,
  tenantId: string,
  reason: FreezeReason,
): Promise<void> {
  if (!(await hasFreezeTable(db))) return;
  await db.query(
    'DELETE FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2 AND reason = $3',
    [tenantId, schema, reason],
  );
}

/** Which of `tenantIds` carry a freeze for `reason` in `schema`. */
export async function frozenFor(
  db: Queryable,
  schema: string,
  reason: FreezeReason,
  tenantIds: readonly string[],
): Promise<string[]> {
  if (tenantIds.length === 0 || !(await hasFreezeTable(db))) return [];
  const { rows } = await db.query<{ id: string }>(
    `SELECT tenant_id::text AS id FROM tenantry_meta.frozen_tenants
      WHERE schema_name = $1 AND reason = $2 AND tenant_id::text = ANY ($3::text[])`,
    [schema, reason, tenantIds],
  );
  return rows.map((r) => r.id);
}

/** Lifts a tenant's freeze in one schema (and any per-tenant guard triggers it still carries). */
export async function unfreezeTenant(db: Queryable, schema: string, tenantId: string): Promise<void> {
  if (await hasFreezeTable(db)) {
    await db.query('DELETE FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2', [
      tenantId,
      schema,
    ]);
  }
  await dropLegacyTriggers(db, schema, tenantId);
}

/** Lifts every freeze of a private (bridge or silo) schema: the schema holds one tenant. */
export async function unfreezeSchema(db: Queryable, schema: string): Promise<void> {
  if (await hasFreezeTable(db))
    await db.query('DELETE FROM tenantry_meta.frozen_tenants WHERE schema_name = $1', [schema]);
}

/**
 * Per-tenant guard triggers (`tenantry_freeze_<tenant>_*`): a tenant frozen before the shared guards
 * existed still carries them, and they must go with its freeze.
 */
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
            ELSE EXISTS (SELECT 1 FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2
                           AND (frozen_until IS NULL OR frozen_until > clock_timestamp())) END AS frozen`,
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
    const { rows } = await db.query<{ reason: string; until: string | null }>(
      'DELETE FROM tenantry_meta.frozen_tenants WHERE tenant_id = $1 AND schema_name = $2 RETURNING reason, frozen_until::text AS until',
      [tenantId, schema],
    );
    const out = await fn();
    if (rows[0]) {
      await db.query(
        'INSERT INTO tenantry_meta.frozen_tenants (tenant_id, schema_name, reason, frozen_until) VALUES ($1, $2, $3, $4::timestamptz)',
        [tenantId, schema, rows[0].reason, rows[0].until],
      );
    }
    return out;
  });
}
