import * as pulumi from '@pulumi/pulumi';
import { tenantSecretName } from '../../control-plane/src/domain/naming.js';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import { TenantDatabase } from './database.js';
import { TenantKey } from './key.js';
import { descriptor, type ProgramContext, type TenantStackOutputs } from './program.js';
import { TenantSecret } from './secret.js';
import { TenantPostgres } from './tenant-postgres.js';

export interface TenantSiloArgs {
  ctx: ProgramContext;
  tier: Extract<Tier, 'silo' | 'account'>;
  dbSubnetGroupName: pulumi.Input<string>;
  vpcSecurityGroupIds: pulumi.Input<pulumi.Input<string>[]>;
  /** Who administers the tenant key besides the platform admin role (the assumed role in the account tier). */
  extraKeyAdminArns?: pulumi.Input<string>[];
}

/**
 * `tenantry:tenant:Silo`: key, dedicated RDS instance, tenant database and schema, and
 * the connection secret. Used as-is by the silo tier, and by the account tier inside the
 * tenant's own account (through the `providers` option, which the children inherit).
 */
export class TenantSilo extends pulumi.ComponentResource {
  readonly outputs: TenantStackOutputs;

  constructor(name: string, args: TenantSiloArgs, opts?: pulumi.ComponentResourceOptions) {
    super('tenantry:tenant:Silo', name, {}, opts);
    const { ctx } = args;
    const { input, settings, tags } = ctx;
    const rds = ctx.tier.rds;
    if (!rds) throw new Error(`templates/tiers.json has no rds settings for the ${args.tier} tier`);

    const key = new TenantKey(
      `${name}-key`,
      {
        slug: input.slug,
        region: ctx.region,
        adminPrincipalArns: [settings.adminRoleArn, ...(args.extraKeyAdminArns ?? [])],
        dataPlaneRoleArn: ctx.dataPlaneRoleArn,
        deletionWindowInDays: settings.keyDeletionWindowDays,
        tags,
      },
      { parent: this },
    );

    const db = new TenantDatabase(
      `${name}-db`,
      {
        slug: input.slug,
        tenantId: input.tenantId,
        kmsKeyArn: key.keyArn,
        rds,
        dbSubnetGroupName: args.dbSubnetGroupName,
        vpcSecurityGroupIds: args.vpcSecurityGroupIds,
        tags,
      },
      { parent: this },
    );

    const pg = new TenantPostgres(
      `${name}-pg`,
      {
        mode: 'database',
        slug: input.slug,
        tenantId: input.tenantId,
        adminSecret: db.masterSecretString,
        host: db.address,
        port: db.port,
        ssl: true,
        template: ctx.template,
        limits: ctx.tier.role,
      },
      { parent: this },
    );

    const secret = new TenantSecret(
      `${name}-connection`,
      {
        slug: input.slug,
        kmsKeyArn: key.keyArn,
        recoveryWindowInDays: settings.secretRecoveryWindowDays,
        tags,
        value: descriptor({
          tenantId: input.tenantId,
          tier: args.tier,
          host: db.address,
          port: db.port,
          database: pg.endpoint.database,
          schema: pg.endpoint.schema,
          user: pg.endpoint.user,
          password: pg.endpoint.password,
          secretRef: tenantSecretName(input.slug),
        }),
      },
      { parent: this },
    );

    this.outputs = {
      tenantId: input.tenantId,
      tier: args.tier,
      keyArn: key.keyArn,
      keyAlias: key.aliasName,
      secretArn: secret.secretArn,
      secretName: secret.secretName,
      host: db.address,
      port: db.port,
      database: pg.endpoint.database,
      schema: pg.endpoint.schema,
      user: pg.endpoint.user,
      dbInstanceId: db.instanceId,
    };
    this.registerOutputs({ keyArn: key.keyArn, secretArn: secret.secretArn, dbInstanceId: db.instanceId });
  }
}
