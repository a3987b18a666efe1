import pg from 'pg';
import { TenantryError } from '../domain/errors.js';
import { tenantKeyAlias, tenantObjectName, tenantSecretName } from '../domain/naming.js';
import type {
  KeyStore,
  PromotionParams,
  SecretStore,
  StepContext,
  StepOutputs,
  StepTenant,
} from '../domain/ports.js';
import type { TierCatalog } from '../domain/tiers.js';
import type { DataPlane } from '../engine/dataplane.js';
import {
  applyGrants,
  applyRole,
  databaseProvider,
  grantsProvider,
  ident,
  inTransaction,
  poolMembershipProvider,
  type Queryable,
  roleProvider,
  schemaProvider,
  type TenantTemplate,
} from '../providers/postgres/index.js';
import {
  applyDeferred,
  applyPending,
  assertSameDigests,
  copyTable,
  counts,
  createSlotAndCopy,
  type DeferredDdl,
  digest,
  dropReplication,
  dropSecondary,
  ensureReplication,
  freeze,
  listSecondary,
  type Placement,
  placementOf,
  replicationNames,
  slotLagBytes,
  syncSequences,
  tablesOf,
  touchedDigests,
  unfreeze,
  vacuumTables,
} from './promoter.js';

export const PROMOTE_STEPS = [
  'provision',
  'replication',
  'copy',
  'indexes',
  'catch-up',
  'freeze',
  'drain',
  'verify',
  'cutover',
];
export const ROLLBACK_STEPS = ['freeze-target', 'restore', 'verify-restore', 'cutover-back', 'drop-target'];
export const ABORT_STEPS = ['abort'];

export interface PromotionOptions {
  /** Abort the promotion if the slot holds more WAL than this (it holds it for every tenant). */
  maxLagBytes: number;
  /** Catch-up ends when a pass applies no more than this many changes; the freeze drains the rest. */
  freezeBelowChanges: number;
  /** Longest the catch-up keeps chasing writers before freezing anyway. */
  maxCatchUpMs: number;
  /** How long the source stays read-only, for rollback, before it is deleted. */
  rollbackWindowMs: number;
  generatePassword: () => string;
}

/**
 * Moves a tenant's rows between placements on the local target (pool → bridge, pool → silo,
 * bridge → silo) while it keeps writing: copy, stream the changes through a row-filtered logical
 * slot, freeze this tenant's writes in the database, drain, verify, cut over. The source stays
 * frozen and intact for the rollback window. Every step is idempotent and resumable.
 */
export class LocalPromotion {
  constructor(
    private readonly dp: DataPlane,
    private readonly keys: KeyStore & SecretStore,
    private readonly catalog: TierCatalog,
    private readonly template: TenantTemplate,
    private readonly opts: PromotionOptions,
  ) {}

  /** Runs `fn` on a session of the database holding a placement. */
  private on<T>(p: Placement, fn: (db: Queryable) => Promise<T>): Promise<T> {
    return p.database === this.dp.names.database
      ? this.dp.withData(fn)
      : this.dp.withDatabase(p.database, fn);
  }

