import type { DataPlane } from '../dataplane/dataplane.js';
import { TenantryError } from '../domain/errors.js';
import {
  loginRoleName,
  loginRoleNames,
  POOL_SECRET,
  tenantKeyAlias,
  tenantObjectName,
  tenantSecretName,
} from '../domain/naming.js';
import type {
  KeyStore,
  PromotionParams,
  SecretStore,
  StepContext,
  StepOutputs,
  StepTenant,
} from '../domain/ports.js';
import {
  isLocalRoutingStep,
  isRowMoveStep,
  type LocalPromotionStep,
  type LocalRoutingStep,
  RESTORE_STEPS,
} from '../domain/steps.js';
import type { Tier, TierCatalog } from '../domain/tiers.js';
import {
  applyGrants,
  applyLogins,
  databaseProvider,
  dropLogins,
  grantsProvider,
  guardPrivateSchemaSql,
  ident,
  isTenantFrozen,
  type LoginsSpec,
  poolMembershipProvider,
  schemaProvider,
  type TenantTemplate,
  unfreezeTenant,
} from '../providers/postgres/index.js';
import { migratePrivateSchema, type Placement } from './placement.js';
import { lateChanges, replicationNames, slotExists } from './replication.js';
import {
  cutoverReport,
  type Fault,
  type FaultHook,
  forwardOnly,
  freezeLasted,
  type ReplicationNames,
  type Report,
  ROW_STEPS,
  RowMove,
  type RowMoveOptions,
} from './row-move.js';

export { type FaultHook, forwardOnly, ROW_STEPS } from './row-move.js';

export const PROMOTE_STEPS: readonly LocalPromotionStep[] = ['provision', ...ROW_STEPS, 'cutover'];
export const ROLLBACK_STEPS: readonly LocalPromotionStep[] = [
  ...RESTORE_STEPS,
  'cutover-back',
  'drop-target',
];
export const ABORT_STEPS: readonly LocalRoutingStep[] = ['abort'];
/** A rollback that failed before cutting back. */
export const ABORT_ROLLBACK_STEPS: readonly LocalRoutingStep[] = ['abort-rollback'];

export interface PromotionOptions extends RowMoveOptions {
  /** How long the source stays read-only, for rollback, before it is deleted. */
  rollbackWindowMs: number;
  generatePassword: () => string;
}

const samePlacement = (v: Record<string, unknown> | undefined, p: Placement) =>
  v?.database === p.database && v?.schema === p.schema;

/**
 * A promotion on the local target (pool → bridge, pool → silo, bridge → silo), while the tenant
 * keeps writing: the rows move with `RowMove` (promotion/row-move.ts); this is the routing around
 * it, through the key store: the target provisioned, the routing flipped (the cutover, where the
 * write freeze is lifted), a failed move undone, the source deleted once the rollback window is
 * over. Every step is idempotent and resumable; past the routing flip, forward only.
 */
export class LocalPromotion {
  private readonly rows: RowMove;

  constructor(
    private readonly dp: DataPlane,
    private readonly keys: KeyStore & SecretStore,
    private readonly catalog: TierCatalog,
    private readonly template: TenantTemplate,
    private readonly opts: PromotionOptions,
  ) {
    this.rows = new RowMove(dp, opts);
  }

  /** Fault injection for tests: a hook run at named points inside the steps. */
  setFaultHook(hook: FaultHook | undefined): void {
    this.rows.setFaultHook(hook);
  }

  /** Ends every session kept across a write freeze (at shutdown: the freeze itself is durable). */
  close(): Promise<void> {
    return this.rows.close();
  }

  private stagingSecret = (slug: string) => `tenantry/${slug}/promotion`;

  /**
   * The tenant's login group (engine/local-resources.ts has the full story) as `applyLogins` converges
   * it on `tier`'s limits and `schema` as search path: `current` is the login its descriptor names
   * (its group itself in the single-login layout), given `password` when set.
   */
  private logins(t: StepTenant, tier: Tier, schema: string, current: string, password?: string): LoginsSpec {
    const group = tenantObjectName(t.slug);
    return {
      group,
      logins: loginRoleNames(group),
      ...this.catalog.tiers[tier].role,
      searchPath: [schema],
      current,
      ...(password !== undefined ? { password } : {}),
    };
  }

