import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { OrganizationsClient } from '@aws-sdk/client-organizations';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { STSClient } from '@aws-sdk/client-sts';
import type { EngineEvent } from '@pulumi/pulumi/automation/index.js';
import { accountRootEmail } from '../../../stacks/common/input.js';
import type { StagedPlacementOutputs } from '../../../stacks/common/program.js';
import { DEFAULT_TEMPLATES_DIR, loadProgramTemplates } from '../../../stacks/common/templates.js';
import { SILO_SCHEMA, tenantOwnerRoleName } from '../../../stacks/common/tenant-postgres.js';
import { type AwsCredentials, assumeRole, findActiveAccountIdByEmail } from '../aws/accounts.js';
import { memberRoleArn } from '../aws/arn.js';
import { getSecretValue } from '../aws/secrets.js';
import { accountOperations, type Semaphore } from '../aws/semaphore.js';
import { DataPlane } from '../dataplane/dataplane.js';
import { TenantryError } from '../domain/errors.js';
import type { LifecycleKind } from '../domain/lifecycle.js';
import { tenantObjectName, tenantSecretName } from '../domain/naming.js';
import type {
  ConnectionDescriptor,
  Engine,
  PromotionParams,
  StepContext,
  StepOutputs,
  StepTenant,
} from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import {
  AWS_OFFBOARD_STEPS,
  AWS_ONBOARD_STEPS,
  type AwsDataRoutingStep,
  type AwsMoverStep,
  type AwsOffboardStep,
  type AwsOnboardStep,
  type AwsPromotionStep,
  type AwsStackStep,
  isAwsMoverStep,
  isAwsStackStep,
  isRowMoveStep,
  RESTORE_STEPS,
  type RowMoveStep,
} from '../domain/steps.js';
import { TIERS, type Tier, type TierCatalog } from '../domain/tiers.js';
import { managedPlacementOf, type Placement } from '../promotion/placement.js';
import { replicationNames } from '../promotion/replication.js';
import {
  cutoverReport,
  forwardOnly,
  freezeLasted,
  ROW_STEPS,
  RowMove,
  type RowMoveOptions,
} from '../promotion/row-move.js';
import {
  endRoleSessions,
  grantsProvider,
  poolMembershipProvider,
  roleProvider,
  schemaProvider,
  type TenantTemplate,
  unfreezeTenant,
} from '../providers/postgres/index.js';
import {
  type AwsExportSettings,
  awsLifecycleSteps,
  awsRestoreSteps,
  runAwsExport,
  runAwsRestore,
} from './aws-exports.js';
import {
  resumePoolWrites,
  suspendedForStep,
  suspendPoolWrites,
  suspensionFreezes,
} from './aws-suspension.js';
import { isPidAlive, type StaleLockOptions, toTenantryError } from './pulumi/errors.js';
import { progressFromEvent } from './pulumi/events.js';
import { buildJob, type JobSettings } from './pulumi/job.js';
import { plainOutputs } from './pulumi/outputs.js';
import {
  type PulumiJob,
  type PulumiOp,
  PulumiPool,
  type PulumiResult,
  type PulumiRunner,
  type RunOptions,
  type StackSettingsRecord,
} from './pulumi/runner.js';
import { PINNED_VERSIONS, programContentHash, programVersion } from './pulumi/version.js';

const REPO = path.resolve(import.meta.dirname, '../../..');
/** The programs and what decides their resources besides the templates: hashed into the program version. */
const STACKS_DIR = path.join(REPO, 'stacks');
const POSTGRES_PROVIDERS_DIR = path.join(REPO, 'control-plane/src/providers/postgres');
export const DEFAULT_POLICY_PACK_DIR = path.join(STACKS_DIR, 'policy');

/** `envVars` is the Pulumi child's whole environment (PATH, HOME, AWS credentials, PULUMI_CONFIG_PASSPHRASE …). */
export interface AwsEngineOptions
  extends Pick<
    JobSettings,
    'backendUrl' | 'secretsProvider' | 'envVars' | 'aws' | 'platform' | 'workspaceRoot'
  > {
  concurrency: number;
  timeoutMs: number;
  /**
   * The base of the version recorded with each tenant (e.g. `<api>+template.<n>`); the engine
   * appends a content hash of the programs and templates, so a change to stacks/ shows.
   */
  programVersion: string;
  /** The control plane's templates directory; the programs read the same one. Default: the repository's templates/. */
  templatesDir?: string;
  /** Policy pack run with every up and preview; null runs none. Default: stacks/policy. */
  policyPackDir?: string | null;
  /** How long a promotion's source is kept, read-only, after its cutover. Default 24 h. */
  promotionRollbackWindowMs?: number;
  /** Tests only: plain connections to a staged silo (a local server standing in for RDS). */
  siloTls?: boolean;
  /** The row move's settings (lag limit, freeze wait …), as on the local target. */
  promotion?: Partial<Omit<RowMoveOptions, 'placements'>>;
  /**
   * Where each stack's Pulumi settings (secrets provider and its key) are kept, so that any worker can
   * run any stack (pulumi#8183); aws-target.ts gives the control database's (db/aws.ts).
   */
  stackSettings?: {
    get(stack: string): Promise<StackSettingsRecord | null>;
    save(stack: string, settings: StackSettingsRecord): Promise<void>;
  };
  /** Exports (TENANTRY_EXPORT_BUCKET): where archives go, encrypted with each tenant's key (engine/aws-exports.ts). */
  exports?: AwsExportSettings;
  /** The account tier's closure queue (aws/closures.ts): offboarding queues, a cron task requests. */
  closures?: { enqueue(tenant: StepTenant, accountId: string, operationId: string): Promise<void> };
  /** The exact Pulumi CLI and aws plugin versions to run with (default: version.ts's pins); null checks none (tests). */
  pins?: { cli: string; awsPlugin: string } | null;
  /** Tests: what runs a job (default: a child process) and the account-operation bound. */
  runner?: PulumiRunner;
  accountSemaphore?: Semaphore;
  /** Tests: AWS clients (default: built from `aws`). */
  clients?: {
    secrets?: SecretsManagerClient;
    organizations?: OrganizationsClient;
    sts?: STSClient;
    /** A Secrets Manager client acting in a tenant's own account. */
    memberSecrets?: (credentials: AwsCredentials) => SecretsManagerClient;
  };
}

