import { createHash } from 'node:crypto';
import path from 'node:path';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { EngineEvent } from '@pulumi/pulumi/automation/index.js';
import type { PlatformSettings } from '../../../stacks/common/config.js';
import type { AwsProviderOptions } from '../aws/provider-options.js';
import { getSecretValue } from '../aws/secrets.js';
import { TenantryError } from '../domain/errors.js';
import { tenantSecretName } from '../domain/naming.js';
import type { ConnectionDescriptor, Engine, StepContext, StepOutputs, StepTenant } from '../domain/ports.js';
import type { Tier } from '../domain/tiers.js';
import { buildStackConfig } from './pulumi/config.js';
import { toTenantryError } from './pulumi/errors.js';
import { progressFromEvent } from './pulumi/events.js';
import { PULUMI_PROJECT, stackName, stackWorkspaceDir } from './pulumi/naming.js';
import { type PulumiJob, PulumiPool } from './pulumi/runner.js';

export interface AwsEngineOptions {
  backendUrl: string;
  secretsProvider?: string;
  /** Passed to the Pulumi CLI only (e.g. PULUMI_CONFIG_PASSPHRASE, AWS credentials). */
  envVars: Record<string, string>;
  aws: AwsProviderOptions;
  platform: PlatformSettings;
  workspaceRoot: string;
  concurrency: number;
  timeoutMs: number;
  /** Recorded on each tenant with the outputs of the `up` that applied it. */
  programVersion: string;
}

/**
 * The aws target: one Pulumi stack per tenant (`tenant-<slug>`), driven through the Automation
 * API in child processes, with bounded concurrency. Postgres-level resources of pool and bridge
 * tenants run inside the stack through the dynamic provider that wraps the shared providers.
 */
export class AwsEngine implements Engine {
  readonly target = 'aws' as const;
  readonly rollsBackFailedOnboarding = false;
  private readonly pool: PulumiPool;
  private readonly secrets: SecretsManagerClient;

  constructor(private readonly opts: AwsEngineOptions) {
    this.pool = new PulumiPool(opts.concurrency);
    const endpoint = opts.aws.endpoints?.secretsmanager;
    this.secrets = new SecretsManagerClient({ region: opts.aws.region, ...(endpoint ? { endpoint } : {}) });
  }

  supportsTier(_tier: Tier): boolean {
    return true;
  }

  steps(kind: 'onboard' | 'offboard'): string[] {
    return [kind === 'onboard' ? 'stack-up' : 'stack-destroy'];
  }

  promotionSteps(): string[] {
    throw new TenantryError(
      'PROMOTION_NOT_ALLOWED',
      'online promotion is not available on the aws target yet (it needs the data move against RDS); promote on the local target',
    );
  }

  promotionAbortSteps(): string[] {
    return [];
  }

  async cleanupPromotion(): Promise<void> {}

  async sweepPromotionOrphans(): Promise<string[]> {
    return [];
  }

  /** Deterministic per tenant id: re-runs compute the same root email, a reused slug gets a new one. */
  static accountEmailSuffix(tenantId: string): string {
    return createHash('sha256').update(`tenantry-account:${tenantId}`).digest('hex').slice(0, 12);
  }

  private job(t: StepTenant, op: PulumiJob['op']): PulumiJob {
    const input = {
      tenantId: t.id,
      slug: t.slug,
      tier: t.tier,
      ...(t.tier === 'account' ? { accountEmailSuffix: AwsEngine.accountEmailSuffix(t.id) } : {}),
    };
    return {
      op,
      projectName: PULUMI_PROJECT,
      stackName: stackName(t.slug),
      workDir: stackWorkspaceDir(path.resolve(this.opts.workspaceRoot), t.slug),
      backendUrl: this.opts.backendUrl,
      ...(this.opts.secretsProvider ? { secretsProvider: this.opts.secretsProvider } : {}),
      envVars: this.opts.envVars,
      config: buildStackConfig({ input, platform: this.opts.platform, aws: this.opts.aws }),
      input,
    };
  }

  async runStep(ctx: StepContext): Promise<StepOutputs | undefined> {
    const t = ctx.tenant;
    const op = ctx.step === 'stack-up' ? 'up' : ctx.step === 'stack-destroy' ? 'destroy' : null;
    if (!op) throw new TenantryError('PROVIDER_FAILED', `unknown aws step ${ctx.step}`);
    try {
      const result = await this.pool.run(this.job(t, op), {
        signal: ctx.signal,
        timeoutMs: this.opts.timeoutMs,
        onEvent: (e) => {
          const p = progressFromEvent(e);
          if (p) ctx.onResourceEvent?.(p);
        },
      });
      const outputs: StepOutputs = { programVersion: this.opts.programVersion, stack: stackName(t.slug) };
      for (const [k, v] of Object.entries(result.outputs)) {
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') outputs[k] = v;
      }
      return op === 'destroy' ? { programVersion: null, stack: null } : outputs;
    } catch (e) {
      throw toTenantryError(e, { stack: stackName(t.slug), op });
    }
  }

  /**
   * Drift of one stack without side effects: `preview({ refresh: true })` in a child process, its
   * engine events returned for `driftFromPreviewEvents` (never the summary counts, pulumi#19443).
   */
  async previewRefresh(t: StepTenant, signal?: AbortSignal): Promise<EngineEvent[]> {
    const events: EngineEvent[] = [];
    try {
      await this.pool.run(this.job(t, 'preview-refresh'), {
        ...(signal ? { signal } : {}),
        timeoutMs: this.opts.timeoutMs,
        onEvent: (e) => events.push(e),
      });
      return events;
    } catch (e) {
      throw toTenantryError(e, { stack: stackName(t.slug), op: 'preview-refresh' });
    }
  }

  /** The descriptor from the tenant's Secrets Manager secret; the password stays there. */
  async connection(t: StepTenant): Promise<ConnectionDescriptor> {
    const secret = await getSecretValue(this.secrets, tenantSecretName(t.slug));
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

  async close(): Promise<void> {
    this.secrets.destroy();
  }
}