  /** The login the tenant's secret names now (its group itself when it names none: single-login layout). */
  private currentLogin(t: StepTenant, secret: { value: Record<string, unknown> } | null): string {
    const user = secret?.value.user;
    return typeof user === 'string' ? user : tenantObjectName(t.slug);
  }

  async runStep(ctx: StepContext): Promise<StepOutputs | undefined> {
    if (isRowMoveStep(ctx.step)) return this.rows.runStep(ctx);
    const params = ctx.params as unknown as PromotionParams;
    const t = ctx.tenant;
    const progress = ctx.progress ?? {};
    const { from, to } = this.rows.placements(t, params, progress);
    const names = replicationNames(params.rollbackOf ?? ctx.operationId);
    const report = ctx.report ?? (async () => {});
    const fault = this.rows.faults(ctx.operationId, t.id, report);
    const step = ctx.step;
    if (!isLocalRoutingStep(step))
      throw new TenantryError('PROVIDER_FAILED', `unknown promotion step ${step}`);
    switch (step) {
      case 'provision':
        await this.sameVersion(t, from, report);
        return this.provision(t, params, to, progress, report);
      case 'cutover': {
        const out = await this.cutover(ctx.operationId, t, params, from, to, names, progress, report, fault);
        await this.rows.endSessions(ctx.operationId);
        return out;
      }
      case 'abort':
        await this.rows.endSessions(ctx.operationId);
        await this.abort(t, params, from, to, names, fault);
        return undefined;
      case 'abort-rollback': {
        // A rollback that failed before cutting back: the tenant stays where it is, writable again.
        const current = await this.keys.getSecret(tenantSecretName(t.slug));
        if (samePlacement(current?.value, to)) {
          throw new TenantryError(
            'PROVIDER_FAILED',
            'the rollback already flipped routing back; it can only be finished forward (resume it)',
            { context: { forwardOnly: true } },
          );
        }
        await this.rows.unfreeze(t, from);
        return undefined;
      }
      /* ---- rollback: `from` is the tier being left (the promotion's target), `to` the original source */
      case 'cutover-back':
        return this.cutoverBack(t, params, from, to, progress, report, fault);
      case 'drop-target':
        await this.dropPlacement(t, from, params.toTier === 'pool');
        return undefined;
      default: {
        const unknown: never = step; // every routing step has its case
        throw new TenantryError('PROVIDER_FAILED', `unknown promotion step ${unknown}`);
      }
    }
  }

