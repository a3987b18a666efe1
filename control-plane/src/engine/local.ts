import fs from 'node:fs';
import type { DataPlane } from '../dataplane/dataplane.js';
import { TenantryError } from '../domain/errors.js';
import {
  effectiveLimits,
  isExportParams,
  isLifecycleStep,
  isRestoreParams,
  type LifecycleKind,
  type LifecycleStep,
  lifecycleSteps,
  RESTORE_STEPS,
} from '../domain/lifecycle.js';
import { PLATFORM_KEY_ALIAS, POOL_SECRET } from '../domain/naming.js';
import type {
  ConnectionDescriptor,
  Engine,
  KeyStore,
  PromotionParams,
  SecretStore,
  StepContext,
  StepOutputs,
  StepTenant,
  StoreWrite,
} from '../domain/ports.js';
import { isRotationParams, type RotationParams } from '../domain/rotation.js';
import {
  isLocalProvisionStep,
  isRotationStep,
  type LocalOffboardStep,
  type LocalOnboardStep,
  type LocalPromotionStep,
  type LocalRoutingStep,
  type RotationStep,
} from '../domain/steps.js';
import type { LimitOverrides } from '../domain/tenant.js';
import type { Tier, TierCatalog } from '../domain/tiers.js';
import { digestDifferences, readManifest, restoreOutcome } from '../export/archive.js';
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
import {
  databaseProvider,
  ensureFreezeTriggers,
  hardenDatabase,
  ident,
  lockDownDatabases,
  poolProvider,
  roleProvider,
  schemaProvider,
  type TenantTemplate,
} from '../providers/postgres/index.js';
import { LocalTenantResources, type LoginMove, type StoredLogin } from './local-resources.js';

export { PLATFORM_KEY_ALIAS, POOL_SECRET };

/**
 * An onboarding's steps. `credentials` makes the tenant's key and its secret under it (one round trip
 * on the local store); `schema` creates the schema with the role's grants on it. Operations accepted
 * by an earlier build may still list `key` and `grants` on their own: both still run.
 */
const ONBOARD: Record<Exclude<Tier, 'account'>, readonly LocalOnboardStep[]> = {
  pool: ['credentials', 'pool-membership'],
  bridge: ['credentials', 'role', 'schema'],
  silo: ['credentials', 'role', 'database', 'schema'],
};
const OFFBOARD: Record<Exclude<Tier, 'account'>, readonly LocalOffboardStep[]> = {
  pool: ['pool-membership', 'credentials', 'key'],
  bridge: ['schema', 'role', 'credentials', 'key'],
  silo: ['database', 'role', 'credentials', 'key'],
};
/**
 * A password rotation retires first whatever a finished grace period left (a no-op when the previous
 * rotation's retire ran), so the idle login is idle; an abort retires the login it may have enabled.
 */
const ROTATE: Record<RotationParams['rotate'], readonly RotationStep[]> = {
  password: ['retire', 'logins', 'set-password', 'publish'],
  retire: ['retire'],
  key: ['rekey'],
};
const ROTATE_ABORT: Record<RotationParams['rotate'], readonly RotationStep[]> = {
  password: ['retire'],
  retire: [],
  key: [],
};

export { generatePassword };

/**
 * The embedded default: real Postgres-level isolation on the data-plane cluster, keys and
 * secrets in the local envelope-encrypted store, no cloud. The account tier is refused.
 */

/** An onboarding's writes to the key store (see StoreWrite). */
const PROVISIONAL: StoreWrite = { provisional: true };
/** The run's memo key for the login an onboarding's credentials step wrote (or found), which its role step sets. */
const MEMO_LOGIN = 'onboard.login';
export class LocalEngine implements Engine {
  readonly target = 'local' as const;
  readonly rollsBackFailedOnboarding = true;
  readonly promotionMovesRows = true;
  readonly promotionRollback = true;
  /** The tenant's resources, one method each (drift remediation calls the same). */
  private readonly resources: LocalTenantResources;

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
    this.resources = new LocalTenantResources(dp, keys, catalog, template);
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

  rotationSteps(params: RotationParams): RotationStep[] {
    if (params.rotate === 'key' && !this.resources.rotatesKeys)
      throw new TenantryError(
        'ROTATION_NOT_AVAILABLE_ON_TARGET',
        "this key store does not re-key data keys (KMS: a key rotates its own material; enable the key's automatic rotation)",
      );
    return [...ROTATE[params.rotate]];
  }

  rotationAbortSteps(params: RotationParams): RotationStep[] {
    return [...ROTATE_ABORT[params.rotate]];
  }