  /** A dedicated client (COPY streams need one). */
  private async client(p: Placement): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: this.dp.urlFor(p.database) });
    c.on('error', () => {});
    await c.connect();
    return c;
  }

  private placements(t: StepTenant, params: PromotionParams) {
    return {
      from: placementOf(this.dp, t.slug, params.fromTier),
      to: placementOf(this.dp, t.slug, params.toTier),
    };
  }

  private stagingSecret = (slug: string) => `tenantry/${slug}/promotion`;

  async runStep(ctx: StepContext): Promise<StepOutputs | undefined> {
    const params = ctx.params as unknown as PromotionParams;
    const t = ctx.tenant;
    const { from, to } = this.placements(t, params);
    const names = replicationNames(params.rollbackOf ?? ctx.operationId);
    const report = ctx.report ?? (async () => {});
    const progress = ctx.progress ?? {};
    switch (ctx.step) {
      case 'provision':
        return this.provision(t, params, from, to, progress, report);
      case 'replication':
        await this.dp.withData((db) => ensureReplication(db, from, t.id, names));
        return undefined;
      case 'copy': {
        const rowsCopied: Record<string, number> = {};
        const src = await this.client(from);
        const dst = await this.client(to);
        try {
          const timing = await createSlotAndCopy(
            this.dp.urlFor(from.database),
            src,
            dst,
            from,
            to,
            t.id,
            names,
            async (table, n) => {
              rowsCopied[table] = n;
              await report({ rowsCopied: { ...rowsCopied } });
            },
          );
          await report(timing);
        } finally {
          await Promise.all([src.end(), dst.end()]);
        }
        return undefined;
      }
      case 'indexes': {
        const deferred = progress.deferredDdl as DeferredDdl | undefined;
        await this.on(to, async (db) => {
          if (deferred) await applyDeferred(db, deferred.create);
          await vacuumTables(db, to.schema);
        });
        return undefined;
      }
      case 'catch-up': {
        // Stream until little is left, so the freeze only has a little to drain.
        const src = await this.client(from);
        const dst = await this.client(to);
        const deadline = Date.now() + this.opts.maxCatchUpMs;
        try {
          for (;;) {
            const lag = await slotLagBytes(src, names.slot);
            await report({ replicationLagBytes: lag });
            if (lag !== null && lag > this.opts.maxLagBytes) {
              throw new TenantryError(
                'PROVIDER_FAILED',
                `replication lag ${lag} bytes exceeds the ${this.opts.maxLagBytes}-byte limit; aborting so the shared database's WAL is not held`,
              );
            }
            const applied = await applyPending(src, dst, to, names);
            // Converged, or out of patience: the freeze then drains what is left.
            if (applied.changes <= this.opts.freezeBelowChanges || Date.now() > deadline) break;
            if (ctx.signal.aborted) throw new Error('aborted');
          }
        } finally {
          await Promise.all([src.end(), dst.end()]);
        }
        return undefined;
      }
      case 'freeze': {
        if (!progress.freezeStartedAt) await report({ freezeStartedAt: new Date().toISOString() });
        await this.on(from, (db) => freeze(db, from, t.id));
        return undefined;
      }
      case 'drain': {
        await this.dp.withData((src) =>
          this.on(to, async (dst) => {
            await applyPending(src, dst, to, names);
            await syncSequences(src, dst, from, to);
          }),
        );
        await report({ replicationLagBytes: await this.dp.withData((db) => slotLagBytes(db, names.slot)) });
        return undefined;
      }
      case 'verify': {
        // Only the rows changed since the bulk-verified copy: the freeze does not grow with size.
        const tables = await this.on(from, (db) => tablesOf(db, from.schema));
        const d = await this.on(from, (src) =>
          this.on(to, (dst) => touchedDigests(src, dst, from, to, tables, names.slot)),
        );
        const [ca, cb] = await Promise.all([
          this.on(from, (db) => counts(db, from, t.id, tables)),
          this.on(to, (db) => counts(db, to, t.id, tables)),
        ]);
        await report({ verification: { changedKeys: d.keys, rows: { source: ca, target: cb }, changed: d } });
        for (const table of tables) {
          if (ca[table] !== cb[table]) {
            throw new TenantryError(
              'PROVIDER_FAILED',
              `verification failed on table ${table}: source has ${ca[table]} rows, target ${cb[table]}`,
            );
          }
        }
        assertSameDigests(d.source, d.target, 'rows changed since the copy');
        return undefined;
      }
      case 'verify-restore': {
        const tables = await this.on(from, (db) => tablesOf(db, from.schema));
        const [a, b] = await Promise.all([
          this.on(from, (db) => digest(db, from, t.id, tables)),
          this.on(to, (db) => digest(db, to, t.id, tables)),
        ]);
        await report({ verification: { source: a, target: b } });
        for (const table of tables) {
          if (a[table]?.rows !== b[table]?.rows || a[table]?.sum !== b[table]?.sum) {
            throw new TenantryError(
              'PROVIDER_FAILED',
              `verification failed on table ${table}: source ${a[table]?.rows} rows / ${a[table]?.sum}, target ${b[table]?.rows} rows / ${b[table]?.sum}`,
            );
          }
        }
        return undefined;
      }
      case 'cutover':
        return this.cutover(t, params, from, to, names, progress, report);
      case 'abort':
        await this.abort(t, params, from, to, names);
        return undefined;
      case 'abort-rollback': {
        // A rollback that failed before cutting back: the tenant stays where it is, writable again.
        const current = await this.keys.getSecret(tenantSecretName(t.slug));
        if (current?.value.database === from.database && current?.value.schema === from.schema) {
          await this.on(from, (db) => unfreeze(db, from, t.id));
        }
        return undefined;
      }
      /* ---- rollback: `from` is the tier being left (the promotion's target), `to` the original source */
      case 'freeze-target': {
        if (!progress.freezeStartedAt) await report({ freezeStartedAt: new Date().toISOString() });
        await this.on(from, (db) => freeze(db, from, t.id));
        return undefined;
      }
      case 'restore':
        await this.restore(t, from, to, report);
        return undefined;
      case 'cutover-back':
        return this.cutoverBack(t, params, from, to, progress, report);
      case 'drop-target':
        await this.dropPlacement(t, from, params.toTier === 'pool');
        return undefined;
      default:
        throw new TenantryError('PROVIDER_FAILED', `unknown promotion step ${ctx.step}`);
    }
  }

  private async provision(
    t: StepTenant,
    params: PromotionParams,
    _from: Placement,
    to: Placement,
    progress: Record<string, unknown>,
    report: (p: Record<string, unknown>) => Promise<void>,
  ): Promise<StepOutputs | undefined> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const limits = this.catalog.tiers[params.toTier].role;
    // The target's credentials: the bridge role carries over to silo; a pool tenant gets a role of its own.
    const staging = await this.keys.getSecret(this.stagingSecret(t.slug));
    let password = staging?.value.password as string | undefined;
    if (!password) {
      const current = await this.keys.getSecret(tenantSecretName(t.slug));
      password =
        params.fromTier === 'pool' ? this.opts.generatePassword() : (current?.value.password as string);
      await this.keys.putSecret(this.stagingSecret(t.slug), tenantKeyAlias(t.slug), { password });
    }
    const searchPath = [to.schema];
    await this.dp.withMaintenance((db) =>
      applyRole(db, { name, ...limits, searchPath, ...(params.fromTier === 'pool' ? { password } : {}) }),
    );
    if (to.tier === 'silo') {
      await this.dp.withMaintenance((db) =>
        databaseProvider.create(db, { name, owner: n.ownerRole, template: n.siloTemplate }),
      );
    }
    await this.on(to, async (db) => {
      await schemaProvider.create(db, { name: to.schema, owner: n.ownerRole, template: this.template });
      let deferred = progress.deferredDdl as DeferredDdl | undefined;
      if (!deferred) {
        deferred = await listSecondary(db, to.schema);
        await report({ deferredDdl: deferred }); // persisted before anything is dropped
      }
      await dropSecondary(db, deferred);
    });
    return undefined;
  }

  private async cutover(
    t: StepTenant,
    params: PromotionParams,
    _from: Placement,
    to: Placement,
    names: { slot: string; publication: string },
    progress: Record<string, unknown>,
    report: (p: Record<string, unknown>) => Promise<void>,
  ): Promise<StepOutputs> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const password = (await this.keys.getSecret(this.stagingSecret(t.slug)))?.value.password;
    if (typeof password !== 'string')
      throw new TenantryError('SECRET_UNAVAILABLE', 'staged credentials are missing');
    // Lift the freeze on the target: the tenant's role gets its DML there, and the descriptor moves.
    await this.on(to, (db) =>
      applyGrants(db, { database: to.database, schema: to.schema, role: name, owner: n.ownerRole }),
    );
    const current = await this.keys.getSecret(tenantSecretName(t.slug));
    if (current?.value.database !== to.database || current?.value.schema !== to.schema) {
      await this.keys.putSecret(tenantSecretName(t.slug), tenantKeyAlias(t.slug), {
        tenantId: t.id,
        tier: params.toTier,
        host: this.dp.host,
        port: this.dp.port,
        database: to.database,
        schema: to.schema,
        user: name,
        password,
      });
    }
    const started = Date.parse(String(progress.freezeStartedAt ?? ''));
    const now = Date.now();
    await report({
      writeFreezeMs: Number.isNaN(started) ? null : now - started,
      cutoverAt: new Date(now).toISOString(),
      rollbackUntil: new Date(now + this.opts.rollbackWindowMs).toISOString(),
    });
    // The slot holds WAL for every tenant of the shared database: release it at once.
    await this.dp.withData((db) => dropReplication(db, names));
    await this.keys.deleteSecret(this.stagingSecret(t.slug));
    return { tier: params.toTier, database: to.database, schema: to.schema, user: name };
  }

  /** Undoes a promotion that failed before its cutover: the tenant stays on its source, untouched. */
  private async abort(
    t: StepTenant,
    params: PromotionParams,
    from: Placement,
    to: Placement,
    names: { slot: string; publication: string },
  ): Promise<void> {
    const current = await this.keys.getSecret(tenantSecretName(t.slug));
    if (current && (current.value.database !== from.database || current.value.schema !== from.schema)) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        'the descriptor already points at the target; roll back instead of aborting',
      );
    }
    await this.on(from, (db) => unfreeze(db, from, t.id));
    await this.dp.withData((db) => dropReplication(db, names));
    await this.dropPlacement(t, to, params.fromTier === 'pool');
    await this.keys.deleteSecret(this.stagingSecret(t.slug));
  }

  /** Removes a placement's objects; its role too when the role belongs to it alone. */
  private async dropPlacement(t: StepTenant, p: Placement, dropRole: boolean): Promise<void> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const limits = this.catalog.tiers.bridge.role;
    if (p.tier === 'silo') {
      await this.dp.withMaintenance((db) => databaseProvider.delete(db, { name, owner: n.ownerRole }));
    } else if (p.tier === 'bridge') {
      await this.dp.withData(async (db) => {
        await grantsProvider.delete(db, {
          database: n.database,
          schema: p.schema,
          role: name,
          owner: n.ownerRole,
        });
        await schemaProvider.delete(db, { name: p.schema, owner: n.ownerRole, template: this.template });
      });
    } else {
      await this.deletePoolRows(t);
    }
    if (dropRole) {
      await this.dp.withData((data) =>
        this.dp.withMaintenance((db) => roleProvider.delete(db, { name, ...limits, cleanupIn: [data] })),
      );
    }
  }

  /** Deletes the tenant's pool rows in batches, past its own freeze triggers (replica mode skips them). */
  private async deletePoolRows(t: StepTenant): Promise<void> {
    const n = this.dp.names;
    const c = await this.client(placementOf(this.dp, t.slug, 'pool'));
    try {
      await c.query(`SET session_replication_role = replica`);
      await poolMembershipProvider.delete(c, {
        schema: n.poolSchema,
        tenantId: t.id,
        slug: t.slug,
        setting: n.tenantSetting,
      });
      await unfreeze(c, placementOf(this.dp, t.slug, 'pool'), t.id);
    } finally {
      await c.end();
    }
  }

  /** Rollback: the original placement gets the current rows back (including those written after cutover). */
  private async restore(
    t: StepTenant,
    current: Placement,
    original: Placement,
    report: (p: Record<string, unknown>) => Promise<void>,
  ): Promise<void> {
    const src = await this.client(current);
    const dst = await this.client(original);
    try {
      // Our own writes must pass the original placement's freeze triggers and its foreign keys.
      await dst.query(`SET session_replication_role = replica`);
      const tables = await tablesOf(src, current.schema);
      const rowsCopied: Record<string, number> = {};
      await inTransaction(dst, async () => {
        for (const table of tables) {
          await dst.query(`DELETE FROM ${ident(original.schema)}.${ident(table)} WHERE tenant_id = $1`, [
            t.id,
          ]);
        }
        for (const table of tables) {
          rowsCopied[table] = await copyTable(src, dst, current, original, table, t.id, { truncate: false });
        }
      });
      await report({ rowsRestored: rowsCopied });
    } finally {
      await Promise.all([src.end(), dst.end()]);
    }
  }

  private async cutoverBack(
    t: StepTenant,
    params: PromotionParams,
    _current: Placement,
    original: Placement,
    progress: Record<string, unknown>,
    report: (p: Record<string, unknown>) => Promise<void>,
  ): Promise<StepOutputs> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const secret = await this.keys.getSecret(tenantSecretName(t.slug));
    const descriptor =
      original.tier === 'pool'
        ? {
            user: n.poolRole,
            password: (await this.keys.getSecret('tenantry/platform/pool-role'))?.value.password,
            tenantSetting: n.tenantSetting,
          }
        : { user: name, password: secret?.value.password };
    if (secret?.value.database !== original.database || secret?.value.schema !== original.schema) {
      await this.keys.putSecret(tenantSecretName(t.slug), tenantKeyAlias(t.slug), {
        tenantId: t.id,
        tier: params.toTier,
        host: this.dp.host,
        port: this.dp.port,
        database: original.database,
        schema: original.schema,
        ...descriptor,
      });
    }
    if (original.tier === 'bridge') {
      await this.dp.withData((db) =>
        applyGrants(db, { database: n.database, schema: original.schema, role: name, owner: n.ownerRole }),
      );
    }
    await this.on(original, (db) => unfreeze(db, original, t.id));
    const started = Date.parse(String(progress.freezeStartedAt ?? ''));
    await report({ writeFreezeMs: Number.isNaN(started) ? null : Date.now() - started });
    return {
      tier: params.toTier,
      database: original.database,
      schema: original.schema,
      user: String(descriptor.user),
    };
  }

  async cleanup(t: StepTenant, params: PromotionParams, operationId: string): Promise<void> {
    const { from } = this.placements(t, params);
    await this.dp.withData((db) => dropReplication(db, replicationNames(operationId)));
    await this.dropPlacement(t, from, false);
  }

  async sweepOrphans(liveOperationIds: string[]): Promise<string[]> {
    const live = new Set(liveOperationIds.map((id) => replicationNames(id).slot));
    return this.dp.withData(async (db) => {
      const { rows } = await db.query<{ name: string }>(
        `SELECT slot_name AS name FROM pg_replication_slots WHERE slot_name LIKE 'tenantry_promo_%' AND NOT active
         UNION SELECT pubname FROM pg_publication WHERE pubname LIKE 'tenantry_promo_%'`,
      );
      const dead = [...new Set(rows.map((r) => r.name))].filter((name) => !live.has(name));
      for (const name of dead) await dropReplication(db, { slot: name, publication: name });
      return dead;
    });
  }
}
