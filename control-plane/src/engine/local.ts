import fs from 'node:fs';
import type { DataPlane } from '../dataplane/dataplane.js';
import { TenantryError } from '../domain/errors.js';
import { POOL_SECRET, tenantKeyAlias, tenantObjectName, tenantSecretName } from '../domain/naming.js';
import type {
  ConnectionDescriptor,
  Engine,
  KeyStore,
  PromotionParams,
  SecretStore,
  StepContext,
  StepOutputs,
  StepTenant,
} from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import {
  isLocalProvisionStep,
  type LocalOffboardStep,
  type LocalOnboardStep,
  type LocalPromotionStep,
  type LocalRoutingStep,
} from '../domain/steps.js';
import type { Tier, TierCatalog } from '../domain/tiers.js';
import { generatePassword } from '../lib/passwords.js';
import {
  ABORT_ROLLBACK_STEPS,
  ABORT_STEPS,
  type FaultHook,
  LocalPromotion,
  PROMOTE_STEPS,
  type PromotionOptions,
  ROLLBACK_STEPS,
} from '../promotion/local.js';
import { placementOf } from '../promotion/placement.js';
import {
  applyGrants,
  applyRole,
  applySchema,
  databaseProvider,
  endRoleSessions,
  ensureFreezeSupport,
  ensureFreezeTriggers,
  grantsProvider,
  guardPrivateSchemaSql,
  hardenDatabase,
  ident,
  lockDownDatabases,
  poolMembershipProvider,
  poolProvider,
  roleProvider,
  schemaProvider,
  type TenantTemplate,
} from '../providers/postgres/index.js';

export const PLATFORM_KEY_ALIAS = 'alias/tenantry/platform';
export { POOL_SECRET };

const ONBOARD: Record<Exclude<Tier, 'account'>, readonly LocalOnboardStep[]> = {
  pool: ['key', 'credentials', 'pool-membership'],
  bridge: ['key', 'credentials', 'role', 'schema', 'grants'],
  silo: ['key', 'credentials', 'role', 'database', 'schema', 'grants'],
};
const OFFBOARD: Record<Exclude<Tier, 'account'>, readonly LocalOffboardStep[]> = {
  pool: ['pool-membership', 'credentials', 'key'],
  bridge: ['schema', 'role', 'credentials', 'key'],
  silo: ['database', 'role', 'credentials', 'key'],
};

export { generatePassword };

/**
 * The embedded default: real Postgres-level isolation on the data-plane cluster, keys and
 * secrets in the local envelope-encrypted store, no cloud. The account tier is refused.
 */
export class LocalEngine implements Engine {
  readonly target = 'local' as const;
  readonly rollsBackFailedOnboarding = true;
  readonly promotionMovesRows = true;
  readonly promotionRollback = true;
  /** The pool role's password, read once at bootstrap: every pool descriptor carries it. */
  private poolPassword: string | undefined;

  constructor(
    private readonly dp: DataPlane,
    private readonly keys: KeyStore & SecretStore,
    private readonly catalog: TierCatalog,
    private readonly template: TenantTemplate,
    private readonly opts: {
      faultStepDelayMs?: number;
      /**
       * Crash tests only: a file naming one fault point (a promotion's named point, or
       * `step:<name>` for a provisioning step). An operation that reaches the point it names reports
       * it and waits there until the process is killed, so the test's kill lands exactly there.
       */
      faultHoldFile?: string;
      protectDatabases?: string[];
      promotion?: Partial<PromotionOptions>;
    } = {},
  ) {
    const delay = opts.faultStepDelayMs ?? 0;
    // Crash tests: the first time an operation reaches a named point inside a step (in this
    // process), say where it is, then linger there. Only the first time: a point inside a loop
    // (each catch-up pass) would otherwise slow the loop until writers outran it.
    const paused = new Set<string>();
    const hold = this.faultHold();
    const pause: FaultHook | undefined =
      delay > 0 || hold
        ? async (point, ctx) => {
            await hold?.(point, ctx.report);
            if (delay === 0) return;
            const key = `${ctx.operationId}:${point}`;
            if (paused.has(key)) return;
            paused.add(key);
            await ctx.report({ faultPoint: point }).catch(() => undefined);
            await new Promise((r) => setTimeout(r, delay));
          }
        : undefined;
    this.promotion = new LocalPromotion(dp, keys, catalog, template, {
      maxLagBytes: 1024 ** 3,
      freezeBelowChanges: 50,
      maxCatchUpMs: 60_000,
      rollbackWindowMs: 24 * 3600_000,
      freezeDeadlineMs: 5000,
      generatePassword,
      ...(pause ? { fault: pause } : {}),
      ...opts.promotion,
    });
  }