  /**
   * A step of a `rotate` operation: the tenant's own logins, or (`subject: 'pool'`) the pool's shared
   * login, whichever pool tenant the operation is recorded on.
   */
  private async rotate(ctx: StepContext): Promise<StepOutputs | undefined> {
    const params = ctx.params ?? {};
    const { tenant, step } = ctx;
    if (!isRotationParams(params) || !isRotationStep(step) || tenant.tier === 'account')
      throw new TenantryError('PROVIDER_FAILED', `unknown rotation step ${step}`);
    const t = { id: tenant.id, slug: tenant.slug, tier: tenant.tier, limits: tenant.limits };
    const owner = params.subject === 'pool' ? ('pool' as const) : t;
    const r = this.resources;
    switch (step) {
      case 'retire':
        await ctx.report?.({ retired: await r.retireLogins(owner) });
        return undefined;
      case 'logins':
        await r.ensureLogins(owner);
        return undefined;
      case 'set-password':
        await ctx.report?.({ login: await r.setNextPassword(owner) });
        return undefined;
      case 'publish': {
        const move = ctx.progress?.login as LoginMove | undefined;
        if (!move) throw new TenantryError('PROVIDER_FAILED', 'publish before set-password');
        const { user, version } = await r.publishNextPassword(owner, move);
        await ctx.report?.({ secretVersion: version });
        return owner === 'pool' ? undefined : { user, secretVersion: version };
      }
      case 'rekey': {
        // The key being replaced, recorded before the first try: a run again once it is replaced stops.
        let from = typeof ctx.progress?.previousKeyId === 'string' ? ctx.progress.previousKeyId : null;
        if (!from) {
          from = await r.keyIdOf(t);
          await ctx.report?.({ previousKeyId: from });
        }
        const rotated = await r.rotateKey(t, from);
        await ctx.report?.({ keyId: rotated.keyId, secretVersions: rotated.secretVersions });
        return { keyId: rotated.keyId };
      }
      default: {
        const unknown: never = step; // every rotation step has its case
        throw new TenantryError('PROVIDER_FAILED', `unknown rotation step ${unknown}`);
      }
    }
  }

  /** The steps of a lifecycle operation (domain/lifecycle.ts): every tier the local target has. */
  lifecycleSteps(kind: LifecycleKind, tier: Tier): LifecycleStep[] {
    if (tier === 'account') throw this.accountRefused();
    return lifecycleSteps(kind, tier);
  }

  /** The steps an onboarding from an archive runs after provisioning: the rows loaded, then checked. */
  restoreSteps(tier: Tier): LifecycleStep[] {
    if (tier === 'account') throw this.accountRefused();
    return [...RESTORE_STEPS];
  }

  /**
   * A lifecycle step (domain/lifecycle.ts) through the tenant's resource methods. Each is idempotent:
   * a suspension records which logins could log in before it cuts them off (a second run must not
   * forget them), an export reuses an archive it completed, a restore leaves rows it loaded.
   */
  private async lifecycle(ctx: StepContext, step: LifecycleStep): Promise<StepOutputs | undefined> {
    const { tenant } = ctx;
    if (tenant.tier === 'account') throw this.accountRefused();
    const t = { id: tenant.id, slug: tenant.slug, tier: tenant.tier };
    const params = ctx.params ?? {};
    const r = this.resources;
    switch (step) {
      case 'limits': {
        const limits = effectiveLimits(
          this.catalog.tiers[t.tier].role,
          params.limits as LimitOverrides | undefined,
        );
        await ctx.report?.({ limits, roles: await r.applyLimits(t, limits) });
        return undefined;
      }
      case 'suspend-logins': {
        const before = (ctx.progress?.disabledLogins as string[] | undefined) ?? [];
        const now = await r.loginsThatCanLogIn(t);
        await ctx.report?.({ disabledLogins: [...new Set([...before, ...now])].sort() });
        await r.suspendLogins(t);
        return undefined;
      }
      case 'resume-logins': {
        const logins = Array.isArray(params.logins) ? (params.logins as string[]) : [];
        await ctx.report?.({ enabledLogins: await r.resumeLogins(t, logins) });
        return undefined;
      }
      case 'suspend-writes':
        await r.suspendWrites(t);
        return undefined;
      case 'resume-writes':
        await r.resumeWrites(t);
        return undefined;
      case 'export': {
        // An `export` operation's params, or an offboarding's `finalExport`.
        const p = ctx.kind === 'offboard' ? params.finalExport : params;
        if (!isExportParams(p))
          throw new TenantryError('PROVIDER_FAILED', 'the export step has no archive to write');
        const out = await r.exportArchive(t, p.file, {
          exportId: p.exportId,
          schemaVersion: tenant.templateVersion,
        });
        await ctx.report?.({
          archive: { exportId: p.exportId, bytes: out.bytes, sha256: out.sha256, manifest: out.manifest },
        });
        return undefined;
      }
      case 'restore': {
        const p = params.fromExport;
        if (!isRestoreParams(p))
          throw new TenantryError('PROVIDER_FAILED', 'the restore step has no archive to read');
        // Run first: `report?.(…)` would skip evaluating its argument when there is no reporter.
        const outcome = await restoreOutcome(r.restoreArchive(t, p.file, p.manifestSha256), p.exportId);
        await ctx.report?.(outcome);
        return undefined;
      }
      case 'verify-restore': {
        const p = params.fromExport;
        if (!isRestoreParams(p))
          throw new TenantryError('PROVIDER_FAILED', 'the restore step has no archive to read');
        const manifest = await readManifest(p.file);
        const diffs = digestDifferences(manifest, await r.tableDigests(t));
        if (diffs.length > 0)
          throw new TenantryError(
            'PROVIDER_FAILED',
            `the restored rows differ from the archive's manifest: ${diffs.join('; ')}`,
          );
        await ctx.report?.({
          restoreVerified: manifest.tables.map((x) => ({ name: x.name, rows: x.rows, sha256: x.sha256 })),
        });
        return undefined;
      }
      default: {
        const unknown: never = step; // every lifecycle step has its case
        throw new TenantryError('PROVIDER_FAILED', `unknown lifecycle step ${unknown}`);
      }
    }
  }

