import type * as pulumi from '@pulumi/pulumi';
import { need } from '../common/config.js';
import type { TenantProgramInput } from '../common/input.js';
import { placementDescriptor, programContext, tenantStackOutputs } from '../common/program.js';
import { TenantSilo } from '../common/silo.js';
import { newTenantKey, newTenantSecret } from '../common/tenant.js';

/** The silo tier: a dedicated RDS instance in the platform account's network, encrypted with the tenant key. */
export function siloProgram(input: TenantProgramInput): pulumi.automation.PulumiFn {
  return async () => {
    const ctx = programContext(input, 'silo');
    const network = need(ctx.settings.silo, 'silo', 'dbSubnetGroupName/vpcSecurityGroupIds');
    // The final snapshot is encrypted with the key: the key outlives the stack (docs/aws.md).
    const key = newTenantKey(ctx, { retainKeyOnDelete: true });
    const silo = new TenantSilo(`tenant-${input.slug}`, {
      ctx,
      tier: 'silo',
      kmsKeyArn: key.keyArn,
      dbSubnetGroupName: network.dbSubnetGroupName,
      vpcSecurityGroupIds: network.vpcSecurityGroupIds,
    });
    const secret = newTenantSecret(ctx, key, placementDescriptor(ctx, silo.placement));
    return tenantStackOutputs(ctx, key, secret, silo.placement, {
      dbInstanceId: silo.instanceId,
      adminSecretArn: silo.adminSecretArn,
    });
  };
}
