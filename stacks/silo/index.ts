import type * as pulumi from '@pulumi/pulumi';
import { need } from '../common/config.js';
import type { TenantProgramInput } from '../common/input.js';
import { programContext } from '../common/program.js';
import { TenantSilo } from '../common/silo.js';

/** The silo tier: a dedicated RDS instance in the platform account's network, encrypted with the tenant key. */
export function siloProgram(input: TenantProgramInput): pulumi.automation.PulumiFn {
  return async () => {
    const ctx = programContext(input, 'silo');
    const network = need(ctx.settings.silo, 'silo', 'dbSubnetGroupName/vpcSecurityGroupIds');
    const silo = new TenantSilo(`tenant-${input.slug}`, {
      ctx,
      tier: 'silo',
      dbSubnetGroupName: network.dbSubnetGroupName,
      vpcSecurityGroupIds: network.vpcSecurityGroupIds,
    });
    return silo.outputs;
  };
}
