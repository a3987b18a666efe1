import * as aws from '@pulumi/aws';
import type * as pulumi from '@pulumi/pulumi';
import { need } from './config.js';
import { arnAccount } from './key-policy.js';
import { archivedSnapshotIdentifier, exportSnapshotIdentifier } from './names.js';
import type { ProgramContext } from './program.js';

/** The export's two resources, children of the stack itself (so their URNs are known before they exist). */
export const exportResourceNames = (slug: string) => ({
  snapshot: `tenant-${slug}-export`,
  copy: `tenant-${slug}-export-copy`,
});
const SNAPSHOT_TYPE = 'aws:rds/snapshot:Snapshot';
const COPY_TYPE = 'aws:rds/snapshotCopy:SnapshotCopy';

/**
 * The URNs of the export's resources in a stack. The offboarding `up` is targeted at the resources
 * already in the stack (it must not create what a failed onboarding left out); these two are added to
 * its targets when the stack has an RDS instance to export.
 */
export function exportResourceUrns(stack: string, project: string, slug: string): string[] {
  const n = exportResourceNames(slug);
  // A resource without a parent is the stack's child: its type is qualified with the stack's.
  const root = `urn:pulumi:${stack}::${project}::pulumi:pulumi:Stack$`;
  return [`${root}${SNAPSHOT_TYPE}::${n.snapshot}`, `${root}${COPY_TYPE}::${n.copy}`];
}

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
