import fs from 'node:fs';
import path from 'node:path';
import type { ArchiveObject } from '../aws/s3-exports.js';
import type { DataPlane } from '../dataplane/dataplane.js';
import { TenantryError } from '../domain/errors.js';
import {
  type ExportParams,
  isExportParams,
  isRestoreParams,
  type LifecycleKind,
  RESTORE_STEPS,
} from '../domain/lifecycle.js';
import type { StepContext } from '../domain/ports.js';
import type { Tier } from '../domain/tiers.js';
import {
  type ArchivePlacement,
  digestDifferences,
  readManifest,
  restoreArchive,
  restoreOutcome,
  tableDigests,
  verifyArchive,
  writeArchive,
} from '../export/archive.js';
import type { Manifest } from '../export/format.js';
import type { Placement } from '../promotion/placement.js';
import { awsTenantStateSteps } from './aws-suspension.js';

/**
 * The aws target's `export` step (docs/lifecycle.md): the tenant's rows, read from its placement (on the
 * shared cluster, `managedPlacementOf`, as a promotion's row move reads them; or on its own instance, as
 * its admin: engine/aws.ts `ownInstance`), written to an archive in
 * the data directory (export/archive.ts, streamed with COPY), then streamed to S3 encrypted with the
 * tenant's own KMS key (aws/s3-exports.ts), and the local copy removed.
 *
 * Idempotent: a re-run after a crash finds a complete upload (its digests in the object's metadata) and
 * only reads its manifest back; a local archive a crash left is reused (writeArchive), an upload that
 * did not complete is started again (lib-storage aborts a failed multipart upload).
 */

/** Where the archives go, and where they are staged first. */
export interface AwsExportSettings {
  store: {
    head(uri: string): Promise<ArchiveObject | null>;
    upload(
      file: string,
      uri: string,
      kmsKeyId: string,
      meta: { bytes: number; sha256: string; manifestSha256: string },
    ): Promise<void>;
    fetchTo(uri: string, file: string): Promise<boolean>;
  };
  /** The data directory's staging folder (`<data dir>/exports`). */
  stagingDir: string;
}

/** An export's params on this target: the archive's s3:// location and the tenant's KMS key. */
export interface AwsExportParams extends ExportParams {
  kmsKeyId: string;
}

export const isAwsExportParams = (v: unknown): v is AwsExportParams =>
  isExportParams(v) && typeof (v as AwsExportParams).kmsKeyId === 'string';

/**
 * Archives on this target need the bucket. Every tier has them: pool and bridge on the shared cluster,
 * silo and account on an instance of their own (an account tenant's inside its account).
 */
function assertArchives(exports: boolean): void {
  if (!exports)
    throw new TenantryError(
      'EXPORT_NOT_AVAILABLE_ON_TARGET',
      "archives on the aws target are in an S3 bucket under each tenant's key: set TENANTRY_EXPORT_BUCKET",
    );
}

/** The aws target's lifecycle steps: an export; suspension and limits (aws-suspension.ts). */
export function awsLifecycleSteps(kind: LifecycleKind, tier: Tier, exports: boolean): string[] {
  if (kind !== 'export') return awsTenantStateSteps(kind, tier);
  assertArchives(exports);
  return ['export'];
}

/** The steps an onboarding from an archive in S3 runs after the stack's `up`: the rows loaded, then checked. */
export function awsRestoreSteps(exports: boolean): string[] {
  assertArchives(exports);
  return [...RESTORE_STEPS];
}

/** An admin session on the placement's database: the shared cluster's data database, or a silo's (or account's) own. */
export type PlacementAdmin = Pick<DataPlane, 'withData'>;

/** How an archive reaches the tenant's rows in a placement. */
export const archivePlacementOf = (p: Placement): ArchivePlacement => ({
  schema: p.schema,
  shared: p.shared,
  ...(p.context ? { tenantSetting: p.context.setting } : {}),
});