/** What the executor's steps do on this target. */
const STEP_OPS: Record<AwsStackStep, PulumiOp> = {
  'stack-up': 'up',
  'stack-stage': 'up',
  'stack-back': 'up',
  'stack-current': 'up',
  'stack-discard': 'up',
  'stack-unstage': 'up',
  'stack-unprotect': 'unprotect',
  'stack-destroy': 'destroy',
};

/**
 * A promotion's row move, between the stack's `up`s: the same steps (and code) as on the local
 * target, on the placement the staging `up` created (`RowMove`, promotion/row-move.ts).
 */
const MOVE_STEPS: readonly RowMoveStep[] = ['prepare-target', ...ROW_STEPS];
/*
 * A rollback's row move is RESTORE_STEPS (the current placement frozen, its rows copied back and
 * verified); this target's routing on the data, around the stack's `up`s (`routeData`), is
 * AWS_DATA_ROUTING_STEPS: the write freeze lifted once routing flipped (`release`,
 * `release-back`), or the move undone before it did (domain/steps.ts).
 */

/** The staged target placement, as the staging `up` reports it (no credential). */
export type StagedTarget = StagedPlacementOutputs;

/**
 * The aws target: one Pulumi stack per tenant (`tenant-<slug>`), driven through the Automation
 * API in child processes, with bounded concurrency (and at most 5 account-tier runs at once, on
 * top of that bound). Postgres-level resources of pool and bridge tenants run inside the stack
 * through the dynamic provider that wraps the shared providers.
 */
export class AwsEngine implements Engine {
  readonly target = 'aws' as const;
  readonly rollsBackFailedOnboarding = false;
  /** The staging `up` creates the target placement, the rows move into it, then routing flips (docs/aws.md). */
  readonly promotionMovesRows = true;
  /** A rollback moves the rows back (those written since the cutover included), as on the local target. */
  readonly promotionRollback = true;
  /** What is recorded with each tenant: the base version plus a hash of the programs and templates. */
  readonly programVersion: string;
  private readonly pool: PulumiPool;
  private readonly accountSem: Semaphore;
  private readonly settings: JobSettings;
  private readonly secrets: SecretsManagerClient;
  private readonly stale: StaleLockOptions;
  private readonly accountIds = new Map<string, string>();
  private organizations: OrganizationsClient | undefined;
  private sts: STSClient | undefined;
  /** The row move: the shared cluster as its data plane, built on first use from the admin secret. */
  private mover: Promise<RowMover> | undefined;
  /** Each promotion's staged target placement (with its server, for a silo), by operation id. */
  private readonly targets = new Map<string, Placement>();

  constructor(private readonly opts: AwsEngineOptions) {
    this.pool = new PulumiPool(opts.concurrency, opts.runner);
    this.accountSem = opts.accountSemaphore ?? accountOperations;
    const templatesDir = path.resolve(opts.templatesDir ?? DEFAULT_TEMPLATES_DIR);
    const policyPackDir = opts.policyPackDir === undefined ? DEFAULT_POLICY_PACK_DIR : opts.policyPackDir;
    this.settings = {
      backendUrl: opts.backendUrl,
      ...(opts.secretsProvider ? { secretsProvider: opts.secretsProvider } : {}),
      envVars: opts.envVars,
      aws: opts.aws,
      platform: opts.platform,
      workspaceRoot: path.resolve(opts.workspaceRoot),
      templatesDir,
      policyPacks: policyPackDir === null ? [] : [path.resolve(policyPackDir)],
      accountEmailSuffix: AwsEngine.accountEmailSuffix,
    };
    this.programVersion = programVersion(
      opts.programVersion,
      programContentHash([
        { name: 'stacks', dir: STACKS_DIR },
        { name: 'postgres-providers', dir: POSTGRES_PROVIDERS_DIR },
        { name: 'templates', dir: templatesDir },
      ]),
    );
    // A lock older than an operation can live, or held by a dead process of this host, is stale.
    this.stale = { maxAgeMs: opts.timeoutMs + 60_000, hostname: os.hostname(), isPidAlive };
    this.secrets = opts.clients?.secrets ?? new SecretsManagerClient(this.clientConfig('secretsmanager'));
  }

  private clientConfig(service: 'secretsmanager' | 'organizations' | 'sts') {
    const endpoint = this.opts.aws.endpoints?.[service];
    return { region: this.opts.aws.region, ...(endpoint ? { endpoint } : {}) };
  }

  supportsTier(_tier: Tier): boolean {
    return true;
  }

  /**
   * Offboarding first re-applies the stack with its offboarding flag, on the resources it has
   * only: deletion protection off, nothing retained but a key that encrypts a final snapshot.
   * Only then can `destroy` remove an RDS instance (and the rows every `up` otherwise retains).
   */
  steps(kind: 'onboard' | 'offboard'): (AwsOnboardStep | AwsOffboardStep)[] {
    return kind === 'onboard' ? [...AWS_ONBOARD_STEPS] : [...AWS_OFFBOARD_STEPS];
  }

