import fs from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  type S3Client,
  type ServerSideEncryption,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { S3ArchiveLocation } from '../export/location.js';
import { awsErrorName, isThrottling, withRetry } from './retry.js';

/**
 * Export archives in S3 on the aws target (docs/lifecycle.md): `s3://<TENANTRY_EXPORT_BUCKET>/exports/
 * <tenant id>/<export id>.tenantry.gz`, each encrypted with its tenant's own KMS key (SSE-KMS).
 *
 * - Uploads stream from the archive written on disk with `@aws-sdk/lib-storage`'s `Upload` (8 MiB
 *   parts, two in flight: memory stays flat whatever the archive's size).
 * - The archive's size, SHA-256 and manifest digest travel as the object's metadata, so a step re-run
 *   after a crash finds an upload that completed and goes no further.
 * - Downloads stream the object's body; nothing is buffered.
 */
export const S3_PART_BYTES = 8 * 1024 * 1024;

/** What an uploaded archive's metadata says about it. */
export interface ArchiveObject {
  bytes: number;
  sha256: string;
  manifestSha256: string;
  /** The KMS key the object is encrypted with (its ARN, as S3 reports it). */
  kmsKeyId: string | null;
}

const retry = { maxAttempts: 4, isRetryable: isThrottling };

export class S3ArchiveStore {
  constructor(private readonly s3: S3Client) {}

  /**
   * Streams the archive at `file` to `uri`, encrypted with `kmsKeyId` (SSE-KMS, an S3 Bucket Key per
   * object off: the tenant's key encrypts it), its digests in the object's metadata.
   */
  async upload(
    file: string,
    uri: string,
    kmsKeyId: string,
    meta: { bytes: number; sha256: string; manifestSha256: string },
  ): Promise<void> {
    const { bucket, key } = S3ArchiveLocation.parse(uri);
    const upload = new Upload({
      client: this.s3,
      partSize: S3_PART_BYTES,
      queueSize: 2,
      leavePartsOnError: false,
      params: {
        Bucket: bucket,
        Key: key,
        Body: fs.createReadStream(file),
        ContentType: 'application/gzip',
        ServerSideEncryption: 'aws:kms' satisfies ServerSideEncryption,
        SSEKMSKeyId: kmsKeyId,
        Metadata: {
          'archive-bytes': String(meta.bytes),
          'archive-sha256': meta.sha256,
          'manifest-sha256': meta.manifestSha256,
        },
      },
    });
    await upload.done();
  }

  /** The uploaded archive's metadata, or null when there is no complete object at `uri`. */
  async head(uri: string): Promise<ArchiveObject | null> {
    const { bucket, key } = S3ArchiveLocation.parse(uri);
    try {
      const h = await withRetry(
        () => this.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })),
        retry,
      );
      const m = h.Metadata ?? {};
      if (!m['archive-sha256'] || !m['manifest-sha256']) return null;
      return {
        bytes: Number(m['archive-bytes'] ?? h.ContentLength ?? 0),
        sha256: m['archive-sha256'],
        manifestSha256: m['manifest-sha256'],
        kmsKeyId: h.SSEKMSKeyId ?? null,
      };
    } catch (e) {
      if (awsErrorName(e) === 'NotFound' || awsErrorName(e) === 'NoSuchKey') return null;
      throw e;
    }
  }

  /** The object's bytes, streamed; null when it is gone. */
  async open(uri: string): Promise<Readable | null> {
    const { bucket, key } = S3ArchiveLocation.parse(uri);
    try {
      const out = await withRetry(
        () => this.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key })),
        retry,
      );
      return (out.Body as Readable | undefined) ?? null;
    } catch (e) {
      if (awsErrorName(e) === 'NoSuchKey' || awsErrorName(e) === 'NotFound') return null;
      throw e;
    }
  }

  /** Streams the object to a local file (a restore's checks read it there); false when it is gone. */
  async fetchTo(uri: string, file: string): Promise<boolean> {
    const body = await this.open(uri);
    if (!body) return false;
    await pipeline(body, fs.createWriteStream(file, { mode: 0o600 }));
    return true;
  }

  /** Deletes the object (nothing when it is gone already). */
  async delete(uri: string): Promise<void> {
    const { bucket, key } = S3ArchiveLocation.parse(uri);
    await withRetry(() => this.s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })), retry);
  }
}
