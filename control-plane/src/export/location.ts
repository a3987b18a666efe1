/**
 * Where an export's archive is, as its row records it (`exports.path`): a file in the data directory
 * (local target), or `s3://<bucket>/exports/<tenant id>/<export id>.tenantry.gz` (aws target,
 * TENANTRY_EXPORT_BUCKET; aws/s3-exports.ts reads and writes it).
 */
const SCHEME = 's3://';

export const S3ArchiveLocation = {
  of(bucket: string, tenantId: string, exportId: string): string {
    return `${SCHEME}${bucket}/exports/${tenantId}/${exportId}.tenantry.gz`;
  },
  is(location: string): boolean {
    return location.startsWith(SCHEME);
  },
  parse(location: string): { bucket: string; key: string } {
    if (!location.startsWith(SCHEME)) throw new Error(`not an s3:// location: ${location}`);
    const rest = location.slice(SCHEME.length);
    const slash = rest.indexOf('/');
    if (slash <= 0 || slash === rest.length - 1)
      throw new Error(`not an s3://bucket/key location: ${location}`);
    return { bucket: rest.slice(0, slash), key: rest.slice(slash + 1) };
  },
};