  /**
   * A promotion moves a tenant only between placements of the same template version, and its target
   * is built at the newest (docs/rollouts.md). So a private source (bridge) behind it is migrated first,
   * as a rollout would (each version in its own transaction with its bump, under the schema's lock, new
   * tables guarded, nothing left to PUBLIC: placement.ts `migratePrivateSchema`); a pool source waits, retried, for the
   * rollout's platform step to move the shared tables. The version reached is reported: the cutover
   * records it on the tenant.
   */
  private async sameVersion(t: StepTenant, from: Placement, report: Report): Promise<void> {
    const newest = this.template.version;
    const spec = { name: from.schema, owner: this.dp.names.ownerRole, template: this.template };
    const at = await this.rows.on(from, async (db) =>
      from.shared
        ? ((await schemaProvider.observe(db, spec))?.templateVersion ?? 0)
        : (
            await migratePrivateSchema(db, spec, {
              from: t.templateVersion,
              toVersion: newest,
              andThen: () => [guardPrivateSchemaSql(from.schema)],
            })
          ).version,
    );
    if (at < newest) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the pool's shared tables are at template version ${at} and the target would be at ${newest}: the promotion waits for the rollout's platform step`,
        { retryable: true },
      );
    }
    await report({ templateVersion: newest });
  }

  private async provision(
    t: StepTenant,
    params: PromotionParams,
    to: Placement,
    progress: Record<string, unknown>,
    report: Report,
  ): Promise<StepOutputs | undefined> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    // The target's credentials: the bridge tenant's login carries over to silo; a pool tenant gets a
    // login group of its own, logging in as its first login.
    const staging = await this.keys.getSecret(this.stagingSecret(t.slug));
    let password = staging?.value.password as string | undefined;
    let user = staging?.value.user as string | undefined;
    if (!password) {
      const current = await this.keys.getSecret(tenantSecretName(t.slug));
      const fromPool = params.fromTier === 'pool';
      password = fromPool ? this.opts.generatePassword() : (current?.value.password as string);
      user = fromPool ? loginRoleName(name, 'a') : this.currentLogin(t, current);
      await this.keys.putSecret(this.stagingSecret(t.slug), tenantKeyAlias(t.slug), { password, user });
    }
    user ??= this.currentLogin(t, null);
    if (params.fromTier === 'pool') {
      // New roles, not live until the cutover grants the group anything.
      const login = user;
      await this.dp.withMaintenance((db) =>
        applyLogins(db, this.logins(t, params.toTier, to.schema, login, password)),
      );
    }
    // A bridge tenant's logins are live: their own settings change only at the cutover.
    if (to.tier === 'silo') {
      await this.dp.withMaintenance(async (db) => {
        await databaseProvider.create(db, { name, owner: n.ownerRole, template: n.siloTemplate });
        // Sessions in the silo resolve its tables from the first instant of the cutover.
        for (const role of [name, ...loginRoleNames(name)])
          await db.query(
            `ALTER ROLE ${ident(role)} IN DATABASE ${ident(name)} SET search_path = ${ident(to.schema)}`,
          );
      });
    }
    await this.rows.on(to, (db) =>
      schemaProvider.create(db, { name: to.schema, owner: n.ownerRole, template: this.template }),
    );
    await this.rows.prepareTarget(t, to, progress, report);
    return undefined;
  }

  private async cutover(
    operationId: string,
    t: StepTenant,
    params: PromotionParams,
    from: Placement,
    to: Placement,
    names: ReplicationNames,
    progress: Record<string, unknown>,
    report: Report,
    fault: Fault,
  ): Promise<StepOutputs> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const current = await this.keys.getSecret(tenantSecretName(t.slug));
    let cutoverAt = typeof progress.cutoverAt === 'string' ? Date.parse(progress.cutoverAt) : Number.NaN;
    const staged = await this.keys.getSecret(this.stagingSecret(t.slug));
    // The login the descriptor names from the flip on (staged by `provision`; once the flip is in, the
    // secret names it, and the staged copy is gone after the cutover's last statement).
    const login = typeof staged?.value.user === 'string' ? staged.value.user : this.currentLogin(t, current);
    if (!samePlacement(current?.value, to)) {
      const password = staged?.value.password;
      if (typeof password !== 'string')
        throw new TenantryError('SECRET_UNAVAILABLE', 'staged credentials are missing');
      // The source's freeze must stand through the flip: taken anew (then drained and verified
      // again) if it lapsed, then made permanent, so no deadline can pass between here and the
      // flip. A last drain takes anything that slipped in before it became permanent.
      await this.rows.pinFreeze(t, from, async () => {
        await this.rows.redrain(operationId, from, to, names, fault);
        await this.rows.verifyChanged(operationId, from, to, names, progress, report);
      });
      await this.rows.redrain(operationId, from, to, names, fault);
      // The point of no return: routing flips to the target (its role was granted access to it,
      // still frozen, after the full verification; an abort before this line loses nothing).
      await this.keys.putSecret(tenantSecretName(t.slug), tenantKeyAlias(t.slug), {
        tenantId: t.id,
        tier: params.toTier,
        host: this.dp.host,
        port: this.dp.port,
        database: to.database,
        schema: to.schema,
        user: login,
        password,
      });
      cutoverAt = Date.now();
      await fault('cutover:after-flip');
    }
    // After the flip, before the target takes writes: the source must not have taken one past
    // the drain point. If it did (its freeze was bypassed), those writes are carried to the
    // target, still frozen, and the promotion does not report success: it fails forward-only,
    // naming them, and a resume finishes it once nothing more arrives.
    // (A target already writable, or the slot already gone, means an earlier run of this step
    // passed this check and went on.)
    const late = await this.rows
      .inSessions(operationId, [from, to], async (src, dst) =>
        (await isTenantFrozen(dst!, to.schema, t.id)) && (await slotExists(src!, names.slot))
          ? lateChanges(src!, names)
          : 0,
      )
      .catch((e: unknown) => {
        throw forwardOnly(e, 'the cutover flipped routing and must be finished forward');
      });
    if (late > 0) {
      await this.rows.redrain(operationId, from, to, names, fault).catch((e: unknown) => {
        throw forwardOnly(e, 'the cutover flipped routing and must be finished forward');
      });
      await report({ lateWrites: late });
      // Not retried by itself: a person looks at how the freeze was bypassed, then resumes.
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the source took ${late} write(s) after the drain point, past its freeze; they were carried to the new placement, which stays read-only until the promotion is resumed`,
        { retryable: false, context: { forwardOnly: true, lateWrites: late } },
      );
    }
    try {
      if (Number.isNaN(cutoverAt)) cutoverAt = Date.now();
      // The target becomes the tenant's, writable: the write freeze ends here (local target).
      await this.rows.unfreeze(t, to, operationId);
      await this.rows.inSessions(operationId, [to], (db) =>
        applyGrants(db!, { database: to.database, schema: to.schema, role: name, owner: n.ownerRole }),
      );
      await report(cutoverReport(progress, cutoverAt, this.opts.rollbackWindowMs));
      await this.rows.clearMeta(to, names);
      // The logins take the target tier's settings.
      await this.dp.withMaintenance((db) => applyLogins(db, this.logins(t, params.toTier, to.schema, login)));
      if (from.tier === 'bridge') {
        // The role keeps no way back into the shared database (rollback grants it again).
        await this.dp.withData((db) =>
          grantsProvider.delete(db, {
            database: n.database,
            schema: from.schema,
            role: name,
            owner: n.ownerRole,
          }),
        );
      }
      // The slot holds WAL for every tenant of the shared database: release it at once.
      await this.rows.dropReplication(names);
      await this.keys.deleteSecret(this.stagingSecret(t.slug));
    } catch (e) {
      throw forwardOnly(e, 'the cutover flipped routing and must be finished forward');
    }
    return { tier: params.toTier, database: to.database, schema: to.schema, user: login };
  }

  /** Undoes a promotion that failed before its cutover: the tenant stays on its source, untouched. */
  private async abort(
    t: StepTenant,
    params: PromotionParams,
    from: Placement,
    to: Placement,
    names: ReplicationNames,
    fault: Fault,
  ): Promise<void> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const current = await this.keys.getSecret(tenantSecretName(t.slug));
    if (current && !samePlacement(current.value, from)) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        'the cutover already flipped routing to the target; the promotion can only be finished forward (resume it)',
        { context: { forwardOnly: true } },
      );
    }
    await this.rows.unfreeze(t, from);
    if (from.tier === 'bridge') {
      // The live logins, as they were (in case an earlier version of this promotion changed them).
      const login = this.currentLogin(t, current);
      await this.dp.withMaintenance((db) => applyLogins(db, this.logins(t, 'bridge', from.schema, login)));
      await this.dp.withData((db) =>
        applyGrants(db, { database: n.database, schema: from.schema, role: name, owner: n.ownerRole }),
      );
    }
    await fault('abort:after-unfreeze');
    await this.rows.dropReplication(names);
    await this.dropPlacement(t, to, params.fromTier === 'pool');
    await this.keys.deleteSecret(this.stagingSecret(t.slug));
  }

  /** Removes a placement's objects; its role too when the role belongs to it alone. */
  private async dropPlacement(
    t: StepTenant,
    p: Placement,
    dropRole: boolean,
    afterBatch?: () => Promise<void>,
  ): Promise<void> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const limits = this.catalog.tiers.bridge.role;
    const group = { group: name, logins: loginRoleNames(name), ...limits };
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
        await unfreezeTenant(db, p.schema, t.id);
      });
    } else {
      await this.dp.withData((db) =>
        poolMembershipProvider.delete(db, {
          schema: n.poolSchema,
          tenantId: t.id,
          slug: t.slug,
          setting: n.tenantSetting,
          writers: [n.poolRole, ...loginRoleNames(n.poolRole)],
          // The tenant's rows leave the pool; a late write through the shared role is refused.
          freezeReason: 'moved',
          freezeWaitMs: this.opts.freezeWaitMs ?? 15_000,
          ...(afterBatch ? { afterBatch } : {}),
        }),
      );
    }
    if (dropRole) {
      await this.dp.withData((data) =>
        this.dp.withMaintenance((db) => dropLogins(db, { ...group, cleanupIn: [data] })),
      );
    }
  }

  private async cutoverBack(
    t: StepTenant,
    params: PromotionParams,
    current: Placement,
    original: Placement,
    progress: Record<string, unknown>,
    report: Report,
    fault: Fault,
  ): Promise<StepOutputs> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const secret = await this.keys.getSecret(tenantSecretName(t.slug));
    const pool = original.tier === 'pool' ? await this.keys.getSecret(POOL_SECRET) : null;
    // A pool descriptor's login is the pool's (the key store's read adds its current one); a bridge
    // tenant keeps the login it had.
    const descriptor =
      original.tier === 'pool'
        ? {
            user: typeof pool?.value.user === 'string' ? pool.value.user : n.poolRole,
            password: pool?.value.password,
            tenantSetting: n.tenantSetting,
          }
        : { user: this.currentLogin(t, secret), password: secret?.value.password };
    if (!samePlacement(secret?.value, original)) {
      // As for a promotion: the current placement's freeze stands through the flip (restored and
      // verified again if it lapsed), made permanent first.
      await this.rows.pinFreeze(t, current, async () => {
        await this.rows.restore(t, current, original, report, fault);
        await this.rows.verifyRestored(t, current, original, report);
      });
      await this.keys.putSecret(tenantSecretName(t.slug), tenantKeyAlias(t.slug), {
        tenantId: t.id,
        tier: params.toTier,
        host: this.dp.host,
        port: this.dp.port,
        database: original.database,
        schema: original.schema,
        ...descriptor,
      });
      await fault('cutover-back:after-flip');
    }
    // After the flip back, before the original takes writes: the placement being left must hold
    // exactly what was restored. If it took a write past its freeze, the rows are restored again
    // and the rollback does not report success (forward-only; a resume finishes it).
    try {
      // (An original already writable means an earlier run of this step passed this check.)
      if (await this.rows.isFrozen(t, original)) await this.rows.verifyRestored(t, current, original, report);
    } catch (e) {
      await this.rows.restore(t, current, original, report, fault).catch(() => undefined);
      throw forwardOnly(
        e,
        'the placement being left took writes after its rows were restored; restored again, resume to finish',
      );
    }
    try {
      if (original.tier === 'bridge') {
        const login = String(descriptor.user);
        await this.dp.withMaintenance((db) =>
          applyLogins(db, this.logins(t, 'bridge', original.schema, login)),
        );
        await this.dp.withData((db) =>
          applyGrants(db, { database: n.database, schema: original.schema, role: name, owner: n.ownerRole }),
        );
      }
      // The original is the tenant's again, writable: a rollback's write freeze ends here (local target).
      await this.rows.unfreeze(t, original);
      await report({ writeFreezeMs: freezeLasted(progress) });
    } catch (e) {
      throw forwardOnly(e, 'the rollback flipped routing back and must be finished forward');
    }
    return {
      tier: params.toTier,
      database: original.database,
      schema: original.schema,
      user: String(descriptor.user),
    };
  }

  /**
   * Deletes a promotion's source placement once its rollback window is over, whatever the tenant's
   * tier now is (a later promotion may have moved it on): never the placement it is routed to.
   */
  async cleanup(
    t: StepTenant,
    params: PromotionParams,
    operationId: string,
    report?: (p: Record<string, unknown>) => Promise<void>,
  ): Promise<void> {
    const { from } = this.rows.placements(t, params);
    const current = await this.keys.getSecret(tenantSecretName(t.slug));
    if (samePlacement(current?.value, from)) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the tenant is routed to the ${params.fromTier} placement again; it is not deleted`,
      );
    }
    const fault = this.rows.faults(operationId, t.id, report ?? (async () => {}));
    await this.rows.dropReplication(replicationNames(operationId));
    await fault('cleanup:before-delete');
    await this.dropPlacement(t, from, false, () => fault('cleanup:after-batch'));
  }

  /** Drops slots and publications of promotions no longer in flight (see `RowMove.sweepOrphans`). */
  sweepOrphans(liveOperationIds: string[], idleOperationIds: string[] = []): Promise<string[]> {
    return this.rows.sweepOrphans(liveOperationIds, idleOperationIds);
  }
}