  async runStep(ctx: StepContext): Promise<StepOutputs | undefined> {
    const { tenant } = ctx;
    // Promotion steps pause at named points inside them instead (see the fault hook).
    if (ctx.kind === 'promote') return this.promotion.runStep(ctx);
    if (ctx.kind === 'rotate') {
      await this.faultHold()?.(`step:${ctx.step}`, ctx.report);
      return this.rotate(ctx);
    }
    if (this.opts.faultStepDelayMs) await new Promise((r) => setTimeout(r, this.opts.faultStepDelayMs));
    await this.faultHold()?.(`step:${ctx.step}`, ctx.report);
    if (tenant.tier === 'account') throw this.accountRefused();
    if (isLifecycleStep(ctx.step)) return this.lifecycle(ctx, ctx.step);
    const up = ctx.kind === 'onboard';
    const t = { id: tenant.id, slug: tenant.slug, tier: tenant.tier };
    const r = this.resources;
    const step = ctx.step;
    if (!isLocalProvisionStep(step)) throw new TenantryError('PROVIDER_FAILED', `unknown step ${step}`);
    switch (step) {
      case 'key':
        // An onboarding's key and secret commit relaxed (StoreWrite): nothing serves them before its
        // durable end. Its key is made by `credentials` now; this is an earlier build's operation.
        if (up) return r.ensureKey(t, PROVISIONAL);
        await r.shredKey(t);
        return { keyId: null };
      case 'credentials': {
        if (!up) {
          await r.deleteCredentials(t);
          return { secretRef: null };
        }
        const written = await r.provisionCredentials(t, PROVISIONAL);
        if (written.login) ctx.memo?.set(MEMO_LOGIN, written.login);
        return {
          keyId: written.keyId,
          keyAlias: written.keyAlias,
          secretRef: written.ref,
          secretVersion: written.version,
        };
      }
      case 'role':
        if (up) {
          const login = ctx.memo?.get(MEMO_LOGIN) as StoredLogin | undefined;
          return { user: await r.applyRole(t, { password: true, fresh: true, ...(login ? { login } : {}) }) };
        }
        await r.dropRole(t);
        return { user: null };
      case 'database':
        if (up) return { database: await r.createDatabase(t) };
        await r.dropDatabase(t);
        return { database: null };
      case 'schema':
        if (up) return { schema: await r.createSchema(t) };
        await r.dropSchema(t);
        return { schema: null };
      case 'grants':
        // An onboarding's grants come with its schema now; this is an earlier build's operation.
        await (up ? r.applyGrants(t) : r.revokeGrants(t));
        return undefined;
      case 'pool-membership':
        if (up) return { schema: await r.joinPool(t) };
        await r.leavePool(t);
        return { schema: null };
      default: {
        const unknown: never = step; // every provisioning step has its case
        throw new TenantryError('PROVIDER_FAILED', `unknown step ${unknown}`);
      }
    }
  }

  async connection(tenant: StepTenant): Promise<ConnectionDescriptor> {
    if (tenant.tier === 'account') throw this.accountRefused();
    return this.resources.connection({ id: tenant.id, slug: tenant.slug, tier: tenant.tier });
  }

  async close(): Promise<void> {
    await this.promotion.close();
    await this.dp.close();
  }
}
