import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import type { RdsSettings } from '../../control-plane/src/domain/tiers.js';
import {
  discardedSnapshotIdentifier,
  finalSnapshotIdentifier,
  parameterGroupFamily,
  rdsIdentifier,
} from './names.js';
import type { TenantTags } from './tags.js';

export interface TenantDatabaseArgs {
  slug: string;
  tenantId: string;
  kmsKeyArn: pulumi.Input<string>;
  rds: RdsSettings;
  dbSubnetGroupName: pulumi.Input<string>;
  vpcSecurityGroupIds: pulumi.Input<pulumi.Input<string>[]>;
  tags: TenantTags;
  /** On, except in the offboarding `up` that precedes the destroy. */
  deletionProtection: boolean;
  /**
   * A promotion's discarded staged instance: its final snapshot gets a name of its own (stamped with
   * the discard run's time), so it never takes the name the tenant's real final snapshot needs.
   */
  discardedAt?: Date;
  /**
   * Keep the instance (and its parameter group) when it leaves the stack: a tier change must not
   * delete the tenant's data. False only when offboarding, whose destroy deletes it (final snapshot kept).
   */
  retainOnDelete: boolean;
}

export const RDS_MASTER_USERNAME = 'tenantry_admin';

/** The policy RDS enhanced monitoring needs on the role it assumes (an AWS managed policy). */
export const RDS_MONITORING_POLICY = 'arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole';

/** The trust policy of the enhanced-monitoring role: RDS's monitoring service assumes it, nobody else. */
export const RDS_MONITORING_TRUST = JSON.stringify({
  Version: '2012-10-17',
  Statement: [
    { Effect: 'Allow', Principal: { Service: 'monitoring.rds.amazonaws.com' }, Action: 'sts:AssumeRole' },
  ],
});

/**
 * `tenantry:tenant:Database`: a dedicated RDS PostgreSQL instance encrypted with the
 * tenant's key, private, deletion-protected, with a final snapshot, and the master
 * password managed by RDS in a secret encrypted with the same key. The production settings
 * (`templates/tiers.json` → `rds`): Multi-AZ, storage autoscaling up to `maxAllocatedStorageGb`,
 * backups, Performance Insights encrypted with the tenant key, log exports to CloudWatch, and
 * enhanced monitoring through a role of its own (in the tenant's account, for the account tier).
 */
export class TenantDatabase extends pulumi.ComponentResource {
  readonly instanceId: pulumi.Output<string>;
  readonly address: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  /** The RDS-managed master secret: its ARN, never its value (the dynamic provider reads it when it connects). */
  readonly masterSecretArn: pulumi.Output<string>;

  constructor(name: string, args: TenantDatabaseArgs, opts?: pulumi.ComponentResourceOptions) {
    super('tenantry:tenant:Database', name, {}, opts);
    const identifier = rdsIdentifier(args.slug);
    const params = new aws.rds.ParameterGroup(
      `${name}-params`,
      {
        family: parameterGroupFamily(args.rds.engineVersion),
        description: `Tenantry ${args.slug}: logical replication for tier moves`,
        parameters: [
          // Static parameter: takes effect at the next reboot (first boot for a new instance).
          { name: 'rds.logical_replication', value: '1', applyMethod: 'pending-reboot' },
          { name: 'rds.force_ssl', value: '1', applyMethod: 'pending-reboot' },
        ],
        tags: args.tags,
      },
      { parent: this, retainOnDelete: args.retainOnDelete },
    );
    const monitoring =
      args.rds.monitoringIntervalSeconds > 0
        ? new aws.iam.Role(
            `${name}-monitoring`,
            {
              description: `Tenantry ${args.slug}: RDS enhanced monitoring`,
              assumeRolePolicy: RDS_MONITORING_TRUST,
              managedPolicyArns: [RDS_MONITORING_POLICY],
              tags: args.tags,
            },
            { parent: this, retainOnDelete: args.retainOnDelete },
          )
        : undefined;
    const instance = new aws.rds.Instance(
      `${name}-instance`,
      {
        identifier,
        engine: 'postgres',
        engineVersion: args.rds.engineVersion,
        instanceClass: args.rds.instanceClass,
        allocatedStorage: args.rds.allocatedStorageGb,
        // Storage autoscaling: RDS grows the volume up to this ceiling when it runs low.
        maxAllocatedStorage: args.rds.maxAllocatedStorageGb,
        multiAz: args.rds.multiAz,
        storageType: 'gp3',
        storageEncrypted: true,
        kmsKeyId: args.kmsKeyArn,
        username: RDS_MASTER_USERNAME,
        manageMasterUserPassword: true,
        masterUserSecretKmsKeyId: args.kmsKeyArn,
        parameterGroupName: params.name,
        dbSubnetGroupName: args.dbSubnetGroupName,
        vpcSecurityGroupIds: args.vpcSecurityGroupIds,
        publiclyAccessible: false,
        deletionProtection: args.deletionProtection,
        // Offboarding lifts the protection for the destroy that follows: not in the next maintenance window.
        ...(args.deletionProtection ? {} : { applyImmediately: true }),
        skipFinalSnapshot: false,
        finalSnapshotIdentifier: args.discardedAt
          ? discardedSnapshotIdentifier(args.slug, args.tenantId, args.discardedAt)
          : finalSnapshotIdentifier(args.slug, args.tenantId),
        backupRetentionPeriod: args.rds.backupRetentionDays,
        performanceInsightsEnabled: true,
        performanceInsightsKmsKeyId: args.kmsKeyArn,
        performanceInsightsRetentionPeriod: args.rds.performanceInsightsRetentionDays,
        enabledCloudwatchLogsExports: args.rds.logExports,
        ...(monitoring
          ? { monitoringInterval: args.rds.monitoringIntervalSeconds, monitoringRoleArn: monitoring.arn }
          : {}),
        copyTagsToSnapshot: true,
        autoMinorVersionUpgrade: true,
        tags: args.tags,
      },
      { parent: this, retainOnDelete: args.retainOnDelete },
    );
    this.instanceId = instance.identifier;
    this.address = instance.address;
    this.port = instance.port;
    this.masterSecretArn = instance.masterUserSecrets.apply((s) => {
      const arn = s[0]?.secretArn;
      if (!arn) throw new Error(`RDS instance ${identifier} reported no master user secret`);
      return arn;
    });
    this.registerOutputs({
      instanceId: this.instanceId,
      address: this.address,
      masterSecretArn: this.masterSecretArn,
    });
  }
}