  /**
   * A tier change, in the same stack:
   * 1. `stack-stage`: the source tier's program with the target placement staged beside it (the
   *    same resources, URNs included, that the target's program creates), routing unchanged;
   * 2. the row move, on the staged placement: the local target's steps and code (copy in one
   *    snapshot, logical catch-up, full verification, a per-tenant write freeze, drain, verify);
   * 3. `stack-up`: the target tier's program; its secret version is the routing flip, and the
   *    source placement leaves the stack, retained, read-only, until the window ends;
   * 4. `release`: the target writable, the slot dropped.
   */
  promotionSteps(params: PromotionParams): AwsPromotionStep[] {
    assertPromotion(params);
    if (params.rollbackOf) {
      // The current placement frozen and copied back; the original's program, with the current one
      // staged, flips routing back; the original writable; the current placement deleted by the stack.
      return [...RESTORE_STEPS, 'stack-back', 'release-back', 'stack-discard', 'stack-unstage'];
    }
    return ['stack-stage', ...MOVE_STEPS, 'stack-up', 'release'];
  }

  /**
   * Before the routing flip: the source writable again and the slot dropped, then the staged
   * placement deleted by the stack (`stack-discard` makes it deletable: no deletion protection,
   * nothing retained; `stack-unstage`, the source program alone, deletes it, an RDS instance with
   * its final snapshot). Past the flip, `abort-data` refuses: the promotion is finished forward.
   */
  promotionAbortSteps(params: PromotionParams): AwsPromotionStep[] {
    assertPromotion(params);
    // A failed rollback: the tenant stays where it is, writable, its stack converged to that program.
    if (params.rollbackOf) return ['abort-rollback-data', 'stack-current'];
    return ['abort-data', 'stack-discard', 'stack-unstage'];
  }

