import * as pulumi from '@pulumi/pulumi';
import {
  AWS_ENDPOINT_SERVICES,
  type AwsProviderOptions,
} from '../../control-plane/src/aws/provider-options.js';
import { effectiveLimits, limitsRefusal } from '../../control-plane/src/domain/lifecycle.js';
import { tenantSecretName } from '../../control-plane/src/domain/naming.js';
import type { ConnectionDescriptor } from '../../control-plane/src/domain/ports.js';
import type { RoleLimits, Tier, TierCatalog, TierDefinition } from '../../control-plane/src/domain/tiers.js';
import type { TenantTemplate } from '../../control-plane/src/providers/postgres/types.js';
import { CONFIG_NAMESPACE, ConfigError, type PlatformSettings, parsePlatformSettings } from './config.js';
import { assertProgramInput, type TenantProgramInput } from './input.js';
import type { AdminSecretRef } from './postgres.js';
import { type TenantTags, tenantTags } from './tags.js';
import { loadProgramTemplates } from './templates.js';

/** What a tier program's component needs, read and validated once at the start of the run. */
export interface ProgramContext {
  input: TenantProgramInput;
  settings: PlatformSettings;
  region: string;
  /** The `aws:*` settings the engine wrote (region, custom endpoints), for explicit providers and SDK reads. */
  aws: AwsProviderOptions;
  tier: TierDefinition;
  template: TenantTemplate;
  tags: TenantTags;
  dataPlaneRoleArn: string;
  /**
   * Whether the tenant's data (Postgres objects, RDS instance) stays when it leaves the stack.
   * True for every run but offboarding's: a tier change drops the source placement from the
   * stack without deleting the rows in it; only offboarding's destroy deletes.
   */
  retainData: boolean;
  /** Offboarding: deletion protection comes off so that the destroy that follows can delete. */
  offboarding: boolean;
  /** A promotion's staged placement being discarded (input.discardStaged): when this run began. */
  discardedAt?: Date;
  /** The tenant's own login role: the tier's limits with its overrides on top (input.limitOverrides). */
  loginLimits: RoleLimits;
  /** Suspended (input.suspended): its own login role is NOLOGIN. */
  suspended: boolean;
}

const ROLE_ARN_RE = /^arn:aws(?:-[a-z]+)*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;

/** Reads back the `aws:*` stack config the engine wrote, so explicit providers match the default one. */
export function providerOptionsFromConfig(region: string): AwsProviderOptions {
  const cfg = new pulumi.Config('aws');
  const list = cfg.getObject<Record<string, string>[]>('endpoints') ?? [];
  const endpoints: AwsProviderOptions['endpoints'] = {};
  for (const entry of list) {
    for (const service of AWS_ENDPOINT_SERVICES) {
      const url = entry[service];
      if (url !== undefined) endpoints[service] = url;
    }
  }
  return { region, endpoints, s3UsePathStyle: cfg.getBoolean('s3UsePathStyle') ?? false };
}

/** A reference to an admin secret, read by the dynamic provider with this stack's region and endpoint. */
export function adminSecretRef(
  ctx: ProgramContext,
  secretId: pulumi.Input<string>,
  roleArn?: pulumi.Input<string>,
): AdminSecretRef {
  const endpoint = ctx.aws.endpoints?.secretsmanager;
  return { secretId, region: ctx.region, ...(endpoint ? { endpoint } : {}), ...(roleArn ? { roleArn } : {}) };
}

function templatesFor(input: TenantProgramInput): { catalog: TierCatalog; template: TenantTemplate } {
  if (input.tiers && input.template) return { catalog: input.tiers, template: input.template };
  const loaded = loadProgramTemplates(input.templatesDir);
  return { catalog: input.tiers ?? loaded.catalog, template: input.template ?? loaded.tenantSchema };
}

export function programContext(input: TenantProgramInput, tier: Tier): ProgramContext {
  assertProgramInput(input, tier);
  const cfg = new pulumi.Config(CONFIG_NAMESPACE);
  const settings = parsePlatformSettings((k) => cfg.get(k));
  const region = new pulumi.Config('aws').get('region');
  if (!region) throw new ConfigError('aws:region', 'is required');
  const dataPlaneRoleArn = input.dataPlaneRoleArn ?? settings.dataPlaneRoleArn;
  if (!ROLE_ARN_RE.test(dataPlaneRoleArn)) throw new Error('dataPlaneRoleArn must be an IAM role ARN');
  const { catalog, template } = templatesFor(input);
  const overrides = input.limitOverrides ?? {};
  const refusal = limitsRefusal(tier, catalog.tiers[tier].role, overrides);
  if (refusal) throw new Error(`limitOverrides: ${refusal}`);
  return {
    input,
    settings,
    region,
    aws: providerOptionsFromConfig(region),
    tier: catalog.tiers[tier],
    template,
    tags: tenantTags(input.tenantId, tier),
    dataPlaneRoleArn,
    retainData: input.offboarding !== true,
    offboarding: input.offboarding === true,
    loginLimits: effectiveLimits(catalog.tiers[tier].role, overrides),
    suspended: input.suspended === true,
  };
}