  private readonly promotion: LocalPromotion;

  /**
   * The crash tests' hold (see `faultHoldFile`): an operation at the point the file names reports
   * it and waits while the file still names it (the test kills the process there, or moves the
   * hold on). Undefined unless configured.
   */
  private faultHold():
    | ((point: string, report?: (patch: Record<string, unknown>) => Promise<void>) => Promise<void>)
    | undefined {
    const file = this.opts.faultHoldFile;
    if (!file) return undefined;
    const named = () => {
      try {
        return fs.readFileSync(file, 'utf8').trim();
      } catch {
        return ''; // no file: nothing held
      }
    };
    return async (point, report) => {
      if (named() !== point) return;
      await report?.({ faultPoint: point }).catch(() => undefined);
      while (named() === point) await new Promise((r) => setTimeout(r, 20));
    };
  }

  /** Fault injection for in-process tests: a hook run at named points inside promotion steps. */
  setFaultHook(hook: FaultHook | undefined): void {
    this.promotion.setFaultHook(hook);
  }

  promotionSteps(params: PromotionParams): LocalPromotionStep[] {
    return [...(params.rollbackOf ? ROLLBACK_STEPS : PROMOTE_STEPS)];
  }

  promotionAbortSteps(params: PromotionParams): LocalRoutingStep[] {
    return [...(params.rollbackOf ? ABORT_ROLLBACK_STEPS : ABORT_STEPS)];
  }

  cleanupPromotion(
    tenant: StepTenant,
    params: PromotionParams,
    operationId: string,
    report?: (patch: Record<string, unknown>) => Promise<void>,
  ): Promise<void> {
    return this.promotion.cleanup(tenant, params, operationId, report);
  }

  sweepPromotionOrphans(liveOperationIds: string[], idleOperationIds: string[] = []): Promise<string[]> {
    return this.promotion.sweepOrphans(liveOperationIds, idleOperationIds);
  }

  supportsTier(tier: Tier): boolean {
    return tier !== 'account';
  }

  steps(kind: 'onboard' | 'offboard', tier: Tier): (LocalOnboardStep | LocalOffboardStep)[] {
    if (tier === 'account') throw this.accountRefused();
    return [...(kind === 'onboard' ? ONBOARD : OFFBOARD)[tier]];
  }

  private accountRefused(): TenantryError {
    return new TenantryError(
      'TIER_NOT_AVAILABLE_ON_TARGET',
      'the account tier needs AWS Organizations; it is not available on the local target (set TENANTRY_TARGET=aws)',
    );
  }

