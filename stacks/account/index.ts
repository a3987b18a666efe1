import type * as pulumi from '@pulumi/pulumi';
import { TenantAccount } from '../common/account.js';
import { exportFinalSnapshot } from '../common/export.js';
import type { TenantProgramInput } from '../common/input.js';
import { placementDescriptor, programContext, tenantStackOutputs } from '../common/program.js';
import { TenantSilo } from '../common/silo.js';
import { newTenantKey, newTenantSecret } from '../common/tenant.js';

/** The account tier: a member account of its own, with the key, the silo resources and the secret inside it. */
export function accountProgram(input: TenantProgramInput): pulumi.automation.PulumiFn {
  return async () => {
    const ctx = programContext(input, 'account');
    const account = new TenantAccount(`tenant-${input.slug}`, ctx);
    const inAccount = {
      provider: account.provider,
      roleArn: account.roleArn,
      accountRootArn: account.rootArn,
    };
    const key = newTenantKey(ctx, { retainKeyOnDelete: true, inAccount });
    const silo = new TenantSilo(
      `tenant-${input.slug}-silo`,
      {
        ctx,
        tier: 'account',
        kmsKeyArn: key.keyArn,
        dbSubnetGroupName: account.network.dbSubnetGroupName,
        vpcSecurityGroupIds: [account.network.securityGroupId],
        inAccountRoleArn: account.roleArn,
      },
      { parent: account, providers: [account.provider] },
    );
    // Offboarding copies the database out of the account before the destroy that follows.
    if (ctx.offboarding) exportFinalSnapshot(ctx, silo.instanceId, account.provider);
    const secret = newTenantSecret(ctx, key, placementDescriptor(ctx, silo.placement), inAccount);
    return tenantStackOutputs(ctx, key, secret, silo.placement, {
      dbInstanceId: silo.instanceId,
      // In the tenant's account: the control plane reads it through the role the account was vended with.
      adminSecretArn: silo.adminSecretArn,
      accountId: account.accountId,
      accountEmail: account.accountEmail,
    });
  };
}
