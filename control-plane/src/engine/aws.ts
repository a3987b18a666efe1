import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { OrganizationsClient } from '@aws-sdk/client-organizations';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { STSClient } from '@aws-sdk/client-sts';
import type { EngineEvent } from '@pulumi/pulumi/automation/index.js';
import { accountRootEmail } from '../../../stacks/common/input.js';
import { DEFAULT_TEMPLATES_DIR } from '../../../stacks/common/templates.js';
import { type AwsCredentials, assumeRole, findActiveAccountIdByEmail } from '../aws/accounts.js';
import { memberRoleArn } from '../aws/arn.js';
import { getSecretValue } from '../aws/secrets.js';
import { accountOperations, type Semaphore } from '../aws/semaphore.js';
import { TenantryError } from '../domain/errors.js';
import { tenantSecretName } from '../domain/naming.js';
import type {
  ConnectionDescriptor,
  Engine,
  PromotionParams,
  StepContext,
  StepOutputs,
  StepTenant,
} from '../domain/ports.js';
import { TIERS, type Tier } from '../domain/tiers.js';
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
} from './pulumi/runner.js';
import { programContentHash, programVersion } from './pulumi/version.js';

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
  /** How long a promotion can be rolled back (an `up` with the source tier). Default 24 h. */
  promotionRollbackWindowMs?: number;
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
const STEP_OPS: Record<string, PulumiOp> = {
  'stack-up': 'up',
  'stack-retain-source': 'up',
  'stack-unprotect': 'unprotect',
  'stack-destroy': 'destroy',
};

/**
 * The aws target: one Pulumi stack per tenant (`tenant-<slug>`), driven through the Automation
 * API in child processes, with bounded concurrency (and at most 5 account-tier runs at once, on
 * top of that bound). Postgres-level resources of pool and bridge tenants run inside the stack
 * through the dynamic provider that wraps the shared providers.
 */
export class AwsEngine implements Engine {
  readonly target = 'aws' as const;
  readonly rollsBackFailedOnboarding = false;
  /** The `up` re-provisions the target tier; the rows are not moved into RDS yet (docs/aws.md). */
  readonly promotionMovesRows = false;
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
  steps(kind: 'onboard' | 'offboard'): string[] {
    return kind === 'onboard' ? ['stack-up'] : ['stack-unprotect', 'stack-destroy'];
  }

  /**
   * A tier change is an `up` of the same stack with the target tier's program: the key and the
   * secret keep their URNs (updated in place), the target placement is created, and the source
   * placement is dropped from the stack without being deleted (every `up` marks it
   * retainOnDelete; `stack-retain-source` re-applies the source program first so that holds even
   * for a stack last written by an older program). The rows are not moved on this target (see
   * docs/aws.md). A rollback is the same with the tiers swapped.
   */
  promotionSteps(params: PromotionParams): string[] {
    assertPromotion(params);
    return ['stack-retain-source', 'stack-up'];
  }

  /**
   * Nothing to undo: the source placement is never deleted by a promotion's `up`, and a failed
   * `up` is left as it is, like a failed onboarding on this target. The tenant stays on its
   * source tier; the next promotion (or a drift repair) converges the stack from there.
   */
  promotionAbortSteps(_params: PromotionParams): string[] {
    return [];
  }

  /**
   * The source placement holds the tenant's only copy of its rows on this target (they are not
   * moved), so nothing is deleted when the rollback window ends; see docs/aws.md.
   */
  async cleanupPromotion(): Promise<void> {}

  async sweepPromotionOrphans(): Promise<string[]> {
    return [];
  }

  /** Deterministic per tenant id: re-runs compute the same root email, a reused slug gets a new one. */
  static accountEmailSuffix(tenantId: string): string {
    return createHash('sha256').update(`tenantry-account:${tenantId}`).digest('hex').slice(0, 12);
  }

  /** The job of one step, with the tier whose program it runs. Exposed for tests. */
  jobFor(op: PulumiOp, t: StepTenant, tier: Tier = t.tier): PulumiJob {
    return buildJob(op, t, tier, this.settings);
  }

  /** Account-tier runs also take one of the (at most 5) account-operation slots, before a Pulumi slot. */
  private run(job: PulumiJob, opts: RunOptions): Promise<PulumiResult> {
    const run = () => this.pool.run(job, opts);
    return job.input.tier === 'account' ? this.accountSem.run(run) : run();
  }

  async runStep(ctx: StepContext): Promise<StepOutputs | undefined> {
    const t = ctx.tenant;
    const op = STEP_OPS[ctx.step];
    if (!op) throw new TenantryError('PROVIDER_FAILED', `unknown aws step ${ctx.step}`);
    let tier = t.tier;
    if (ctx.kind === 'promote') {
      // The tenant's recorded tier is still the source one until the operation completes.
      const params = assertPromotion(ctx.params as Partial<PromotionParams> | undefined);
      tier = ctx.step === 'stack-retain-source' ? params.fromTier : params.toTier;
    } else if (ctx.step === 'stack-retain-source') {
      throw new TenantryError('PROVIDER_FAILED', 'stack-retain-source is a promotion step');
    }
    const job = this.jobFor(op, t, tier);
    let result: PulumiResult;
    try {
      result = await this.run(job, {
        signal: ctx.signal,
        timeoutMs: this.opts.timeoutMs,
        onEvent: (e) => {
          const p = progressFromEvent(e);
          if (p) ctx.onResourceEvent?.(p);
        },
      });
    } catch (e) {
      throw toTenantryError(e, { stack: job.stackName, op, tier }, this.stale);
    }
    if (op === 'destroy') return { programVersion: null, stack: null };
    if (op === 'unprotect' || ctx.step === 'stack-retain-source') return undefined;
    if (ctx.kind === 'promote' && !(ctx.params as Partial<PromotionParams>).rollbackOf) {
      const until = new Date(Date.now() + (this.opts.promotionRollbackWindowMs ?? 24 * 3600_000));
      await ctx.report?.({ cutoverAt: new Date().toISOString(), rollbackUntil: until.toISOString() });
    }
    return {
      ...plainOutputs(result.outputs, false),
      programVersion: this.programVersion,
      stack: job.stackName,
    };
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
   * The descriptor from the tenant's Secrets Manager secret; the password stays there. An
   * account-tier tenant's secret lives in its own account: it is read there, through the role
   * the account was vended with.
   */
  async connection(t: StepTenant): Promise<ConnectionDescriptor> {
    const name = tenantSecretName(t.slug);
    const secret =
      t.tier === 'account'
        ? await this.readInTenantAccount(t, (client) => getSecretValue(client, name))
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

  private async readInTenantAccount<T>(
    t: StepTenant,
    read: (client: SecretsManagerClient) => Promise<T>,
  ): Promise<T> {
    const account = this.opts.platform.account;
    if (!account) throw new TenantryError('SECRET_UNAVAILABLE', 'the account tier is not configured');
    let accountId = this.accountIds.get(t.id);
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
      `tenantry-connection-${t.slug}`,
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

  async close(): Promise<void> {
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