  /**
   * Once the window is over, the source placement (outside the stack since the cutover, frozen)
   * is deleted with the shared providers, as the stack would have: the pool rows in batches, or
   * the bridge schema with its grants and roles.
   */
  async cleanupPromotion(
    tenant: StepTenant,
    params: PromotionParams,
    operationId: string,
    report?: (patch: Record<string, unknown>) => Promise<void>,
  ): Promise<void> {
    const mover = await this.rowMover();
    const { dp, rows } = mover;
    const current = await getSecretValue(this.secrets, tenantSecretName(tenant.slug));
    const from = this.sourcePlacement(dp, tenant, params.fromTier);
    if (routedTo(current?.value, { host: dp.host, ...from })) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the tenant is routed to the ${params.fromTier} placement again; it is not deleted`,
      );
    }
    // This promotion's slot and publication, were they left behind (never another promotion's).
    await rows.dropReplication(replicationNames(operationId));
    await dropSourcePlacement(mover, tenant, from, this.opts.promotion?.freezeWaitMs);
    await report?.({ sourceDeleted: true });
  }

  async sweepPromotionOrphans(
    liveOperationIds: string[],
    idleOperationIds: string[] = [],
  ): Promise<string[]> {
    if (!this.opts.platform.sharedCluster) return [];
    const { rows } = await this.rowMover();
    return rows.sweepOrphans(liveOperationIds, idleOperationIds);
  }

  /** The shared cluster's admin URL, from its admin secret (RDS JSON shape). */
  private async sharedClusterUrl(): Promise<string> {
    const cluster = this.opts.platform.sharedCluster;
    if (!cluster) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        'promotions need the shared cluster (tenantry:sharedClusterSecretName)',
      );
    }
    const secret = await getSecretValue(this.secrets, cluster.adminSecretName);
    if (!secret) throw new TenantryError('SECRET_UNAVAILABLE', 'the shared cluster admin secret is missing');
    return adminUrl(secret.value, cluster.ssl);
  }

  private rowMover(): Promise<RowMover> {
    this.mover ??= (async () => {
      const dp = new DataPlane(await this.sharedClusterUrl(), { maxConnections: 4 });
      const { catalog, tenantSchema } = loadProgramTemplates(this.settings.templatesDir);
      const rows = new RowMove(dp, {
        maxLagBytes: 1024 ** 3,
        freezeBelowChanges: 50,
        maxCatchUpMs: 60_000,
        ...this.opts.promotion,
        // A rollback moves from the promotion's target back to its source.
        placements: (t, params, progress) =>
          params.rollbackOf
            ? { from: this.targetPlacement(progress), to: this.sourcePlacement(dp, t, params.toTier) }
            : { from: this.sourcePlacement(dp, t, params.fromTier), to: this.targetPlacement(progress) },
      });
      return { dp, rows, catalog, template: tenantSchema };
    })();
    this.mover.catch(() => {
      this.mover = undefined; // a missing secret or an unreachable cluster: try again next time
    });
    return this.mover;
  }

  /** Where the source rows are: the pool, or the tenant's bridge schema, on the shared cluster. */
  private sourcePlacement(dp: DataPlane, t: StepTenant, tier: Tier): Placement {
    if (tier !== 'pool' && tier !== 'bridge') {
      throw new TenantryError('PROMOTION_NOT_ALLOWED', `a ${tier} tenant is not promoted`);
    }
    const pool = this.opts.platform.pool;
    return managedPlacementOf(
      {
        database: dp.names.database,
        poolSchema: pool.schema,
        poolRole: pool.appRole,
        tenantSetting: pool.tenantSetting,
      },
      t,
      tier,
    );
  }

  /** The staged placement on its server, as runRowStep resolved it into the step's progress. */
  private targetPlacement(progress: Record<string, unknown>): Placement {
    const resolved = progress.targetPlacement as Placement | undefined;
    if (!resolved) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        'the staged target placement is unknown (stack-stage did not run)',
      );
    }
    return resolved;
  }

  /** The staged placement, its admin credentials (a silo's RDS master secret) read once per operation. */
  private async resolveTarget(operationId: string, staged: StagedTarget | undefined): Promise<Placement> {
    if (!staged) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        'the staged target placement is unknown (stack-stage did not run)',
      );
    }
    const known = this.targets.get(operationId);
    if (known) return known;
    const base: Placement = {
      tier: staged.tier,
      database: staged.database,
      schema: staged.schema,
      shared: false,
      writers: [staged.user],
      managed: true,
    };
    if (staged.tier === 'silo') {
      if (!staged.adminSecretArn)
        throw new TenantryError('PROVIDER_FAILED', 'the staged silo has no admin secret');
      const url = await this.siloAdminUrl(staged.adminSecretArn, staged);
      base.server = { urlFor: (database) => withDatabase(url, database) };
    }
    this.targets.set(operationId, base);
    return base;
  }

  /**
   * A silo's (or an account tenant's) own RDS instance as its admin (on its `postgres` database;
   * `withDatabase` for the tenant's), from its stack's outputs (host, port, database, adminSecretArn:
   * the RDS-managed master secret; an account tenant's is in its account, read there through the role
   * it was vended with, `accountId` saying which). The caller closes it.
   */
  private async siloDataPlane(t: StepTenant, outputs: Record<string, unknown>): Promise<DataPlane> {
    const o = plainOutputs(outputs, false);
    if (typeof o.adminSecretArn !== 'string' || typeof o.host !== 'string' || typeof o.database !== 'string')
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the ${t.tier}'s stack outputs name no instance or admin secret (adminSecretArn: an up of its stack records it)`,
      );
    const arn = o.adminSecretArn;
    const secret =
      t.tier === 'account'
        ? await this.readInTenantAccount(t, (client) => getSecretValue(client, arn), {
            purpose: 'admin',
            ...(typeof o.accountId === 'string' ? { accountId: o.accountId } : {}),
          })
        : undefined;
    const url = await this.siloAdminUrl(
      arn,
      { host: o.host, port: Number(o.port ?? 5432), database: 'postgres' },
      secret,
    );
    return new DataPlane(url, { maxConnections: 1 });
  }

  /**
   * A silo instance's admin URL, its credentials from the RDS-managed master secret (by ARN, in the
   * platform account unless the caller read it elsewhere: `read`).
   */
  private async siloAdminUrl(
    arn: string,
    where: { host: string; port: number; database: string },
    read?: Awaited<ReturnType<typeof getSecretValue>>,
  ): Promise<string> {
    const secret = read === undefined ? await getSecretValue(this.secrets, arn) : read;
    if (!secret) throw new TenantryError('SECRET_UNAVAILABLE', "the instance's admin secret is missing");
    return adminUrl(
      { ...secret.value, host: where.host, port: where.port, dbname: where.database },
      // An RDS silo forces TLS (rds.force_ssl): always verified, whatever the shared cluster's setting.
      this.opts.siloTls ?? true,
    );
  }

  /** Deterministic per tenant id: re-runs compute the same root email, a reused slug gets a new one. */
  static accountEmailSuffix(tenantId: string): string {
    return createHash('sha256').update(`tenantry-account:${tenantId}`).digest('hex').slice(0, 12);
  }

  /** The job of one step, with the tier whose program it runs (and what it stages). Exposed for tests. */
  jobFor(
    op: PulumiOp,
    t: StepTenant,
    tier: Tier = t.tier,
    stage?: { tier: Tier; discard?: boolean },
  ): PulumiJob {
    return buildJob(op, t, tier, this.settings, stage);
  }

  /**
   * Account-tier runs also take one of the (at most 5) account-operation slots, before a Pulumi slot.
   * Every run gets the stack's persisted settings, the pinned versions and what makes a lock stale;
   * settings the child reports as new are persisted before it goes on.
   */
  private async run(job: PulumiJob, opts: RunOptions): Promise<PulumiResult> {
    const store = this.opts.stackSettings;
    const persisted = await store?.get(job.stackName);
    const pins = this.opts.pins === undefined ? PINNED_VERSIONS : this.opts.pins;
    const full: PulumiJob = {
      ...job,
      ...(persisted ? { stackSettings: persisted } : {}),
      ...(pins ? { pins } : {}),
      staleLock: { maxAgeMs: this.stale.maxAgeMs, hostname: this.stale.hostname ?? os.hostname() },
    };
    const withSettings: RunOptions = store
      ? { ...opts, onStackSettings: (s) => store.save(job.stackName, s) }
      : opts;
    const run = () => this.pool.run(full, withSettings);
    return job.input.tier === 'account' ? this.accountSem.run(run) : run();
  }

  /** Lifecycle operations on this target: exports, suspension, limits (engine/aws-exports.ts, aws-suspension.ts). */
  lifecycleSteps(kind: LifecycleKind, tier: Tier): string[] {
    return awsLifecycleSteps(kind, tier, this.opts.exports !== undefined);
  }

  /** An onboarding from an archive in S3, on any tier: its rows loaded after the stack's `up`, then checked. */
  restoreSteps(_tier: Tier): string[] {
    return awsRestoreSteps(this.opts.exports !== undefined);
  }

  async runStep(ctx: StepContext): Promise<StepOutputs | undefined> {
    const t = ctx.tenant;
    const step = ctx.step;
    if (ctx.kind === 'promote' && isAwsMoverStep(step)) return this.runRowStep(ctx, step);
    // An export (its own operation, or an offboarding's first step) and an onboarding's restore; a
    // promotion's row steps of the same names are the row move's (above).
    const archiveStep =
      (step === 'export' && (ctx.kind === 'export' || ctx.kind === 'offboard')) ||
      (ctx.kind === 'onboard' && (step === 'restore' || step === 'verify-restore'));
    if (archiveStep) {
      const exports = this.opts.exports;
      if (!exports) throw new TenantryError('PROVIDER_FAILED', 'exports need TENANTRY_EXPORT_BUCKET');
      let silo: DataPlane | undefined;
      const where = async () => {
        if (ownInstance(t.tier)) {
          // Its own RDS instance, as its admin; an onboarding's `up` reported where it is (progress).
          const at = { ...(t.outputs ?? {}), ...((ctx.progress?.stackOutputs as object | undefined) ?? {}) };
          const instance = await this.siloDataPlane(t, at);
          silo = instance;
          const database = String(at.database);
          return {
            dp: { withData: <T>(fn: (db: Queryable) => Promise<T>) => instance.withDatabase(database, fn) },
            placement: siloPlacement(t, database),
          };
        }
        const { dp } = await this.rowMover();
        return { dp, placement: this.sourcePlacement(dp, t, t.tier) };
      };
      try {
        await (step === 'export' ? runAwsExport(ctx, exports, where) : runAwsRestore(ctx, exports, where));
      } finally {
        await (silo as DataPlane | undefined)?.close();
      }
      return undefined;
    }
    // A pool tenant's suspension: its rows frozen on the shared cluster (engine/aws-suspension.ts).
    if (
      (ctx.kind === 'suspend' && step === 'suspend-writes') ||
      (ctx.kind === 'reactivate' && step === 'resume-writes')
    ) {
      const { dp } = await this.rowMover();
      const placement = this.sourcePlacement(dp, t, t.tier);
      await dp.withData((db) =>
        step === 'suspend-writes'
          ? suspendPoolWrites(db, t.id, placement, this.opts.promotion?.freezeWaitMs)
          : resumePoolWrites(db, t.id, placement),
      );
      return undefined;
    }
    // A bridge or silo tenant's suspension, reactivation or limit overrides: an `up` of its stack with
    // that state (engine/aws-suspension.ts); a suspension's then ends the login's open sessions.
    if (
      (ctx.kind === 'suspend' && step === 'suspend-logins') ||
      (ctx.kind === 'reactivate' && step === 'resume-logins') ||
      (ctx.kind === 'update' && step === 'limits')
    ) {
      const job = this.jobFor('up', { ...t, suspended: suspendedForStep(ctx.kind, t.suspended) });
      const result = await this.runJob(ctx, job, t.tier);
      if (step === 'suspend-logins') await this.endLoginSessions(t, result.outputs);
      return this.recordedOutputs(result, job);
    }
    if (!isAwsStackStep(step)) throw new TenantryError('PROVIDER_FAILED', `unknown aws step ${step}`);
    const op = STEP_OPS[step];
    let tier = t.tier;
    let stage: { tier: Tier; discard?: boolean } | undefined;
    /** An `up` that undoes: a promotion's discard and unstage, a failed rollback's return. */
    let undoing = false;
    if (ctx.kind === 'promote') {
      // The tenant's recorded tier is still the source one until the operation completes.
      const params = assertPromotion(ctx.params as Partial<PromotionParams> | undefined);
      // The shared-cluster tier (pool, bridge) and the one above it, whichever way the move goes.
      const [lower, upper] = params.rollbackOf
        ? [params.toTier, params.fromTier]
        : [params.fromTier, params.toTier];
      switch (step) {
        case 'stack-stage':
        case 'stack-back':
          tier = lower;
          stage = { tier: upper };
          break;
        case 'stack-discard':
          tier = lower;
          stage = { tier: upper, discard: true };
          undoing = !params.rollbackOf;
          break;
        case 'stack-unstage':
          tier = lower;
          undoing = !params.rollbackOf;
          break;
        case 'stack-up':
          tier = upper;
          break;
        case 'stack-current':
          tier = params.fromTier;
          undoing = true;
          break;
        default:
          throw new TenantryError('PROVIDER_FAILED', `${step} is not a promotion step`);
      }
      if (undoing) await this.assertNotFlipped(ctx, params, ctx.progress?.target as StagedTarget | undefined);
    } else if (step !== 'stack-up' && op === 'up') {
      throw new TenantryError('PROVIDER_FAILED', `${step} is a promotion step`);
    }
    const job = this.jobFor(op, t, tier, stage);
    const result = await this.runJob(ctx, job, tier);
    if (op === 'unprotect') {
      // The account the destroy leaves open (its stack retains it), for the closure queue.
      const accountId = plainOutputs(result.outputs, false).accountId;
      if (t.tier === 'account' && typeof accountId === 'string') await ctx.report?.({ accountId });
      return undefined;
    }
    if (op === 'destroy') {
      if (t.tier === 'account') await this.queueClosure(ctx);
      return { programVersion: null, stack: null };
    }
    if (ctx.kind === 'onboard' && ownInstance(t.tier) && ctx.params?.fromExport) {
      // The restore steps after it reach the instance through these (the tenant's record is read
      // before this attempt's outputs are).
      await ctx.report?.({ stackOutputs: plainOutputs(result.outputs, false) });
    }
    if (ctx.kind === 'promote') {
      if (step === 'stack-stage') {
        const target = stagedTarget(result.outputs);
        await ctx.report?.({ target });
        return undefined;
      }
      if (step !== 'stack-up' && step !== 'stack-back') return undefined;
      // The secret's new version is the routing flip (back, for a rollback).
      if (step === 'stack-up' && !ctx.progress?.cutoverAt) {
        await ctx.report?.({ cutoverAt: new Date().toISOString() });
      }
    }
    return this.recordedOutputs(result, job);
  }

  /** One job of a step, its engine events as the step's resource progress, its failure classified. */
  private async runJob(ctx: StepContext, job: PulumiJob, tier: Tier): Promise<PulumiResult> {
    try {
      return await this.run(job, {
        signal: ctx.signal,
        timeoutMs: this.opts.timeoutMs,
        onEvent: (e) => {
          const p = progressFromEvent(e);
          if (p) ctx.onResourceEvent?.(p);
        },
      });
    } catch (e) {
      throw toTenantryError(e, { stack: job.stackName, op: job.op, tier }, this.stale);
    }
  }

  /** What an `up` records with the tenant: its plain outputs (no staged placement), the program version, the stack. */
  private recordedOutputs(result: PulumiResult, job: PulumiJob): StepOutputs {
    const outputs = Object.entries(plainOutputs(result.outputs, false)).filter(
      ([k]) => !k.startsWith('staged'),
    );
    return {
      ...Object.fromEntries(outputs),
      programVersion: this.programVersion,
      stack: job.stackName,
    };
  }

  /**
   * After a suspension's `up` made the tenant's login NOLOGIN: its open sessions ended, through the
   * placement's admin (endRoleSessions, which states NOLOGIN again, as the stack now has it). A bridge's
   * on the shared cluster; a silo's or an account tenant's on its RDS instance, reached through the
   * master secret the `up` reported (`adminSecretArn`; in the tenant's account for the account tier).
   */
  private async endLoginSessions(t: StepTenant, outputs: Record<string, unknown>): Promise<void> {
    const login = tenantObjectName(t.slug);
    if (!ownInstance(t.tier)) {
      const { dp } = await this.rowMover();
      await dp.withData((db) => endRoleSessions(db, login));
      return;
    }
    const dp = await this.siloDataPlane(t, outputs);
    try {
      await dp.withData((db) => endRoleSessions(db, login));
    } finally {
      await dp.close();
    }
  }

  /**
   * Before a step that undoes a promotion (or a rollback): routing must not have flipped yet. When
   * the secret says it did, or cannot be read, nothing is undone: the error is forward-only, which
   * stops the abort (its remaining steps would write the old descriptor back, or delete the
   * placement the tenant now writes to), and the operation is finished forward by a resume.
   */
  private async assertNotFlipped(
    ctx: StepContext,
    params: PromotionParams,
    staged: StagedTarget | undefined,
  ): Promise<void> {
    let flipped: boolean;
    try {
      const current = await getSecretValue(this.secrets, tenantSecretName(ctx.tenant.slug));
      if (params.rollbackOf) {
        // A rollback flips back to the original placement, on the shared cluster.
        const { dp } = await this.rowMover();
        flipped = routedTo(current?.value, {
          host: dp.host,
          ...this.sourcePlacement(dp, ctx.tenant, params.toTier),
        });
      } else {
        flipped = staged !== undefined && routedTo(current?.value, staged);
      }
    } catch (e) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the tenant's routing could not be read, so nothing is undone: ${(e as Error).message}`,
        { context: { forwardOnly: true }, cause: e },
      );
    }
    if (flipped) {
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the ${params.rollbackOf ? 'rollback' : 'cutover'} already flipped routing; it can only be finished forward (resume it)`,
        { context: { forwardOnly: true } },
      );
    }
  }

  /** A step of the row move, on the shared cluster and the staged target. */
  private async runRowStep(ctx: StepContext, step: AwsMoverStep): Promise<StepOutputs | undefined> {
    const params = assertPromotion(ctx.params as Partial<PromotionParams> | undefined);
    const progress = { ...(ctx.progress ?? {}) };
    // A rollback's placement to leave is the one its promotion staged.
    if (params.rollbackOf && params.promotedTo) progress.target = params.promotedTo;
    const staged = progress.target as StagedTarget | undefined;
    if (step === 'abort-data' || step === 'abort-rollback-data') {
      if (!staged) return undefined; // nothing was staged, nothing replicated or frozen
      await this.assertNotFlipped(ctx, params, staged);
    }
    const { rows } = await this.rowMover();
    progress.targetPlacement = await this.resolveTarget(ctx.operationId, staged);
    if (isRowMoveStep(step)) return rows.runStep({ ...ctx, progress });
    await this.routeData(rows, { ...ctx, progress }, params, step);
    this.targets.delete(ctx.operationId);
    return undefined;
  }

  /**
   * This target's routing on the data around the row move (the flips themselves are the stack's
   * `up`s): where the write freeze is lifted on the aws target, and the move's data undone before
   * routing flipped (the caller checked). The staged placement itself is the stack's to delete.
   */
  private async routeData(
    rows: RowMove,
    ctx: StepContext,
    params: PromotionParams,
    step: AwsDataRoutingStep,
  ): Promise<void> {
    const t = ctx.tenant;
    const progress = ctx.progress ?? {};
    const { from, to } = rows.placements(t, params, progress);
    const names = replicationNames(params.rollbackOf ?? ctx.operationId);
    const report = ctx.report ?? (async () => {});
    switch (step) {
      case 'release':
        // After `stack-up` flipped routing: the target becomes the tenant's, writable (the write
        // freeze ends here), and the slot that holds every shared tenant's WAL is dropped. Forward only.
        try {
          await rows.unfreeze(t, to, ctx.operationId);
          const parsed = Date.parse(String(progress.cutoverAt ?? ''));
          const cutoverAt = Number.isNaN(parsed) ? Date.now() : parsed;
          await report(cutoverReport(progress, cutoverAt, this.rollbackWindowMs));
          await rows.clearMeta(to, names);
          await rows.dropReplication(names);
        } catch (e) {
          throw forwardOnly(e, 'the cutover flipped routing and must be finished forward');
        } finally {
          await rows.endSessions(ctx.operationId);
        }
        return;
      case 'release-back':
        // A rollback, once `stack-back` flipped routing back: the original writable again (its
        // write freeze ends here).
        await rows.unfreeze(t, to);
        await report({ writeFreezeMs: freezeLasted(progress) });
        return;
      case 'abort-rollback-data':
        // A rollback that failed before routing flipped back: the tenant stays, writable.
        await rows.unfreeze(t, from);
        return;
      case 'abort-data':
        // Before routing flipped: the source writable again, the slot gone.
        await rows.endSessions(ctx.operationId);
        await rows.unfreeze(t, from);
        await rows.dropReplication(names);
        return;
      default: {
        const unknown: never = step; // every data routing step has its case
        throw new TenantryError('PROVIDER_FAILED', `unknown promotion step ${unknown}`);
      }
    }
  }

  /** How long a promotion's source is kept, read-only, after its cutover. */
  private get rollbackWindowMs(): number {
    return this.opts.promotionRollbackWindowMs ?? 24 * 3600_000;
  }

  /**
   * Drift of one stack without side effects: `preview({ refresh: true })` in a child process on
   * the existing stack only (never created for a check), its engine events returned for
   * `driftFromPreviewEvents` (never the summary counts, pulumi#19443).
   */
  async previewRefresh(t: StepTenant, signal?: AbortSignal): Promise<EngineEvent[]> {
    const events: EngineEvent[] = [];
    const job = this.jobFor('preview-refresh', t);
    try {
      await this.run(job, {
        ...(signal ? { signal } : {}),
        timeoutMs: this.opts.timeoutMs,
        onEvent: (e) => events.push(e),
      });
      return events;
    } catch (e) {
      throw toTenantryError(e, { stack: job.stackName, op: 'preview-refresh' }, this.stale);
    }
  }

  /**
   * Drift of suspended pool tenants, which no stack shows (their freeze is no stack resource): which of
   * them have their rows frozen for the suspension on the shared cluster, and where (`<database>.<schema>`).
   */
  async suspendedPoolFreezes(tenantIds: string[]): Promise<{ name: string; frozen: Set<string> }> {
    const { dp } = await this.rowMover();
    const schema = this.opts.platform.pool.schema;
    const frozen = await dp.withData((db) => suspensionFreezes(db, schema, tenantIds));
    return { name: `${dp.names.database}.${schema}`, frozen: new Set(frozen) };
  }

  /**
   * The descriptor from the tenant's Secrets Manager secret; the password stays there. An
   * account-tier tenant's secret lives in its own account: it is read there, through the role
   * the account was vended with.
   */
  async connection(t: StepTenant): Promise<ConnectionDescriptor> {
    const name = tenantSecretName(t.slug);
    const secret =
      t.tier === 'account'
        ? await this.readInTenantAccount(t, (client) => getSecretValue(client, name), {
            purpose: 'connection',
          })
        : await getSecretValue(this.secrets, name);
    if (!secret) throw new TenantryError('SECRET_UNAVAILABLE', 'the tenant has no connection secret');
    const v = secret.value as Partial<ConnectionDescriptor>;
    return {
      tenantId: t.id,
      tier: t.tier,
      host: String(v.host ?? ''),
      port: Number(v.port ?? 5432),
      database: String(v.database ?? ''),
      ...(v.schema ? { schema: String(v.schema) } : {}),
      user: String(v.user ?? ''),
      secretRef: secret.arn,
      ...(v.tenantSetting ? { tenantSetting: String(v.tenantSetting) } : {}),
    };
  }

  /**
   * A read of Secrets Manager inside an account tenant's own account, through the role it was vended
   * with. The account is the one its stack reported (`accountId`), or found by its root email.
   */
  private async readInTenantAccount<T>(
    t: StepTenant,
    read: (client: SecretsManagerClient) => Promise<T>,
    opts: { purpose: 'connection' | 'admin'; accountId?: string },
  ): Promise<T> {
    const account = this.opts.platform.account;
    if (!account) throw new TenantryError('SECRET_UNAVAILABLE', 'the account tier is not configured');
    let accountId = opts.accountId ?? this.accountIds.get(t.id);
    if (!accountId) {
      this.organizations ??=
        this.opts.clients?.organizations ?? new OrganizationsClient(this.clientConfig('organizations'));
      const email = accountRootEmail(t.slug, AwsEngine.accountEmailSuffix(t.id), account.emailDomain);
      const found = await findActiveAccountIdByEmail(this.organizations, email);
      if (!found) throw new TenantryError('SECRET_UNAVAILABLE', 'the tenant has no active account');
      accountId = found;
      this.accountIds.set(t.id, accountId);
    }
    this.sts ??= this.opts.clients?.sts ?? new STSClient(this.clientConfig('sts'));
    const credentials = await assumeRole(
      this.sts,
      memberRoleArn(accountId, account.roleName),
      `tenantry-${opts.purpose}-${t.slug}`,
    );
    const client =
      this.opts.clients?.memberSecrets?.(credentials) ??
      new SecretsManagerClient({ ...this.clientConfig('secretsmanager'), credentials });
    try {
      return await read(client);
    } finally {
      if (!this.opts.clients?.memberSecrets) client.destroy();
    }
  }

  /**
   * After an account tenant's destroy: its account, still open (CloseAccount is capped), is queued for
   * closure. The id is the one offboarding's `up` reported, or looked up by the tenant's root email.
   */
  private async queueClosure(ctx: StepContext): Promise<void> {
    const t = ctx.tenant;
    let accountId = typeof ctx.progress?.accountId === 'string' ? ctx.progress.accountId : undefined;
    const account = this.opts.platform.account;
    if (!accountId && account) {
      this.organizations ??=
        this.opts.clients?.organizations ?? new OrganizationsClient(this.clientConfig('organizations'));
      const email = accountRootEmail(t.slug, AwsEngine.accountEmailSuffix(t.id), account.emailDomain);
      accountId = (await findActiveAccountIdByEmail(this.organizations, email)) ?? undefined;
    }
    if (!accountId) return; // no account was ever vended (an onboarding that failed before it)
    if (!this.opts.closures) {
      throw new TenantryError('PROVIDER_FAILED', 'the account closure queue is not configured', {
        context: { accountId },
      });
    }
    await this.opts.closures.enqueue(t, accountId, ctx.operationId);
  }

  async close(): Promise<void> {
    const mover = await this.mover?.catch(() => undefined);
    await mover?.rows.close();
    await mover?.dp.close();
    this.secrets.destroy();
    this.organizations?.destroy();
    this.sts?.destroy();
  }
}

function assertPromotion(params: Partial<PromotionParams> | undefined): PromotionParams {
  const from = params?.fromTier;
  const to = params?.toTier;
  if (!from || !to || !TIERS.includes(from) || !TIERS.includes(to) || from === to) {
    throw new TenantryError('PROVIDER_FAILED', 'a promotion needs distinct fromTier and toTier', {
      context: { params },
    });
  }
  return params as PromotionParams;
}

interface RowMover {
  dp: DataPlane;
  rows: RowMove;
  catalog: TierCatalog;
  template: TenantTemplate;
}

/** The staged target from the staging `up`'s outputs (plain, non-secret: see stacks/common/program.ts). */
export function stagedTarget(outputs: Record<string, unknown>): StagedTarget {
  const o = plainOutputs(outputs, false);
  const tier = o.stagedTier;
  if (
    (tier !== 'bridge' && tier !== 'silo') ||
    typeof o.stagedHost !== 'string' ||
    typeof o.stagedDatabase !== 'string' ||
    typeof o.stagedSchema !== 'string' ||
    typeof o.stagedUser !== 'string'
  ) {
    throw new TenantryError('PROVIDER_FAILED', 'the staging up reported no staged placement');
  }
  return {
    tier,
    host: o.stagedHost,
    port: Number(o.stagedPort ?? 5432),
    database: o.stagedDatabase,
    schema: o.stagedSchema,
    user: o.stagedUser,
    ...(typeof o.stagedAdminSecretArn === 'string' && o.stagedAdminSecretArn !== ''
      ? { adminSecretArn: o.stagedAdminSecretArn }
      : {}),
  };
}

/** The tiers on an RDS instance of their own (an account tenant's inside its account), not the shared cluster. */
function ownInstance(tier: Tier): boolean {
  return tier === 'silo' || tier === 'account';
}

/** A silo's (or an account tenant's) tables: schema `app` of its own database, written by its login alone. */
function siloPlacement(t: StepTenant, database: string): Placement {
  return {
    tier: t.tier,
    database,
    schema: SILO_SCHEMA,
    shared: false,
    writers: [tenantObjectName(t.slug)],
    managed: true,
  };
}

/** Whether a connection descriptor (the tenant's secret) points at a placement. */
function routedTo(
  descriptor: Record<string, unknown> | undefined,
  p: { host: string; database: string; schema: string },
): boolean {
  return (
    descriptor?.host === p.host && descriptor?.database === p.database && descriptor?.schema === p.schema
  );
}

/** An admin URL from an RDS-shaped secret (username, password, host, port, dbname). */
export function adminUrl(v: Record<string, unknown>, ssl: boolean): string {
  const { username, password, host, dbname } = v;
  if (typeof username !== 'string' || typeof password !== 'string' || typeof host !== 'string') {
    throw new TenantryError('SECRET_UNAVAILABLE', 'an admin secret must hold username, password and host');
  }
  const u = new URL('postgres://localhost');
  u.hostname = host;
  u.port = String(Number(v.port ?? 5432));
  u.username = encodeURIComponent(username);
  u.password = encodeURIComponent(password);
  u.pathname = `/${encodeURIComponent(typeof dbname === 'string' ? dbname : 'postgres')}`;
  // Verified TLS: the server's certificate must chain to a trusted CA (the RDS bundle through
  // NODE_EXTRA_CA_CERTS) and name the host.
  if (ssl) u.searchParams.set('sslmode', 'verify-full');
  return u.toString();
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

/**
 * Deletes a promotion's source placement on the shared cluster, as the stack's providers would
 * have: the pool rows in batches (the tenant stays frozen, marked moved), or the bridge schema,
 * its grants and both of its roles.
 */
async function dropSourcePlacement(
  { dp, catalog, template }: RowMover,
  t: StepTenant,
  from: Placement,
  freezeWaitMs = 15_000,
): Promise<void> {
  if (from.shared) {
    await dp.withData((db) =>
      poolMembershipProvider.delete(db, {
        schema: from.schema,
        tenantId: t.id,
        slug: t.slug,
        setting: from.context!.setting,
        writers: from.writers,
        freezeReason: 'moved',
        freezeWaitMs,
      }),
    );
    return;
  }
  const name = tenantObjectName(t.slug);
  const owner = tenantOwnerRoleName(t.slug);
  const limits = catalog.tiers.bridge.role;
  await dp.withData(async (db) => {
    await grantsProvider.delete(db, { database: from.database, schema: from.schema, role: name, owner });
    await schemaProvider.delete(db, { name: from.schema, owner, template });
    await unfreezeTenant(db, from.schema, t.id);
    await roleProvider.delete(db, { name, ...limits });
    await roleProvider.delete(db, { name: owner, ...limits });
  });
}
