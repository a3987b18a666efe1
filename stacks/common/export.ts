import * as aws from '@pulumi/aws';
import type * as pulumi from '@pulumi/pulumi';
import { need } from './config.js';
import { arnAccount } from './key-policy.js';
import { archivedSnapshotIdentifier, exportResourceNames, exportSnapshotIdentifier } from './names.js';
import type { ProgramContext } from './program.js';

/**
 * Account tier offboarding, before the destroy: the tenant's database leaves its account first. A
 * manual snapshot inside the account (through the in-account provider), shared with the platform
 * account, then copied there (the default provider) and re-encrypted with the platform's archive key.
 * The copy is retained when the stack is destroyed; the account's own final snapshot, and the tenant
 * key that encrypts it, go with the account when it is closed.
 */
export function exportFinalSnapshot(
  ctx: ProgramContext,
  instanceId: pulumi.Input<string>,
  inAccount: pulumi.ProviderResource,
): aws.rds.SnapshotCopy {
  const { slug, tenantId } = ctx.input;
  const settings = need(ctx.settings.account, 'account', 'accountArchiveKmsKeyArn');
  const platform = arnAccount(ctx.settings.adminRoleArn).accountId;
  const n = exportResourceNames(slug);
  const snapshot = new aws.rds.Snapshot(
    n.snapshot,
    {
      dbInstanceIdentifier: instanceId,
      dbSnapshotIdentifier: exportSnapshotIdentifier(slug, tenantId),
      sharedAccounts: [platform],
      tags: ctx.tags,
    },
    { provider: inAccount },
  );
  return new aws.rds.SnapshotCopy(
    n.copy,
    {
      sourceDbSnapshotIdentifier: snapshot.dbSnapshotArn,
      targetDbSnapshotIdentifier: archivedSnapshotIdentifier(slug, tenantId),
      kmsKeyId: settings.archiveKmsKeyArn,
      copyTags: true,
      tags: ctx.tags,
    },
    { retainOnDelete: true, dependsOn: [snapshot] },
  );
}