/** The stack outputs every tier exports. Nothing here is a credential. */
export interface TenantStackOutputs {
  tenantId: string;
  tier: Tier;
  keyArn: pulumi.Output<string>;
  keyAlias: pulumi.Output<string>;
  secretArn: pulumi.Output<string>;
  secretName: string;
  host: pulumi.Output<string>;
  port: pulumi.Output<number>;
  database: pulumi.Output<string>;
  schema: string;
  user: string;
  dbInstanceId?: pulumi.Output<string>;
  /**
   * Silo and account: the ARN of its instance's RDS-managed master secret (not a credential), through
   * which the control plane reaches the instance as its admin (a suspension ends the login's sessions
   * there; exports read it). An account tenant's is in its own account, read through its vended role.
   */
  adminSecretArn?: pulumi.Output<string>;
  accountId?: pulumi.Output<string>;
  accountEmail?: pulumi.Output<string>;
}

/**
 * Only while a promotion is staged (input.stagedTier): where the target tier's placement is, as
 * flat outputs (see StagedPlacementOutputs; `stagedAdminSecretArn` is empty for a bridge).
 */
export interface StagedStackOutputs {
  stagedTier: pulumi.Output<Tier>;
  stagedHost: pulumi.Output<string>;
  stagedPort: pulumi.Output<number>;
  stagedDatabase: pulumi.Output<string>;
  stagedSchema: pulumi.Output<string>;
  stagedUser: pulumi.Output<string>;
  stagedAdminSecretArn: pulumi.Output<string>;
}

/**
 * The placement a promotion staged next to the routed one (input.stagedTier), as the control plane
 * needs it to copy the rows in before routing flips. Not a secret output, and never a password: the
 * control plane connects as the placement's admin, a silo's through its RDS-managed master secret
 * (`adminSecretArn`, an ARN, not a credential), a bridge's through the shared cluster's admin secret
 * named in `tenantry:sharedClusterSecretName`.
 */
export interface StagedPlacementOutputs {
  tier: Tier;
  host: string;
  port: number;
  database: string;
  schema: string;
  user: string;
  adminSecretArn?: string;
}

/**
 * Builds the placement a promotion stages in a pool or bridge stack (stagedPlacement, staged.ts),
 * encrypted with the stack's tenant key where it stores anything; undefined when not staging.
 */
export type StagePlacement = (
  input: TenantProgramInput,
  key: { keyArn: pulumi.Input<string> },
) => pulumi.Output<StagedPlacementOutputs> | undefined;

/** Where a tier placed the tenant's data, as the key and secret of every tier need it. */
export interface Placement {
  host: pulumi.Output<string>;
  port: pulumi.Output<number>;
  database: pulumi.Output<string>;
  schema: string;
  user: string;
  password?: pulumi.Output<string | undefined>;
  tenantSetting?: string;
}

/**
 * The stack's outputs and the descriptor of its secret, from the key, the secret and the
 * placement: one shape for every tier.
 */
export function tenantStackOutputs(
  ctx: ProgramContext,
  key: { keyArn: pulumi.Output<string>; aliasName: pulumi.Output<string> },
  secret: { secretArn: pulumi.Output<string>; secretName: string },
  placement: Placement,
  extra: Pick<TenantStackOutputs, 'dbInstanceId' | 'adminSecretArn' | 'accountId' | 'accountEmail'> = {},
): TenantStackOutputs {
  return {
    tenantId: ctx.input.tenantId,
    tier: ctx.input.tier,
    keyArn: key.keyArn,
    keyAlias: key.aliasName,
    secretArn: secret.secretArn,
    secretName: secret.secretName,
    host: placement.host,
    port: placement.port,
    database: placement.database,
    schema: placement.schema,
    user: placement.user,
    ...extra,
  };
}

/** The connection descriptor of a placement, as the tenant's secret stores it. */
export function placementDescriptor(ctx: ProgramContext, p: Placement): pulumi.Output<ConnectionDescriptor> {
  return descriptor({
    tenantId: ctx.input.tenantId,
    tier: ctx.input.tier,
    host: p.host,
    port: p.port,
    database: p.database,
    schema: p.schema,
    user: p.user,
    password: p.password,
    secretRef: tenantSecretName(ctx.input.slug),
    ...(p.tenantSetting ? { tenantSetting: p.tenantSetting } : {}),
  });
}

/** The descriptor stored in the tenant's secret (the shape of the ConnectionDescriptor port). */
export function descriptor(p: {
  tenantId: string;
  tier: Tier;
  host: pulumi.Input<string>;
  port: pulumi.Input<number>;
  database: pulumi.Input<string>;
  schema: string;
  user: string;
  password?: pulumi.Input<string | undefined>;
  secretRef: string;
  tenantSetting?: string;
}): pulumi.Output<ConnectionDescriptor> {
  return pulumi.all([p.host, p.port, p.database, p.password]).apply(([host, port, database, password]) => ({
    tenantId: p.tenantId,
    tier: p.tier,
    host,
    port,
    database,
    schema: p.schema,
    user: p.user,
    ...(password === undefined ? {} : { password }),
    secretRef: p.secretRef,
    ...(p.tenantSetting === undefined ? {} : { tenantSetting: p.tenantSetting }),
  }));
}
