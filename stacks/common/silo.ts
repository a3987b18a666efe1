import * as pulumi from '@pulumi/pulumi';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import { TenantDatabase } from './database.js';
import { adminSecretRef, type Placement, type ProgramContext } from './program.js';
import { TIER_COMPONENT_TYPES } from './tenant.js';
import { TenantPostgres } from './tenant-postgres.js';

export interface TenantSiloArgs {
  ctx: ProgramContext;
  tier: Extract<Tier, 'silo' | 'account'>;
  /** The tenant key (the stack's own, see tenant.ts): storage and master secret are encrypted with it. */
  kmsKeyArn: pulumi.Input<string>;
  dbSubnetGroupName: pulumi.Input<string>;
  vpcSecurityGroupIds: pulumi.Input<pulumi.Input<string>[]>;
  /** The account tier: the role to assume in the tenant's account to read the master secret there. */
  inAccountRoleArn?: pulumi.Input<string>;
}

/**
 * `tenantry:tenant:Silo`: a dedicated RDS instance, the tenant database and its schema. Used as-is
 * by the silo tier, and by the account tier inside the tenant's own account (through the
 * `providers` option, which the children inherit).
 */
export class TenantSilo extends pulumi.ComponentResource {
  readonly placement: Placement;
  readonly instanceId: pulumi.Output<string>;
  /**
   * ARN of the instance's RDS-managed master-user secret (encrypted with the tenant key). An ARN,
   * not a credential: whoever reads the secret behind it needs its own Secrets Manager and KMS grants.
   */
  readonly adminSecretArn: pulumi.Output<string>;

  constructor(name: string, args: TenantSiloArgs, opts?: pulumi.ComponentResourceOptions) {
    super(TIER_COMPONENT_TYPES.silo, name, {}, opts);
    const { ctx } = args;
    const { input } = ctx;
    const rds = ctx.tier.rds;
    if (!rds) throw new Error(`templates/tiers.json has no rds settings for the ${args.tier} tier`);

    const db = new TenantDatabase(
      `${name}-db`,
      {
        slug: input.slug,
        tenantId: input.tenantId,
        kmsKeyArn: args.kmsKeyArn,
        rds,
        dbSubnetGroupName: args.dbSubnetGroupName,
        vpcSecurityGroupIds: args.vpcSecurityGroupIds,
        tags: ctx.tags,
        deletionProtection: !ctx.offboarding,
        ...(ctx.discardedAt ? { discardedAt: ctx.discardedAt } : {}),
        retainOnDelete: ctx.retainData,
      },
      { parent: this },
    );

    const pg = new TenantPostgres(
      `${name}-pg`,
      {
        mode: 'database',
        slug: input.slug,
        tenantId: input.tenantId,
        adminSecret: adminSecretRef(ctx, db.masterSecretArn, args.inAccountRoleArn),
        host: db.address,
        port: db.port,
        ssl: true,
        template: ctx.template,
        limits: ctx.tier.role,
        retainOnDelete: ctx.retainData,
        loginLimits: ctx.loginLimits,
        suspended: ctx.suspended,
      },
      { parent: this },
    );

    this.instanceId = db.instanceId;
    this.adminSecretArn = db.masterSecretArn;
    this.placement = {
      host: db.address,
      port: db.port,
      database: pg.endpoint.database,
      schema: pg.endpoint.schema,
      user: pg.endpoint.user,
      ...(pg.endpoint.password ? { password: pg.endpoint.password } : {}),
    };
    this.registerOutputs({ dbInstanceId: db.instanceId, address: db.address });
  }
}