export async function runAwsExport(
  ctx: StepContext,
  settings: AwsExportSettings,
  where: () => Promise<{ dp: PlacementAdmin; placement: Placement }>,
): Promise<void> {
  const t = ctx.tenant;
  const params = (ctx.params ?? {}) as Record<string, unknown>;
  const p = ctx.kind === 'offboard' ? params.finalExport : params;
  if (!isAwsExportParams(p))
    throw new TenantryError('PROVIDER_FAILED', "the export step has no archive location or tenant's key");
  const staging = path.join(settings.stagingDir, `${p.exportId}.tenantry.gz`);
  let out: { bytes: number; sha256: string; manifest: Manifest };
  const uploaded = await settings.store.head(p.file);
  if (uploaded) {
    // A run before a crash finished the upload: read its manifest back (streamed, checked end to end).
    await fs.promises.mkdir(settings.stagingDir, { recursive: true, mode: 0o700 });
    const copy = `${staging}.check`;
    try {
      if (!(await settings.store.fetchTo(p.file, copy)))
        throw new TenantryError('PROVIDER_FAILED', `the archive at ${p.file} vanished`);
      const { manifest } = await verifyArchive(copy);
      out = { bytes: uploaded.bytes, sha256: uploaded.sha256, manifest };
    } finally {
      await fs.promises.rm(copy, { force: true });
    }
  } else {
    const { dp, placement } = await where();
    const written = await dp.withData((db) =>
      writeArchive(db, archivePlacementOf(placement), staging, {
        exportId: p.exportId,
        tenant: { id: t.id, slug: t.slug, tier: t.tier },
        schemaVersion: t.templateVersion,
      }),
    );
    await settings.store.upload(staging, p.file, p.kmsKeyId, {
      bytes: written.bytes,
      sha256: written.sha256,
      manifestSha256: written.manifestSha256,
    });
    out = written;
  }
  await fs.promises.rm(staging, { force: true });
  await ctx.report?.({
    archive: { exportId: p.exportId, bytes: out.bytes, sha256: out.sha256, manifest: out.manifest },
  });
}

/**
 * An onboarding's `restore` and `verify-restore` steps on this target: the archive streamed from S3 to
 * the data directory, then loaded into the tenant's new placement in one transaction (export/archive.ts
 * `restoreArchive`: every digest checked, the manifest the one accepted, idempotent), or the placement's
 * rows compared with its manifest. The local copy is removed either way.
 */
export async function runAwsRestore(
  ctx: StepContext,
  settings: AwsExportSettings,
  where: () => Promise<{ dp: PlacementAdmin; placement: Placement }>,
): Promise<void> {
  const t = ctx.tenant;
  const p = ((ctx.params ?? {}) as Record<string, unknown>).fromExport;
  if (!isRestoreParams(p))
    throw new TenantryError('PROVIDER_FAILED', 'the restore step has no archive to read');
  await fs.promises.mkdir(settings.stagingDir, { recursive: true, mode: 0o700 });
  const local = path.join(settings.stagingDir, `restore-${ctx.operationId}-${ctx.step}.tenantry.gz`);
  try {
    if (!(await settings.store.fetchTo(p.file, local)))
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the archive of export ${p.exportId} is gone from its bucket`,
      );
    const { dp, placement } = await where();
    const ap = archivePlacementOf(placement);
    if (ctx.step === 'restore') {
      // Run first: `report?.(…)` would skip evaluating its argument when there is no reporter.
      const outcome = await restoreOutcome(
        dp.withData((db) => restoreArchive(db, ap, local, t.id, p.manifestSha256)),
        p.exportId,
      );
      await ctx.report?.(outcome);
      return;
    }
    const manifest = await readManifest(local);
    const diffs = digestDifferences(manifest, await dp.withData((db) => tableDigests(db, ap, t.id)));
    if (diffs.length > 0)
      throw new TenantryError(
        'PROVIDER_FAILED',
        `the restored rows differ from the archive's manifest: ${diffs.join('; ')}`,
      );
  } finally {
    await fs.promises.rm(local, { force: true });
  }
}