  /** Creates the shared data database, owner and pool roles, the pool tables with RLS, and locks down CONNECT. */
  async bootstrap(): Promise<void> {
    const n = this.dp.names;
    await this.dp.withMaintenance(async (db) => {
      const { rows } = await db.query<{ su: boolean }>(
        'SELECT rolsuper AS su FROM pg_roles WHERE rolname = current_user',
      );
      await db.query(
        `DO $$ BEGIN CREATE ROLE ${ident(n.ownerRole)} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
      );
      if (!rows[0]?.su)
        await db.query(`GRANT ${ident(n.ownerRole)} TO CURRENT_USER WITH INHERIT TRUE, SET TRUE`);
      const exists = await db.query('SELECT 1 FROM pg_database WHERE datname = $1', [n.database]);
      if (exists.rows.length === 0) {
        await db.query(`CREATE DATABASE ${ident(n.database)}`).catch((e: { code?: string }) => {
          if (e.code !== '42P04') throw e;
        });
      }
      await lockDownDatabases(db, [
        n.database,
        'postgres',
        'template1',
        ...(this.opts.protectDatabases ?? []),
      ]);
    });
    await this.keys.ensureKey(null, PLATFORM_KEY_ALIAS);
    let poolSecret = await this.keys.getSecret(POOL_SECRET);
    if (!poolSecret) {
      await this.keys.putSecret(POOL_SECRET, PLATFORM_KEY_ALIAS, { password: generatePassword() });
      poolSecret = await this.keys.getSecret(POOL_SECRET);
    }
    const poolPassword = String(poolSecret?.value.password);
    this.poolPassword = poolPassword;
    await this.dp.withMaintenance(async (db) => {
      const existing = await roleProvider.observe(db, { name: n.poolRole, ...this.catalog.tiers.pool.role });
      await roleProvider.create(db, {
        name: n.poolRole,
        ...this.catalog.tiers.pool.role,
        searchPath: [n.poolSchema],
        // Only (re)set the password when the role is new: every pool descriptor holds it.
        ...(existing ? {} : { password: poolPassword }),
      });
    });
    await this.dp.withData((db) =>
      poolProvider.create(db, {
        schema: n.poolSchema,
        owner: n.ownerRole,
        appRole: n.poolRole,
        database: n.database,
        setting: n.tenantSetting,
        template: this.template,
      }),
    );
    // What a tenant could see or signal of the others through PUBLIC (docs: README, "What each tier isolates").
    await this.dp.withData((db) => hardenDatabase(db, { shared: true }));
    await this.ensureSiloTemplate();
  }

  /** A template database with the tenant schema applied, so a silo is a fast clone. */
  private async ensureSiloTemplate(): Promise<void> {
    const n = this.dp.names;
    await this.dp.withMaintenance((db) =>
      databaseProvider.create(db, { name: n.siloTemplate, owner: n.ownerRole }),
    );
    await this.dp.withDatabase(n.siloTemplate, async (db) => {
      await schemaProvider.create(db, { name: n.siloSchema, owner: n.ownerRole, template: this.template });
      // Every silo cloned from it can be frozen (promotion target, rollback) without DDL.
      await ensureFreezeTriggers(db, n.siloSchema, { owner: n.ownerRole });
      await hardenDatabase(db, { shared: false });
    });
  }

  async runStep(ctx: StepContext): Promise<StepOutputs | undefined> {
    const { tenant } = ctx;
    // Promotion steps pause at named points inside them instead (see the fault hook).
    if (ctx.kind === 'promote') return this.promotion.runStep(ctx);
    if (this.opts.faultStepDelayMs) await new Promise((r) => setTimeout(r, this.opts.faultStepDelayMs));
    await this.faultHold()?.(`step:${ctx.step}`, ctx.report);
    if (tenant.tier === 'account') throw this.accountRefused();
    const up = ctx.kind === 'onboard';
    const n = this.dp.names;
    const name = tenantObjectName(tenant.slug);
    const alias = tenantKeyAlias(tenant.slug);
    const limits = this.catalog.tiers[tenant.tier].role;
    const step = ctx.step;
    if (!isLocalProvisionStep(step)) throw new TenantryError('PROVIDER_FAILED', `unknown step ${step}`);
    switch (step) {
      case 'key': {
        if (!up) {
          await this.keys.shredKey(alias);
          return { keyId: null };
        }
        const { keyId } = await this.keys.ensureKey(tenant.id, alias);
        return { keyId, keyAlias: alias };
      }
      case 'credentials': {
        const secretName = tenantSecretName(tenant.slug);
        if (!up) {
          await this.keys.deleteSecret(secretName);
          return { secretRef: null };
        }
        const existing = await this.keys.getSecret(secretName);
        if (existing) return { secretRef: existing.ref, secretVersion: existing.version };
        const descriptor = await this.descriptorFor(tenant);
        const { ref, version } = await this.keys.putSecret(secretName, alias, { ...descriptor }, 1);
        return { secretRef: ref, secretVersion: version };
      }
      case 'role': {
        if (!up) {
          // A bridge role holds privileges in the shared database; a silo's went with its database,
          // but a silo promoted from bridge may still hold some there: clean both.
          await this.dp.withData((data) =>
            this.dp.withMaintenance((db) => roleProvider.delete(db, { name, ...limits, cleanupIn: [data] })),
          );
          return { user: null };
        }
        const secret = await this.keys.getSecret(tenantSecretName(tenant.slug));
        const password = secret?.value.password;
        if (typeof password !== 'string')
          throw new TenantryError('SECRET_UNAVAILABLE', 'tenant credentials are missing');
        const searchPath = [placementOf(this.dp, tenant.slug, tenant.tier).schema];
        // applyRole states NOSUPERUSER NOBYPASSRLS explicitly; drift runs observe it in batch.
        await this.dp.withMaintenance((db) => applyRole(db, { name, ...limits, searchPath, password }));
        return { user: name };
      }
      case 'database': {
        if (!up) {
          await this.dp.withMaintenance((db) => databaseProvider.delete(db, { name, owner: n.ownerRole }));
          return { database: null };
        }
        await this.dp.withMaintenance((db) =>
          databaseProvider.create(db, { name, owner: n.ownerRole, template: n.siloTemplate }),
        );
        return { database: name };
      }
      case 'schema': {
        const { schema } = placementOf(this.dp, tenant.slug, tenant.tier);
        const spec = { name: schema, owner: n.ownerRole, template: this.template };
        if (tenant.tier === 'bridge') {
          if (!up) {
            // The tenant's own sessions end first: a transaction it left open would otherwise
            // hold a lock that the DROP waits on.
            await this.dp.withMaintenance((db) => endRoleSessions(db, name));
            await this.dp.withData((db) => schemaProvider.delete(db, spec));
          } else
            await this.dp.withData(async (db) => {
              // Freezable later (a promotion) without DDL on tables the tenant is writing: the guards
              // go on in the transaction that creates the tables (nobody writes here yet).
              await ensureFreezeSupport(db, n.ownerRole);
              await applySchema(db, spec, { andThen: [guardPrivateSchemaSql(schema)] });
            });
        } else if (up) {
          await this.dp.withDatabase(name, async (db) => {
            await schemaProvider.create(db, spec);
            // Cloned from the hardened template: one catalog read (a silo older than that is hardened here).
            await hardenDatabase(db, { shared: false });
          });
        } // a silo's schema goes with its database
        return { schema: up ? schema : null };
      }
      case 'grants': {
        const { database, schema } = placementOf(this.dp, tenant.slug, tenant.tier);
        const spec = { database, schema, role: name, owner: n.ownerRole };
        const apply = async (db: Queryable) => {
          if (up) await applyGrants(db, spec);
          else await grantsProvider.delete(db, spec);
        };
        await (database === n.database ? this.dp.withData(apply) : this.dp.withDatabase(database, apply));
        return undefined;
      }
      case 'pool-membership': {
        const spec = {
          schema: n.poolSchema,
          tenantId: tenant.id,
          slug: tenant.slug,
          setting: n.tenantSetting,
          // Removal freezes the tenant first, waiting for the shared role's older transactions.
          writers: [n.poolRole],
        };
        await this.dp.withData(async (db) => {
          if (up) await poolMembershipProvider.create(db, spec);
          else await poolMembershipProvider.delete(db, spec);
        });
        return { schema: up ? n.poolSchema : null };
      }
      default: {
        const unknown: never = step; // every provisioning step has its case
        throw new TenantryError('PROVIDER_FAILED', `unknown step ${unknown}`);
      }
    }
  }

  /** What the data plane needs to connect, including the password (local target only). */
  private async descriptorFor(tenant: StepTenant): Promise<ConnectionDescriptor> {
    const n = this.dp.names;
    const name = tenantObjectName(tenant.slug);
    const secretRef = `local-secret://${tenantSecretName(tenant.slug)}`;
    const base = {
      tenantId: tenant.id,
      tier: tenant.tier,
      host: this.dp.host,
      port: this.dp.port,
      secretRef,
    };
    switch (tenant.tier) {
      case 'pool': {
        const password = this.poolPassword ?? (await this.keys.getSecret(POOL_SECRET))?.value.password;
        if (typeof password !== 'string')
          throw new TenantryError('SECRET_UNAVAILABLE', 'pool credentials are missing');
        return {
          ...base,
          database: n.database,
          schema: n.poolSchema,
          user: n.poolRole,
          password,
          tenantSetting: n.tenantSetting,
        };
      }
      case 'bridge':
      case 'silo': {
        const { database, schema } = placementOf(this.dp, tenant.slug, tenant.tier);
        return { ...base, database, schema, user: name, password: generatePassword() };
      }
      default:
        throw this.accountRefused();
    }
  }

  async connection(tenant: StepTenant): Promise<ConnectionDescriptor> {
    const secret = await this.keys.getSecret(tenantSecretName(tenant.slug));
    if (!secret) throw new TenantryError('SECRET_UNAVAILABLE', 'the tenant has no connection secret');
    const v = secret.value as unknown as ConnectionDescriptor;
    return {
      tenantId: v.tenantId,
      tier: v.tier,
      host: v.host,
      port: v.port,
      database: v.database,
      ...(v.schema ? { schema: v.schema } : {}),
      user: v.user,
      ...(v.password ? { password: v.password } : {}),
      secretRef: secret.ref,
      ...(v.tenantSetting ? { tenantSetting: v.tenantSetting } : {}),
    };
  }

  async close(): Promise<void> {
    await this.promotion.close();
    await this.dp.close();
  }
}
