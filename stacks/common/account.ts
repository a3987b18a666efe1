import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { memberRoleArn } from '../../control-plane/src/aws/arn.js';
import {
  AWS_ENDPOINT_SERVICES,
  type AwsProviderOptions,
  awsProviderArgs,
} from '../../control-plane/src/aws/provider-options.js';
import { type AccountSettings, need } from './config.js';
import { accountRootEmail } from './input.js';
import { TenantNetwork } from './network.js';
import type { ProgramContext } from './program.js';
import { TIER_COMPONENT_TYPES } from './tenant.js';

/** Reads back the `aws:*` stack config the engine wrote, so the in-account provider matches the default one. */
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

/** The role Organizations creates in the new account; the control plane builds the same ARN to read its secret. */
export const accountRoleArn = memberRoleArn;

/**
 * `tenantry:tenant:Account`: a member account vended through AWS Organizations, a provider that
 * assumes the organization's access role in it, and the private network for its database. The
 * program then places the tenant key, the silo (as a child of this component) and the secret in
 * the account through `provider`.
 */
export class TenantAccount extends pulumi.ComponentResource {
  readonly provider: aws.Provider;
  readonly accountId: pulumi.Output<string>;
  readonly accountEmail: pulumi.Output<string>;
  /** The role the provider assumes; it also administers the tenant key (KMS lockout safety). */
  readonly roleArn: pulumi.Output<string>;
  readonly network: TenantNetwork;

  constructor(name: string, ctx: ProgramContext, opts?: pulumi.ComponentResourceOptions) {
    super(TIER_COMPONENT_TYPES.account, name, {}, opts);
    const { input, tags } = ctx;
    const settings: AccountSettings = need(ctx.settings.account, 'account', 'accountEmailDomain');
    const suffix = input.accountEmailSuffix;
    if (suffix === undefined) throw new Error('accountEmailSuffix is required');
    const email = accountRootEmail(input.slug, suffix, settings.emailDomain);

    const account = new aws.organizations.Account(
      `${name}-account`,
      {
        name: `tenantry-${input.slug}`,
        email,
        parentId: settings.parentOuId,
        roleName: settings.roleName,
        closeOnDeletion: true,
        iamUserAccessToBilling: 'DENY',
        tags,
      },
      // Organizations cannot change these after creation; a diff must not replace the account.
      { parent: this, ignoreChanges: ['roleName', 'iamUserAccessToBilling'] },
    );

    this.roleArn = account.id.apply((id) => accountRoleArn(id, settings.roleName));
    this.provider = new aws.Provider(
      `${name}-provider`,
      {
        ...awsProviderArgs(providerOptionsFromConfig(ctx.region)),
        assumeRoles: [{ roleArn: this.roleArn, sessionName: `tenantry-${input.slug}` }],
        allowedAccountIds: [account.id],
        defaultTags: { tags },
      },
      { parent: this },
    );

    this.network = new TenantNetwork(
      `${name}-network`,
      {
        vpcCidr: settings.vpcCidr,
        subnetCidrs: settings.subnetCidrs,
        availabilityZones: settings.availabilityZones,
        dbIngressCidrs: settings.dbIngressCidrs,
        tags,
      },
      { parent: this, providers: [this.provider] },
    );

    this.accountId = account.id;
    this.accountEmail = account.email;
    this.registerOutputs({ accountId: account.id });
  }
}
