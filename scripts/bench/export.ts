/**
 * Export benchmark: one tenant of 1,000,000 rows (by default) exported through the API on the embedded
 * default, then restored into a new tenant of another tier. The control plane runs `npm start`'s entry
 * point in its own process; the export streams every table with COPY into the archive (export/).
 *
 *   npx tsx scripts/bench/export.ts [--rows 1000000] [--tier bridge] [--restore-tier silo]
 *
 * In the same run, the floor: the same rows, in the same order, COPY'd TO a plain file from this
 * process (no framing, no digests, no gzip).
 *
 * Prints JSON: the export's time against the floor's, the control-plane process's peak resident memory
 * during the export and during the restore (its VmHWM, reset just before each; target ≤ 250 MB at 1M
 * rows, whatever the tenant's size), and the archive's size.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { round, startControlPlane } from './lib.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    tier: { type: 'string', default: 'bridge' },
    'restore-tier': { type: 'string', default: 'silo' },
  },
});
const ROWS = Number(values.rows);
const TIER = values.tier as 'pool' | 'bridge' | 'silo';
const RESTORE_TIER = values['restore-tier'] as 'pool' | 'bridge' | 'silo';
const log = (msg: string) => process.stderr.write(`[bench:export] ${msg}\n`);

const cp = await startControlPlane({ TENANTRY_DRIFT_SCHEDULE: 'off', TENANTRY_ROTATION_SCHEDULE: 'off' });
try {
  const api = async (method: string, url: string, body?: unknown) => {
    const res = await fetch(`${cp.base}${url}`, {
      method,
      headers: {
        authorization: `Bearer ${cp.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const json = (await res.json()) as Record<string, unknown>;
    if (res.status >= 400) throw new Error(`${method} ${url}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  const waitFor = async (operationId: string) => {
    for (;;) {
      const op = (await api('GET', `/v1/operations/${operationId}`)) as { status: string; error?: string };
      if (op.status === 'succeeded') return;
      if (op.status === 'failed') throw new Error(`operation ${operationId} failed: ${op.error}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const resetPeakRss = () => fs.writeFileSync(`/proc/${cp.proc.pid}/clear_refs`, '5');

  const slug = `bench-${TIER}`;
  const created = (await api('POST', '/v1/tenants', { slug, name: 'Export bench', tier: TIER })) as {
    tenant: { id: string };
    operation: { id: string };
  };
  await waitFor(created.operation.id);
  const tenantId = created.tenant.id;
  const database = TIER === 'silo' ? tenantObjectName(slug) : 'tenantry_data';
  const schema = TIER === 'pool' ? 'pool' : TIER === 'silo' ? 'app' : tenantObjectName(slug);

  // 1M rows: nine in ten users, one in ten documents (owned by the first users).
  const docs = Math.floor(ROWS / 10);
  const users = ROWS - docs;
  const admin = new pg.Client({ connectionString: cp.pgUrl(database) });
  await admin.connect();
  log(`writing ${ROWS} rows into the ${TIER} tenant`);
  await admin.query(
    `INSERT INTO ${schema}.users (tenant_id, email, name)
     SELECT $1, 'user' || i || '@bench.test', 'User number ' || i FROM generate_series(1, $2) i`,
    [tenantId, users],
  );
  await admin.query(
    `INSERT INTO ${schema}.documents (tenant_id, owner_id, title, body)
     SELECT tenant_id, id, 'Document of ' || email, repeat('lorem ipsum ', 8) FROM ${schema}.users
      WHERE tenant_id = $1 LIMIT $2`,
    [tenantId, docs],
  );
  await admin.query(`VACUUM ANALYZE ${schema}.users`);
  await admin.query(`VACUUM ANALYZE ${schema}.documents`);

  // The floor: the same rows in the same order, COPY'd TO a plain file, nothing else.
  const floorFile = path.join(cp.dataDir, 'floor.copy');
  const where = TIER === 'pool' ? `WHERE tenant_id = '${tenantId}'` : '';
  const floorStart = performance.now();
  let floorBytes = 0;
  for (const sql of [
    `SELECT id, email, name, created_at FROM ${schema}.users ${where} ORDER BY id`,
    `SELECT id, owner_id, title, body, created_at, updated_at FROM ${schema}.documents ${where} ORDER BY id`,
    `SELECT key COLLATE "C", value, updated_at FROM ${schema}.settings ${where} ORDER BY key COLLATE "C"`,
  ]) {
    const out = fs.createWriteStream(floorFile, { flags: 'a' });
    await pipeline(admin.query(copyTo(`COPY (${sql}) TO STDOUT`)) as unknown as Readable, out);
    floorBytes = fs.statSync(floorFile).size;
  }
  const floorMs = performance.now() - floorStart;
  await admin.end();

  // What the process holds idle: the floor the export's peak is measured against.
  resetPeakRss();
  await new Promise((r) => setTimeout(r, 1000));
  const idlePeak = cp.peakRssMb();

  log('exporting through the API');
  resetPeakRss();
  const exportStart = performance.now();
  const exp = (await api('POST', `/v1/tenants/${slug}/exports`)) as {
    operation: { id: string };
    export: { id: string };
  };
  await waitFor(exp.operation.id);
  const exportMs = performance.now() - exportStart;
  const exportPeak = cp.peakRssMb();
  const ready = (await api('GET', `/v1/exports/${exp.export.id}`)) as {
    bytes: number;
    manifest: { tables: { name: string; rows: number }[] };
  };
  const exportedRows = ready.manifest.tables.reduce((n, t) => n + t.rows, 0);

  log(`restoring into a new ${RESTORE_TIER} tenant`);
  resetPeakRss();
  const restoreStart = performance.now();
  const restored = (await api('POST', '/v1/tenants', {
    slug: `bench-restored-${RESTORE_TIER}`,
    name: 'Restore bench',
    tier: RESTORE_TIER,
    fromExport: exp.export.id,
  })) as { operation: { id: string } };
  await waitFor(restored.operation.id);
  const restoreMs = performance.now() - restoreStart;
  const restorePeak = cp.peakRssMb();
  // Where the restore's time goes, step by step (provisioning, loading, checking).
  const restoreOp = (await api('GET', `/v1/operations/${restored.operation.id}`)) as {
    steps: { name: string; startedAt: string; finishedAt: string }[];
  };
  const restoreSteps = Object.fromEntries(
    restoreOp.steps.map((x) => [x.name, Date.parse(x.finishedAt) - Date.parse(x.startedAt)]),
  );

  process.stdout.write(
    `${JSON.stringify(
      {
        rows: ROWS,
        tier: TIER,
        exportedRows,
        export: {
          ms: round(exportMs, 0),
          peakRssMb: exportPeak,
          idlePeakRssMb: idlePeak,
          archiveMb: round(ready.bytes / 1024 / 1024, 1),
        },
        floor: {
          what: 'the same rows COPY TO a plain file',
          ms: round(floorMs, 0),
          mb: round(floorBytes / 1024 / 1024, 1),
        },
        exportOverFloor: round(exportMs / floorMs, 2),
        restore: {
          tier: RESTORE_TIER,
          msIncludingOnboarding: round(restoreMs, 0),
          stepsMs: restoreSteps,
          peakRssMb: restorePeak,
        },
        targets: { peakRssMb: 250 },
        met: {
          exportMemory: exportPeak <= 250,
          restoreMemory: restorePeak <= 250,
          allRows: exportedRows === ROWS,
        },
      },
      null,
      2,
    )}\n`,
  );
} finally {
  await cp.stop();
}
