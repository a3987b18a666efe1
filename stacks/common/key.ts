import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { tenantKeyAlias } from '../../control-plane/src/domain/naming.js';
import { keyDeletionWindow } from './config.js';
import { tenantKeyPolicy } from './key-policy.js';
import type { TenantTags } from './tags.js';

export { accountRootArn, KEY_ROOT_ADMIN_ACTIONS, tenantKeyPolicy } from './key-policy.js';

export interface TenantKeyArgs {
  slug: string;
  region: pulumi.Input<string>;
  /** Principals that administer the key (the platform admin role; in the account tier also the assumed role). */
  adminPrincipalArns: pulumi.Input<string>[];
  /** The tenant's data plane: may only decrypt, and only through Secrets Manager and RDS. */
  dataPlaneRoleArn: pulumi.Input<string>;
  /** The account the key lives in: its root is the fallback administrator (`arn:<partition>:iam::<id>:root`). */
  accountRootArn: pulumi.Input<string>;
  deletionWindowInDays: number;
  tags: TenantTags;
  /**
   * Leave the key in KMS when the stack deletes it. Set where an RDS instance leaves a final
   * snapshot encrypted with this key: scheduling the key's deletion in the same destroy would
   * make that snapshot unrestorable once the window ends (and unusable during it). The alias is
   * always deleted, so a later tenant can take the slug.
   */
  retainKeyOnDelete: boolean;
}

/** `tenantry:tenant:Key`: the tenant's own customer-managed key and its alias. */
export class TenantKey extends pulumi.ComponentResource {
  readonly keyArn: pulumi.Output<string>;
  readonly keyId: pulumi.Output<string>;
  readonly aliasName: pulumi.Output<string>;

  constructor(name: string, args: TenantKeyArgs, opts?: pulumi.ComponentResourceOptions) {
    super('tenantry:tenant:Key', name, {}, opts);
    const key = new aws.kms.Key(
      `${name}-key`,
      {
        description: `Tenantry tenant key for ${args.slug}`,
        enableKeyRotation: true,
        deletionWindowInDays: keyDeletionWindow(args.deletionWindowInDays),
        policy: pulumi
          .all([pulumi.all(args.adminPrincipalArns), args.dataPlaneRoleArn, args.region, args.accountRootArn])
          .apply(([adminPrincipalArns, dataPlaneRoleArn, region, accountRootArn]) =>
            tenantKeyPolicy({ adminPrincipalArns, dataPlaneRoleArn, region, accountRootArn }),
          ),
        tags: args.tags,
      },
      { parent: this, retainOnDelete: args.retainKeyOnDelete },
    );
    const alias = new aws.kms.Alias(
      `${name}-alias`,
      { name: tenantKeyAlias(args.slug), targetKeyId: key.keyId },
      { parent: this },
    );
    this.keyArn = key.arn;
    this.keyId = key.keyId;
    this.aliasName = alias.name;
    this.registerOutputs({ keyArn: this.keyArn, keyId: this.keyId, aliasName: this.aliasName });
  }
}
