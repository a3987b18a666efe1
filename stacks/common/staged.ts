import * as pulumi from '@pulumi/pulumi';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import { need } from './config.js';
import {
  type Placement,
  type ProgramContext,
  programContext,
  type StagedPlacementOutputs,
  type StagePlacement,
} from './program.js';
import { SharedClusterTenant } from './shared-cluster.js';
import { TenantSilo } from './silo.js';

/**
 * The first step of a promotion on the aws target: when `input.stagedTier` is set, builds the target
 * tier's placement inside the source tier's stack, next to the routed (source) placement, which the
 * caller builds and keeps routing to. The staged placement is made exactly as the target tier's own
 * program makes it (same names, types, parents and inputs, the same tags and tier settings), so the
 * later `up` of the target program adopts it in place: identical URNs, nothing replaced.
 *
 * It is retained on delete like any tenant data, except with `discardStaged`, where it is built as an
 * offboarding run would build it (deletion protection off, nothing retained), so that the next `up`
 * without `stagedTier` deletes it. Returns the stack output `staged`, or undefined when not staging.
 */
export const stagedPlacement: StagePlacement = (input, key) => {
  const stagedTier = input.stagedTier;
  if (stagedTier === undefined) return undefined;
  const discard = input.discardStaged === true;
  const base = programContext(
    { ...input, tier: stagedTier, stagedTier: undefined, discardStaged: undefined },
    stagedTier,
  );
  const ctx: ProgramContext = {
    ...base,
    retainData: !discard,
    offboarding: discard,
    ...(discard ? { discardedAt: new Date() } : {}),
  };
  const name = `tenant-${input.slug}`;
  switch (stagedTier) {
    case 'silo': {
      // As stacks/silo/index.ts: the same name, no parent, the stack's own tenant key.
      const network = need(ctx.settings.silo, 'silo', 'dbSubnetGroupName/vpcSecurityGroupIds');
      const silo = new TenantSilo(name, {
        ctx,
        tier: 'silo',
        kmsKeyArn: key.keyArn,
        dbSubnetGroupName: network.dbSubnetGroupName,
        vpcSecurityGroupIds: network.vpcSecurityGroupIds,
      });
      return stagedOutputs('silo', silo.placement, silo.adminSecretArn);
    }
    case 'bridge': {
      // As stacks/bridge/index.ts (sharedClusterStack): the same name, no parent.
      const { placement } = new SharedClusterTenant(name, ctx, 'bridge');
      return stagedOutputs('bridge', placement);
    }
    default:
      // assertStaging (through programContext) has refused every other tier already.
      throw new Error(`a ${stagedTier} placement cannot be staged`);
  }
};

/**
 * Where the staged placement is, without its password. Nothing in it is a credential, so it is
 * unwrapped from secretness: values derived from a secret string (the shared cluster's host, port
 * and database come out of its admin secret) would otherwise make the whole output secret.
 */
function stagedOutputs(
  tier: Tier,
  p: Placement,
  adminSecretArn?: pulumi.Output<string>,
): pulumi.Output<StagedPlacementOutputs> {
  return pulumi.unsecret(
    pulumi.all([p.host, p.port, p.database, adminSecretArn]).apply(
      ([host, port, database, arn]): StagedPlacementOutputs => ({
        tier,
        host,
        port,
        database,
        schema: p.schema,
        user: p.user,
        ...(arn === undefined ? {} : { adminSecretArn: arn }),
      }),
    ),
  );
}
