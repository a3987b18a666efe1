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

/**
 * `tenantry:tenant:Database`: a dedicated RDS PostgreSQL instance encrypted with the
 * tenant's key, private, deletion-protected, with a final snapshot, and the master
 * password managed by RDS in a secret encrypted with the same key.
 */
export class TenantDatabase extends pulumi.ComponentResource {
  readonly instanceId: pulumi.Output<string>;
  readonly address: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  readonly masterSecretArn: pulumi.Output<string>;
  /** The master secret's JSON (username/password). A secret. */
  readonly masterSecretString: pulumi.Output<string>;

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
    const instance = new aws.rds.Instance(
      `${name}-instance`,
      {
        identifier,
        engine: 'postgres',
        engineVersion: args.rds.engineVersion,
        instanceClass: args.rds.instanceClass,
        allocatedStorage: args.rds.allocatedStorageGb,
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
    this.masterSecretString = pulumi.secret(
      aws.secretsmanager.getSecretVersionOutput({ secretId: this.masterSecretArn }, { parent: this })
        .secretString,
    );
    this.registerOutputs({
      instanceId: this.instanceId,
      address: this.address,
      masterSecretArn: this.masterSecretArn,
    });
  }
}
