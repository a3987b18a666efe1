import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { TaskList } from 'graphile-worker';
import type { Logger } from 'pino';
import { appendAudit } from '../db/audit.js';
import type { Db } from '../db/db.js';
import { type ExportRecord, expireExports, findExport, insertExport, listExports } from '../db/exports.js';
import { findTenantBySlug } from '../db/repo.js';
import { can, type Role } from '../domain/auth.js';
import { TenantryError } from '../domain/errors.js';
import { newExportId, newOperationId } from '../domain/ids.js';
import type { ExportParams, RestoreParams } from '../domain/lifecycle.js';
import type { Engine } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import type { Tenant } from '../domain/tenant.js';
import { verifyArchive } from '../export/archive.js';
import { ArchiveError, type Manifest, manifestDigest } from '../export/format.js';
import { S3ArchiveLocation } from '../export/location.js';
import {
  type Accepted,
  assertNoActiveOperation,
  enqueueTenantOperation,
  type RequestContext,
} from './tenants.js';

/** An export as the API shows it: never where its archive is (on disk or in S3). */
export type ExportView = Omit<ExportRecord, 'path'>;
export const exportView = ({ path: _internal, ...rest }: ExportRecord): ExportView => rest;

/** What the service needs of the aws target's archive store (aws/s3-exports.ts). */
export interface S3Archives {
  open(uri: string): Promise<Readable | null>;
  fetchTo(uri: string, file: string): Promise<boolean>;
  delete(uri: string): Promise<void>;
}

/** graphile-worker's cron task that deletes archives past their retention. */
export const EXPORTS_EXPIRE_TASK = 'exports-expire';

/**
 * A tenant's data in one archive (docs/lifecycle.md): an `export` operation writes it (export/), the
 * API lists and streams it, an onboarding restores it (`fromExport`, verified here first), and an
 * offboarding can take a final one. Archives live in the local target's data directory; on the aws
 * target in S3 (TENANTRY_EXPORT_BUCKET), each encrypted with its tenant's KMS key (aws/s3-exports.ts).
 */
export class ExportService {
  readonly dir: string;

  constructor(
    private readonly db: Db,
    private readonly engine: Engine,
    private readonly opts: {
      dataDir: string;
      exportRetentionMs: number;
      finalExportRetentionMs: number;
      maxAttempts: number;
      log?: Logger;
      /** The aws target's archives: its bucket (unset: exports refused there) and the S3 client over it. */
      s3?: { bucket: string | undefined; store: S3Archives | undefined };
    },
  ) {
    this.dir = path.join(opts.dataDir, 'exports');
  }

  /** Where an export's archive is written. */
  fileFor(id: string): string {
    return path.join(this.dir, `${id}.tenantry.gz`);
  }

  /** Refuses where exports are not available: a target or tier without them, the aws target without a bucket. */
  assertAvailable(tier: Tenant['tier']): void {
    if (this.engine.target === 'aws') {
      if (!this.opts.s3?.bucket || !this.opts.s3.store)
        throw new TenantryError(
          'EXPORT_NOT_AVAILABLE_ON_TARGET',
          "exports on the aws target go to an S3 bucket encrypted with the tenant's key: set TENANTRY_EXPORT_BUCKET",
        );
      // The engine says which tiers it exports (engine/aws-exports.ts).
      this.engine.lifecycleSteps?.('export', tier);
      return;
    }
    if (!this.engine.lifecycleSteps || tier === 'account') {
      throw new TenantryError(
        'EXPORT_NOT_AVAILABLE_ON_TARGET',
        `exports are not available for the ${tier} tier on the ${this.engine.target} target`,
      );
    }
  }

