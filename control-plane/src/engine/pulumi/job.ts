import path from 'node:path';
import type { PlatformSettings } from '../../../../stacks/common/config.js';
import { assertStaging, OWN_LOGIN_TIERS, type TenantProgramInput } from '../../../../stacks/common/input.js';
import { rdsDeletionProtection } from '../../../../stacks/policy/policies.js';
import type { AwsProviderOptions } from '../../aws/provider-options.js';
import { tenantStackName } from '../../domain/naming.js';
import type { LimitOverrides } from '../../domain/tenant.js';
import type { Tier } from '../../domain/tiers.js';
import { buildStackConfig } from './config.js';
import { PULUMI_PROJECT, stackWorkspaceDir } from './naming.js';
import type { PulumiJob, PulumiOp } from './runner.js';
import { isDiyBackend, MIN_CLI_FOR_DRIFT } from './version.js';

/** What every job of one engine shares. */
export interface JobSettings {
  backendUrl: string;
  secretsProvider?: string;
  envVars: Record<string, string>;
  aws: AwsProviderOptions;
  platform: PlatformSettings;
  /** Absolute. */
  workspaceRoot: string;
  templatesDir: string;
  /** Absolute policy pack directories run with every up and preview. */
  policyPacks: string[];
  /** The account tier's root-email suffix of a tenant (deterministic per tenant id). */
  accountEmailSuffix: (tenantId: string) => string;
}

/**
 * The offboarding `up` turns deletion protection off on purpose (the destroy that follows needs
 * it); the pack's rule that demands it is disabled for that one run, every other rule still holds.
 */
export const UNPROTECT_POLICY_CONFIG: Record<string, unknown> = {
  [rdsDeletionProtection.name]: { enforcementLevel: 'disabled' },
};

/**
 * The tenant a job is for: who it is, and the recorded state every run of its stack carries (its
 * suspension and limit overrides: stacks/common/input.ts), so that no `up` undoes them.
 */
export interface JobTenant {
  id: string;
  slug: string;
  suspended?: boolean;
  limits?: LimitOverrides;
}

/**
 * A promotion's placement staged in the source tier's stack (see stagedTier in stacks/common/input.ts):
 * `tier` is the target tier; `discard` builds it for deletion (an aborted promotion).
 */
export interface JobStage {
  tier: Tier;
  discard?: boolean;
}

/**
 * One Pulumi job: the tier whose program runs (a promotion runs the target tier's, not the
 * tenant's current one), its input, the whole stack config, the workspace, the policy packs.
 * With `stage`, the program (the source tier's) also builds the target tier's placement; a discard
 * run builds it without deletion protection, so that run alone disables the pack's rule that
 * demands the protection, as `unprotect` does. Pure, so what the child will run is testable without
 * a child.
 */
export function buildJob(
  op: PulumiOp,
  tenant: JobTenant,
  tier: Tier,
  s: JobSettings,
  stage?: JobStage,
): PulumiJob {
  const offboarding = op === 'unprotect' || op === 'destroy';
  if (stage && offboarding) throw new Error(`a ${op} job never stages a placement`);
  // Only a tenant's own login role carries its state; the pool's shared login never does.
  const ownLogin = OWN_LOGIN_TIERS.includes(tier);
  const overrides = tenant.limits && Object.keys(tenant.limits).length > 0 ? tenant.limits : undefined;
  const input: TenantProgramInput = {
    tenantId: tenant.id,
    slug: tenant.slug,
    tier,
    ...(tier === 'account' ? { accountEmailSuffix: s.accountEmailSuffix(tenant.id) } : {}),
    templatesDir: s.templatesDir,
    ...(offboarding ? { offboarding: true } : {}),
    ...(stage ? { stagedTier: stage.tier } : {}),
    ...(stage?.discard ? { discardStaged: true } : {}),
    ...(ownLogin && tenant.suspended === true ? { suspended: true } : {}),
    ...(ownLogin && overrides ? { limitOverrides: overrides } : {}),
  };
  // The pairs the program accepts, refused here already rather than in the child.
  assertStaging(input);
  if (!path.isAbsolute(s.templatesDir)) throw new Error('the templates directory must be an absolute path');
  for (const p of s.policyPacks) {
    if (!path.isAbsolute(p)) throw new Error(`policy pack paths must be absolute: ${p}`);
  }
  // Destroy runs no policy: there is nothing left to check.
  const policyPacks = op === 'destroy' ? [] : s.policyPacks;
  return {
    op,
    projectName: PULUMI_PROJECT,
    stackName: tenantStackName(tenant.slug),
    workDir: stackWorkspaceDir(s.workspaceRoot, tenant.slug),
    backendUrl: s.backendUrl,
    ...(s.secretsProvider ? { secretsProvider: s.secretsProvider } : {}),
    envVars: s.envVars,
    config: buildStackConfig({ input, platform: s.platform, aws: s.aws }),
    input,
    policyPacks,
    ...((op === 'unprotect' || stage?.discard === true) && policyPacks.length > 0
      ? { policyPackConfig: UNPROTECT_POLICY_CONFIG }
      : {}),
    ...(op === 'preview-refresh' && isDiyBackend(s.backendUrl)
      ? { minCliVersionForPreview: MIN_CLI_FOR_DRIFT }
      : {}),
  };
}
