import { createHash } from 'node:crypto';
import { assertSlug } from '../../control-plane/src/domain/naming.js';

/**
 * The RDS instance identifier of a tenant. RDS refuses `--` and a trailing `-`, which
 * slugs allow, so runs of hyphens are folded and a short hash of the slug keeps the
 * mapping injective (`a--b` and `a-b` stay distinct).
 */
export function rdsIdentifier(slug: string): string {
  const folded = assertSlug(slug).replace(/-+/g, '-').replace(/-$/, '');
  const hash = createHash('sha256').update(slug).digest('hex').slice(0, 6);
  return `tenantry-${folded}-${hash}`;
}

/** The final snapshot taken when a tenant's instance is deleted; the tenant id keeps re-onboarded slugs apart. */
export function finalSnapshotIdentifier(slug: string, tenantId: string): string {
  return `${rdsIdentifier(slug)}-final-${tenantId.replace(/-/g, '').slice(0, 12)}`;
}

/** The final snapshot of a promotion's discarded staged instance (UTC minute of the discard run). */
export function discardedSnapshotIdentifier(slug: string, tenantId: string, at: Date): string {
  const stamp = at.toISOString().slice(0, 16).replace(/[-:T]/g, '');
  return `${finalSnapshotIdentifier(slug, tenantId)}-discarded-${stamp}`;
}

/**
 * Account tier offboarding: the snapshot taken inside the tenant's account and shared with the
 * platform's, then its copy in the platform account (re-encrypted with the archive key), which
 * outlives the account's closure.
 */
export function exportSnapshotIdentifier(slug: string, tenantId: string): string {
  return `${finalSnapshotIdentifier(slug, tenantId)}-export`;
}
export function archivedSnapshotIdentifier(slug: string, tenantId: string): string {
  return `${finalSnapshotIdentifier(slug, tenantId)}-archive`;
}

/** The parameter group family of an engine version: "16" or "16.4" gives postgres16. */
export function parameterGroupFamily(engineVersion: string): string {
  const major = /^(\d+)/.exec(engineVersion)?.[1];
  if (!major) throw new Error(`invalid postgres engine version: ${engineVersion}`);
  return `postgres${major}`;
}

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