  /** Accepts an export of a tenant's data; the worker writes the archive (202 with the export, pending). */
  start(ctx: RequestContext, slug: string): Promise<Accepted['body'] & { export: ExportView }> {
    return this.db.tx(async (q) => {
      const tenant = await findTenantBySlug(q, slug, { forUpdate: true });
      if (!tenant || tenant.status === 'offboarded')
        throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
      this.assertAvailable(tenant.tier);
      if (tenant.status !== 'active' && tenant.status !== 'suspended')
        throw new TenantryError(
          'TENANT_NOT_ACTIVE',
          `tenant ${slug} is ${tenant.status}; only an active or suspended tenant is exported`,
        );
      await assertNoActiveOperation(q, tenant);
      const operationId = newOperationId();
      const exp = await this.insert(q, tenant, operationId, { final: false, createdBy: ctx.actor.id });
      const params = this.paramsOf(tenant, exp);
      const operation = await enqueueTenantOperation(
        q,
        tenant,
        {
          id: operationId,
          kind: 'export',
          steps: this.engine.lifecycleSteps?.('export', tenant.tier) ?? [],
          params: { ...params },
        },
        this.opts.maxAttempts,
      );
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'tenant.export',
        tenantId: tenant.id,
        tenantSlug: tenant.slug,
        requestId: ctx.requestId,
        operationId,
        details: { exportId: exp.id },
      });
      return { tenant, operation, export: exportView(exp) };
    });
  }

  /**
   * The export row of an offboarding's final export (`?export=true`), in the offboarding's transaction:
   * its archive is written by the offboarding's first step and kept for the final retention.
   */
  async finalExport(
    q: Queryable,
    tenant: Tenant,
    operationId: string,
    createdBy: string | null,
  ): Promise<ExportParams> {
    this.assertAvailable(tenant.tier);
    const exp = await this.insert(q, tenant, operationId, { final: true, createdBy });
    return this.paramsOf(tenant, exp);
  }

  /** An export step's params: where the archive goes, and on the aws target the tenant's KMS key. */
  private paramsOf(tenant: Tenant, exp: ExportRecord): ExportParams {
    const params: ExportParams = { exportId: exp.id, file: exp.path };
    if (!this.s3Bucket) return params;
    const key = tenant.outputs.keyArn ?? tenant.outputs.keyId;
    if (typeof key !== 'string' || key === '')
      throw new TenantryError(
        'EXPORT_NOT_AVAILABLE_ON_TARGET',
        `tenant ${tenant.slug} has no KMS key in its outputs to encrypt its archive with`,
      );
    return { ...params, kmsKeyId: key } as ExportParams;
  }

  private get s3Bucket(): string | undefined {
    return this.engine.target === 'aws' ? this.opts.s3?.bucket : undefined;
  }

  private insert(
    q: Queryable,
    tenant: Tenant,
    operationId: string,
    o: { final: boolean; createdBy: string | null },
  ): Promise<ExportRecord> {
    const id = newExportId();
    return insertExport(q, {
      id,
      tenantId: tenant.id,
      tenantSlug: tenant.slug,
      tier: tenant.tier,
      operationId,
      final: o.final,
      path: this.s3Bucket ? S3ArchiveLocation.of(this.s3Bucket, tenant.id, id) : this.fileFor(id),
      createdBy: o.createdBy,
      retentionMs: o.final ? this.opts.finalExportRetentionMs : this.opts.exportRetentionMs,
    });
  }

  async get(id: string): Promise<ExportView> {
    const e = await findExport(this.db, id);
    if (!e) throw new TenantryError('EXPORT_NOT_FOUND', `no export ${id}`);
    return exportView(e);
  }

  /** A tenant's exports (the current tenant with this slug, or the latest offboarded one), newest first. */
  async list(slug: string, f: { limit: number; before?: string }): Promise<ExportView[]> {
    const tenant = await findTenantBySlug(this.db, slug);
    if (!tenant) throw new TenantryError('TENANT_NOT_FOUND', `no tenant ${slug}`);
    return (await listExports(this.db, tenant.id, f)).map(exportView);
  }

  /** A ready export's archive, to stream; the download is audited first, in its own transaction. */
  async download(ctx: RequestContext, id: string): Promise<{ export: ExportView; stream: Readable }> {
    const e = await this.db.tx(async (q) => {
      const found = await findExport(q, id, { forShare: true });
      if (!found) throw new TenantryError('EXPORT_NOT_FOUND', `no export ${id}`);
      this.assertReady(found);
      await appendAudit(q, {
        actor: ctx.actor,
        action: 'export.download',
        tenantId: found.tenantId,
        tenantSlug: found.tenantSlug,
        requestId: ctx.requestId,
        operationId: found.operationId,
        details: { exportId: id, bytes: found.bytes, sha256: found.sha256 },
      });
      return found;
    });
    if (S3ArchiveLocation.is(e.path)) {
      const body = await this.s3Store().open(e.path);
      if (!body)
        throw new TenantryError('EXPORT_NOT_FOUND', `the archive of export ${id} is gone from its bucket`);
      return { export: exportView(e), stream: body };
    }
    const stream = fs.createReadStream(e.path);
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', () =>
        reject(
          new TenantryError(
            'EXPORT_NOT_FOUND',
            `the archive of export ${id} is gone from the data directory`,
          ),
        ),
      );
    });
    return { export: exportView(e), stream };
  }

  private assertReady(e: ExportRecord): void {
    if (e.status === 'expired')
      throw new TenantryError(
        'EXPORT_NOT_FOUND',
        `export ${e.id} expired on ${e.expiresAt}; its archive is deleted`,
      );
    if (e.status !== 'ready')
      throw new TenantryError(
        'EXPORT_NOT_READY',
        `export ${e.id} is ${e.status}${e.error ? `: ${e.error}` : ''}`,
      );
  }

  /**
   * Checks an archive before an onboarding restores it, creating nothing: the export is ready, its
   * archive's every table digest and count match its manifest, and that manifest is the one recorded
   * when the archive was written. The schema version is compared with the new tenant's in the
   * onboarding's transaction. Throws EXPORT_INVALID with what is wrong.
   */
  async prepareRestore(
    ctx: RequestContext,
    exportId: string,
    tier: Tenant['tier'],
  ): Promise<{
    params: RestoreParams;
    manifest: Manifest;
    export: ExportRecord;
  }> {
    if (!can(ctx.actor.role as Role, 'tenants:export'))
      throw new TenantryError(
        'FORBIDDEN',
        `role ${ctx.actor.role} may not tenants:export (a restore copies an export's rows)`,
      );
    this.assertAvailable(tier);
    if (!this.engine.restoreSteps)
      throw new TenantryError(
        'EXPORT_NOT_AVAILABLE_ON_TARGET',
        `restores are not available on the ${this.engine.target} target`,
      );
    const e = await findExport(this.db, exportId);
    if (!e) throw new TenantryError('EXPORT_NOT_FOUND', `no export ${exportId}`);
    this.assertReady(e);
    let verified: { manifest: Manifest; manifestSha256: string };
    try {
      verified = await this.verifyAt(e);
    } catch (err) {
      if (err instanceof ArchiveError)
        throw new TenantryError('EXPORT_INVALID', `export ${exportId} cannot be restored: ${err.message}`);
      throw err;
    }
    if (!e.manifest || manifestDigest(e.manifest) !== verified.manifestSha256)
      throw new TenantryError(
        'EXPORT_INVALID',
        `export ${exportId} cannot be restored: its archive's manifest is not the one recorded when it was written`,
      );
    return {
      params: { exportId, file: e.path, manifestSha256: verified.manifestSha256 },
      manifest: verified.manifest,
      export: e,
    };
  }

  /**
   * Checks an archive end to end where it is: a file, or an S3 object streamed to the data directory
   * first (and removed after), so that nothing is created from an archive that does not check out.
   */
  private async verifyAt(e: ExportRecord): Promise<{ manifest: Manifest; manifestSha256: string }> {
    if (!S3ArchiveLocation.is(e.path)) return verifyArchive(e.path);
    await fs.promises.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const local = path.join(this.dir, `check-${e.id}-${randomBytes(4).toString('hex')}.tenantry.gz`);
    try {
      if (!(await this.s3Store().fetchTo(e.path, local)))
        throw new TenantryError('EXPORT_NOT_FOUND', `the archive of export ${e.id} is gone from its bucket`);
      return await verifyArchive(local);
    } finally {
      await fs.promises.rm(local, { force: true });
    }
  }

  /** Deletes archives past their retention (their rows stay, `expired`). */
  async expire(): Promise<number> {
    let n = 0;
    for (;;) {
      const batch = await this.db.tx((q) => expireExports(q));
      for (const e of batch) {
        if (S3ArchiveLocation.is(e.path)) {
          await this.s3Store().delete(e.path);
          continue;
        }
        await fs.promises.rm(e.path, { force: true });
        await fs.promises.rm(`${e.path}.partial`, { force: true });
      }
      n += batch.length;
      if (batch.length === 0) return n;
    }
  }

  private s3Store(): S3Archives {
    const store = this.opts.s3?.store;
    if (!store)
      throw new TenantryError(
        'EXPORT_NOT_AVAILABLE_ON_TARGET',
        'this archive is in S3, and this process has no S3 client (TENANTRY_EXPORT_BUCKET on the aws target)',
      );
    return store;
  }

  get taskList(): TaskList {
    return {
      [EXPORTS_EXPIRE_TASK]: async () => {
        const n = await this.expire();
        if (n > 0) this.opts.log?.info({ exports: n }, 'deleted archives past their retention');
      },
    };
  }

  /** Every hour, once across processes. */
  get crontab(): string {
    return `17 * * * * ${EXPORTS_EXPIRE_TASK} ?jobKey=exports-expire&max=1\n`;
  }
}
