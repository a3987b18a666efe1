import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { memberRoleArn } from '../../control-plane/src/aws/arn.js';
import { awsProviderArgs } from '../../control-plane/src/aws/provider-options.js';
import { type AccountSettings, need } from './config.js';
import { accountRootEmail } from './input.js';
import { arnAccount } from './key-policy.js';
import { TenantNetwork } from './network.js';
import type { ProgramContext } from './program.js';
import { TIER_COMPONENT_TYPES } from './tenant.js';

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
  /** `arn:<partition>:iam::<account id>:root`: the tenant key's fallback administrator in the account. */
  readonly rootArn: pulumi.Output<string>;
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
      {
        parent: this,
        // Organizations cannot change these after creation; a diff must not replace the account.
        ignoreChanges: ['roleName', 'iamUserAccessToBilling'],
        // Nothing but offboarding's own `up` may let it go: a change that would delete it fails instead.
        protect: !ctx.offboarding,
        // Never closed by a destroy: CloseAccount is capped (10% of member accounts per 30 days), so
        // offboarding leaves the account in Organizations and queues its closure (aws/closures.ts).
        retainOnDelete: true,
      },
    );

    this.roleArn = account.id.apply((id) => accountRoleArn(id, settings.roleName));
    const { partition } = arnAccount(ctx.settings.adminRoleArn);
    this.rootArn = account.id.apply((id) => `arn:${partition}:iam::${id}:root`);
    this.provider = new aws.Provider(
      `${name}-provider`,
      {
        ...awsProviderArgs(ctx.aws),
        assumeRoles: [{ roleArn: this.roleArn, sessionName: `tenantry-${input.slug}` }],
        // Acts only in the tenant's account: the provider checks the account it assumed into against
        // this list, so it must look that account up (one STS call at start). With the lookup skipped,
        // the Terraform provider refuses to start ("AWS account ID not allowed").
        allowedAccountIds: [account.id],
        skipRequestingAccountId: false,
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
