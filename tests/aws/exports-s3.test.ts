/**
 * Exports on the aws target, to S3 on the AWS API emulator (moto_server), each archive encrypted with
 * its tenant's own KMS key (SSE-KMS).
 *
 * What cannot run here is the Pulumi `up` that builds a tenant on the aws target's shared cluster. The
 * tenants are built instead by a control plane on the local target (keys in KMS on the emulator:
 * TENANTRY_SECRETS=aws), whose data database has the same layout the stacks' dynamic provider gives the
 * shared cluster; the aws engine is pointed at it through the shared cluster's admin secret (as
 * tests/integration/aws-promotion.test.ts does), so its `export` step reads the tenant's real placement
 * through `managedPlacementOf`. The step, the upload, the service's download and expiry are the real
 * ones; S3 and KMS are the emulator's. A silo's and an account tenant's instance is the same test server,
 * reached through a master secret (the account tenant's inside a member account vended on the emulator,
 * read through the account's role); the tenant key is the platform account's KMS key on the emulator (an
 * account tenant's is in its own account on AWS, which S3 uses by ARN: the emulator does not check
 * cross-account key use). A pool tenant's suspension (its rows frozen on the shared cluster) runs on the
 * same setup, at the end.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DescribeKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { CreateBucketCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import {
  CreateSecretCommand,
  GetSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3ArchiveStore } from '../../control-plane/src/aws/s3-exports.js';
import { loadConfig } from '../../control-plane/src/config.js';
import { DataPlane } from '../../control-plane/src/dataplane/dataplane.js';
import type { Db } from '../../control-plane/src/db/db.js';
import { insertExport, markExportReady } from '../../control-plane/src/db/exports.js';
import { insertTenant } from '../../control-plane/src/db/repo.js';
import type { StepContext } from '../../control-plane/src/domain/ports.js';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import { AwsEngine } from '../../control-plane/src/engine/aws.js';
import { verifyArchive } from '../../control-plane/src/export/archive.js';
import type { Manifest } from '../../control-plane/src/export/format.js';
import { S3ArchiveLocation } from '../../control-plane/src/export/location.js';
import { ExportService } from '../../control-plane/src/services/exports.js';
import { TEST_PLATFORM } from '../fixtures/platform.js';
import {
  adminUrl,
  auth,
  connectionOf,
  onboard,
  rand,
  startStack,
  type TestStack,
  waitForOperation,
} from '../helpers/runtime.js';
import { asTenant } from '../integration/promotion-helpers.js';
import { vendMemberAccount } from './helpers/accounts.js';
import { MOTO_REGION, skipReason, useMoto } from './helpers/moto.js';

const moto = useMoto({ reset: false });
const BUCKET = `tenantry-exports-${rand(3)}`;
const SHARED_SECRET = `tenantry/platform/shared-cluster-admin-${rand(3)}`;

const s3 = () => new S3Client({ region: MOTO_REGION, endpoint: moto.endpoint(), forcePathStyle: true });
const kms = () => new KMSClient({ region: MOTO_REGION });

interface Made {
  slug: string;
  id: string;
  tier: Tier;
  keyId: string;
}

/** Rows in a tenant's tables, marked with `tag` (through its own login, as the data plane writes). */
async function seed(s: TestStack, slug: string, n: number, tag: string): Promise<void> {
  const d = await connectionOf(s, slug);
  await asTenant(d, (c) =>
    c.query(
      `INSERT INTO users (tenant_id, email, name)
       SELECT $1, $2 || i || '@x.test', E'name\\twith tab ' || i FROM generate_series(1, $3) i`,
      [d.tenantId, tag, n],
    ),
  );
}

/** The local target's export of the same tenant (through the API): the digests the aws export must equal. */
async function localExport(s: TestStack, slug: string): Promise<Manifest> {
  const res = await s.app.inject({
    method: 'POST',
    url: `/v1/tenants/${slug}/exports`,
    headers: auth(s.tokens.sre),
  });
  expect(res.statusCode, res.body).toBe(202);
  expect((await waitForOperation(s, res.json().operation.id)).status).toBe('succeeded');
  const e = await s.app.inject({
    method: 'GET',
    url: `/v1/exports/${res.json().export.id}`,
    headers: auth(s.tokens.sre),
  });
  return e.json().manifest as Manifest;
}

type Archive = { exportId: string; bytes: number; sha256: string; manifest: Manifest };

/** An export's row, ready, for an archive the step wrote to S3 (what the worker records after it). */
async function recordReady(db: Db, t: { id: string; slug: string }, exportId: string, out: Archive) {
  await db.tx(async (q) => {
    await insertExport(q, {
      id: exportId,
      tenantId: t.id,
      tenantSlug: t.slug,
      tier: 'bridge',
      operationId: `op_${rand(8)}`,
      final: false,
      path: S3ArchiveLocation.of(BUCKET, t.id, exportId),
      createdBy: null,
      retentionMs: 60_000,
    });
    await markExportReady(q, exportId, {
      ...out,
      manifest: out.manifest as unknown as Record<string, unknown>,
    });
  });
}

const sums = (m: Manifest) => m.tables.map(({ name, rows, sha256 }) => ({ name, rows, sha256 }));

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `the aws target on its shared cluster: exports to S3 under the tenant key, pool suspension${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    let s: TestStack;
    let engine: AwsEngine;
    let store: S3ArchiveStore;
    let client: S3Client;
    let stagingDir: string;
    const made: Record<'pool' | 'neighbour' | 'bridge' | 'silo', Made> = {} as never;

    beforeAll(async () => {
      s = await startStack({
        TENANTRY_SECRETS: 'aws',
        AWS_REGION: MOTO_REGION,
        TENANTRY_AWS_ENDPOINT: moto.endpoint(),
        TENANTRY_AWS_KEY_DELETION_WINDOW_DAYS: '7',
      });
      for (const [name, tier, n] of [
        ['pool', 'pool', 30],
        ['neighbour', 'pool', 20],
        ['bridge', 'bridge', 25],
        ['silo', 'silo', 15],
      ] as const) {
        const t = await onboard(s, tier);
        await seed(s, t.slug, n, `${name}-`);
        const row = await s.runtime.services.tenants.get(t.slug);
        made[name] = { ...t, tier, keyId: String(JSON.parse(row.json).outputs.keyId) };
      }
      // The shared cluster is the stack's data database; its admin secret as RDS shapes it.
      const admin = new URL(adminUrl(s.dataDb));
      await new SecretsManagerClient({ region: MOTO_REGION }).send(
        new CreateSecretCommand({
          Name: SHARED_SECRET,
          SecretString: JSON.stringify({
            username: decodeURIComponent(admin.username),
            password: decodeURIComponent(admin.password),
            host: admin.hostname,
            port: Number(admin.port),
            dbname: s.dataDb,
          }),
        }),
      );
      await s3().send(
        new CreateBucketCommand({
          Bucket: BUCKET,
          CreateBucketConfiguration: { LocationConstraint: MOTO_REGION },
        }),
      );
      const names = new DataPlane(adminUrl(s.dataDb)).names;
      client = s3();
      store = new S3ArchiveStore(client);
      stagingDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-exports-staging-'));
      const endpoint = moto.endpoint();
      engine = new AwsEngine({
        backendUrl: 'file:///var/lib/tenantry/state',
        envVars: { PATH: '/usr/bin' },
        aws: { region: MOTO_REGION, endpoints: { secretsmanager: endpoint } },
        platform: {
          ...TEST_PLATFORM,
          sharedCluster: { adminSecretName: SHARED_SECRET, ssl: false },
          pool: {
            ...TEST_PLATFORM.pool,
            schema: names.poolSchema,
            appRole: names.poolRole,
            tenantSetting: names.tenantSetting,
          },
        },
        workspaceRoot: '/var/lib/tenantry/pulumi',
        concurrency: 1,
        timeoutMs: 60_000,
        programVersion: '1.0.0+template.1',
        exports: { store, stagingDir },
        siloTls: false, // the test server stands in for a silo's RDS instance, without TLS
      });
    }, 120_000);
    afterAll(async () => {
      await engine?.close();
      client?.destroy();
      await s?.close();
      if (stagingDir) fs.rmSync(stagingDir, { recursive: true, force: true });
    });

    /** Runs the aws engine's export step for a tenant, as the executor would; returns what it reported. */
    async function exportStep(t: Made, exportId: string, outputs?: Record<string, unknown>) {
      const reported: Record<string, unknown> = {};
      const ctx: StepContext = {
        operationId: `op_${rand(8)}`,
        kind: 'export',
        step: 'export',
        tenant: { id: t.id, slug: t.slug, tier: t.tier, templateVersion: 1, ...(outputs ? { outputs } : {}) },
        params: { exportId, file: S3ArchiveLocation.of(BUCKET, t.id, exportId), kmsKeyId: t.keyId },
        signal: new AbortController().signal,
        report: async (p) => {
          Object.assign(reported, p);
        },
      };
      await engine.runStep(ctx);
      return reported.archive as Archive;
    }

    /** An onboarding's restore steps into `target` from `from`'s archive in S3, as the executor runs them. */
    async function restoreInto(
      target: { id: string; slug: string },
      tier: Tier,
      from: Made,
      exportId: string,
      progress?: Record<string, unknown>,
    ) {
      const file = S3ArchiveLocation.of(BUCKET, from.id, exportId);
      const head = await store.head(file);
      if (!head) throw new Error('the archive was not uploaded');
      expect(engine.restoreSteps(tier)).toEqual(['restore', 'verify-restore']);
      for (const step of engine.restoreSteps(tier)) {
        await engine.runStep({
          operationId: `op_${rand(8)}`,
          kind: 'onboard',
          step,
          tenant: { id: target.id, slug: target.slug, tier, templateVersion: 1 },
          params: { fromExport: { exportId, file, manifestSha256: head.manifestSha256 } },
          ...(progress ? { progress } : {}),
          signal: new AbortController().signal,
        });
      }
    }

    /**
     * A tenant on an instance of its own exported from it (its stack's outputs name the instance and its
     * master secret), then an onboarding from the archive whose restore steps reach the new tenant's
     * instance through what its `up` reported. Both are built locally as silos (the local target has no
     * accounts); to the aws engine they are tenants of `tier`.
     */
    async function exportAndRestoreOwnInstance(
      tier: 'silo' | 'account',
      outputsOf: (slug: string) => Promise<Record<string, unknown>>,
    ) {
      const source: Made = { ...made.silo, tier };
      const exportId = `exp_${rand(8)}`;
      const out = await exportStep(source, exportId, await outputsOf(source.slug));
      expect(sums(out.manifest)).toEqual(sums(await localExport(s, source.slug)));
      expect(out.manifest.tables.find((x) => x.name === 'users')?.rows).toBe(15);
      const { manifest } = await fetched(source, exportId);
      expect(manifest.tenant).toEqual({ id: source.id, slug: source.slug, tier });

      const target = await onboard(s, 'silo');
      await restoreInto(target, tier, source, exportId, { stackOutputs: await outputsOf(target.slug) });
      expect(sums(await localExport(s, target.slug))).toEqual(sums(out.manifest));
      expect(fs.readdirSync(stagingDir)).toEqual([]);
    }

    /** The object's archive, fetched and checked end to end. */
    async function fetched(t: Made, exportId: string) {
      const file = path.join(stagingDir, `fetched-${exportId}`);
      expect(await store.fetchTo(S3ArchiveLocation.of(BUCKET, t.id, exportId), file)).toBe(true);
      try {
        return await verifyArchive(file);
      } finally {
        fs.rmSync(file, { force: true });
      }
    }

    it('says which steps it runs: an export for every tier; limit overrides on a login of its own only', () => {
      for (const tier of ['pool', 'bridge', 'silo', 'account'] as const) {
        expect(engine.lifecycleSteps('export', tier)).toEqual(['export']);
        expect(engine.restoreSteps(tier)).toEqual(['restore', 'verify-restore']);
      }
      expect(engine.lifecycleSteps('update', 'bridge')).toEqual(['limits']);
      expect(engine.lifecycleSteps('update', 'account')).toEqual(['limits']);
      expect(() => engine.lifecycleSteps('update', 'pool')).toThrow(/a pool tenant has none/);
    });

    for (const which of ['bridge', 'pool'] as const) {
      it(`writes a ${which} tenant's archive to S3 under its own KMS key, with the table digests of its placement`, async () => {
        const t = made[which];
        const exportId = `exp_${rand(8)}`;
        const out = await exportStep(t, exportId);
        expect(out.exportId).toBe(exportId);
        const head = await client.send(
          new HeadObjectCommand({
            Bucket: BUCKET,
            Key: S3ArchiveLocation.parse(S3ArchiveLocation.of(BUCKET, t.id, exportId)).key,
          }),
        );
        expect(head.ServerSideEncryption).toBe('aws:kms');
        // The object's key is the tenant's own (as S3 names it: id or ARN, the same key).
        const used = (await kms().send(new DescribeKeyCommand({ KeyId: head.SSEKMSKeyId }))).KeyMetadata
          ?.KeyId;
        expect(used).toBe((await kms().send(new DescribeKeyCommand({ KeyId: t.keyId }))).KeyMetadata?.KeyId);
        expect(Number(head.ContentLength)).toBe(out.bytes);
        // The archive checks out end to end, and holds what the local target's export of the same rows holds.
        const { manifest } = await fetched(t, exportId);
        expect(manifest.tenant).toEqual({ id: t.id, slug: t.slug, tier: which });
        expect(sums(manifest)).toEqual(sums(out.manifest));
        expect(sums(manifest)).toEqual(sums(await localExport(s, t.slug)));
        const users = manifest.tables.find((x) => x.name === 'users');
        expect(users?.rows).toBe(which === 'pool' ? 30 : 25);
        // Nothing staged is left in the data directory.
        expect(fs.readdirSync(stagingDir)).toEqual([]);
      });
    }

    it("takes an offboarding's final export (?export=true) with the same step, from the offboarding's params", async () => {
      const t = made.bridge;
      const exportId = `exp_${rand(8)}`;
      const reported: Record<string, unknown> = {};
      await engine.runStep({
        operationId: `op_${rand(8)}`,
        kind: 'offboard',
        step: 'export',
        tenant: { id: t.id, slug: t.slug, tier: t.tier, templateVersion: 1 },
        params: {
          finalExport: { exportId, file: S3ArchiveLocation.of(BUCKET, t.id, exportId), kmsKeyId: t.keyId },
        },
        signal: new AbortController().signal,
        report: async (p) => {
          Object.assign(reported, p);
        },
      });
      const archive = reported.archive as Archive;
      expect(archive.exportId).toBe(exportId);
      expect((await store.head(S3ArchiveLocation.of(BUCKET, t.id, exportId)))?.sha256).toBe(archive.sha256);
    });

    it('holds nothing of another pool tenant', async () => {
      const exportId = `exp_${rand(8)}`;
      await exportStep(made.pool, exportId);
      const file = path.join(stagingDir, `raw-${exportId}`);
      await store.fetchTo(S3ArchiveLocation.of(BUCKET, made.pool.id, exportId), file);
      const { gunzipSync } = await import('node:zlib');
      const text = gunzipSync(fs.readFileSync(file)).toString('utf8');
      fs.rmSync(file, { force: true });
      expect(text).toContain('pool-1@x.test');
      expect(text).not.toContain('neighbour-');
      expect(text).not.toContain(made.neighbour.id);
    });

    it('re-run after a crash past the upload, finds the archive and uploads nothing again', async () => {
      const t = made.bridge;
      const exportId = `exp_${rand(8)}`;
      const first = await exportStep(t, exportId);
      const key = S3ArchiveLocation.parse(S3ArchiveLocation.of(BUCKET, t.id, exportId)).key;
      const before = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
      const again = await exportStep(t, exportId);
      const after = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
      expect(again).toEqual(first);
      expect(after.LastModified).toEqual(before.LastModified);
      expect(after.ETag).toBe(before.ETag);
    });

    it("restores an archive from S3 into a new tenant of another tier: its rows' counts and checksums equal the manifest", async () => {
      const source = made.pool;
      const exportId = `exp_${rand(8)}`;
      const out = await exportStep(source, exportId);
      // A new, empty bridge tenant (its placement built as the stack's `up` would leave it).
      const target = await onboard(s, 'bridge');
      await restoreInto(target, 'bridge', source, exportId);
      expect(sums(await localExport(s, target.slug))).toEqual(sums(out.manifest));
      expect(fs.readdirSync(stagingDir)).toEqual([]);
    });

    it("exports a silo tenant from its own instance (its stack's outputs name it and its master secret) and restores it into a new silo", async () => {
      // The silo's "RDS instance" is the test server; its master secret holds credentials only, as RDS's does.
      const admin = new URL(adminUrl(s.dataDb));
      const master = await new SecretsManagerClient({ region: MOTO_REGION }).send(
        new CreateSecretCommand({
          Name: `rds!db-${rand(6)}`,
          SecretString: JSON.stringify({
            username: decodeURIComponent(admin.username),
            password: decodeURIComponent(admin.password),
          }),
        }),
      );
      /** The outputs a silo stack's `up` records: where its instance is, and its master secret's ARN. */
      const outputsOf = async (slug: string) => ({
        host: admin.hostname,
        port: Number(admin.port),
        database: (await connectionOf(s, slug)).database,
        adminSecretArn: master.ARN,
      });
      await exportAndRestoreOwnInstance('silo', outputsOf);
    });

    it('exports an account tenant from its instance inside its account (the master secret read there through the vended role) and restores it into a new account tenant', async () => {
      // The account's "RDS instance" is the test server; its master secret is in the member account only.
      const admin = new URL(adminUrl(s.dataDb));
      const member = await vendMemberAccount(`root+exports-${rand(6)}@tenants.example.com`);
      const arn = await member.createSecret(`rds!db-${rand(6)}`, {
        username: decodeURIComponent(admin.username),
        password: decodeURIComponent(admin.password),
      });
      expect(arn).toContain(`:${member.accountId}:secret:`);
      // The platform account has no such secret: only a read through the account's role finds it.
      const platformRead = new SecretsManagerClient({ region: MOTO_REGION });
      await expect(platformRead.send(new GetSecretValueCommand({ SecretId: arn }))).rejects.toThrow(
        /ResourceNotFound|can't find/i,
      );
      platformRead.destroy();
      /** The outputs an account stack's `up` records: its instance, the master secret's ARN, the account. */
      const outputsOf = async (slug: string) => ({
        host: admin.hostname,
        port: Number(admin.port),
        database: (await connectionOf(s, slug)).database,
        adminSecretArn: arn,
        accountId: member.accountId,
      });
      await exportAndRestoreOwnInstance('account', outputsOf);
    });

    it('checks an archive in S3 before a restore, and refuses a damaged one with EXPORT_INVALID', async () => {
      const db = s.runtime.services.db;
      const svc = new ExportService(db, engine, {
        dataDir: stagingDir,
        exportRetentionMs: 60_000,
        finalExportRetentionMs: 60_000,
        maxAttempts: 3,
        s3: { bucket: BUCKET, store },
      });
      const t = made.bridge;
      const record = (exportId: string, out: Archive) => recordReady(db, t, exportId, out);
      const ctx = {
        actor: { id: 'tok_test', name: 'test', role: 'sre' as const },
        requestId: 'req-2',
      } as never;
      const good = `exp_${rand(8)}`;
      const out = await exportStep(t, good);
      await record(good, out);
      const ok = await svc.prepareRestore(ctx, good, 'pool');
      expect(ok.params.file).toBe(S3ArchiveLocation.of(BUCKET, t.id, good));
      expect(sums(ok.manifest)).toEqual(sums(out.manifest));

      // The same archive with one byte of its gzip stream changed, as another export's object.
      const bad = `exp_${rand(8)}`;
      const local = path.join(stagingDir, `bad-${bad}`);
      await store.fetchTo(S3ArchiveLocation.of(BUCKET, t.id, good), local);
      const bytes = fs.readFileSync(local);
      fs.rmSync(local, { force: true });
      const at = Math.floor(bytes.length / 2);
      bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);
      await client.send(
        new PutObjectCommand({
          Bucket: BUCKET,
          Key: S3ArchiveLocation.parse(S3ArchiveLocation.of(BUCKET, t.id, bad)).key,
          Body: bytes,
        }),
      );
      await record(bad, out);
      await expect(svc.prepareRestore(ctx, bad, 'pool')).rejects.toMatchObject({ code: 'EXPORT_INVALID' });
      // The copy it checked is gone from the data directory.
      expect(fs.readdirSync(path.join(stagingDir, 'exports'))).toEqual([]);
    });

    it('the service refuses exports on the aws target without a bucket, streams a download from S3 (audited), and expiry deletes the object', async () => {
      const db = s.runtime.services.db;
      const opts = { dataDir: stagingDir, exportRetentionMs: 1, finalExportRetentionMs: 1, maxAttempts: 3 };
      const unset = new ExportService(db, engine, { ...opts, s3: { bucket: undefined, store: undefined } });
      expect(() => unset.assertAvailable('bridge')).toThrow(/set TENANTRY_EXPORT_BUCKET/);
      const svc = new ExportService(db, engine, {
        ...opts,
        log: pino({ level: 'silent' }),
        s3: { bucket: BUCKET, store },
      });
      expect(() => svc.assertAvailable('account')).not.toThrow();

      const t = made.bridge;
      const exportId = `exp_${rand(8)}`;
      const out = await exportStep(t, exportId);
      await recordReady(db, t, exportId, out);
      const actor = { id: 'tok_test', name: 'test', role: 'sre' as const };
      const { stream, export: view } = await svc.download({ actor, requestId: 'req-1' } as never, exportId);
      expect(view).not.toHaveProperty('path');
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      const { createHash } = await import('node:crypto');
      expect(createHash('sha256').update(Buffer.concat(chunks)).digest('hex')).toBe(out.sha256);
      const audited = await db.query<{ n: string }>(
        `SELECT count(*)::text AS n FROM audit_log WHERE action = 'export.download' AND details->>'exportId' = $1`,
        [exportId],
      );
      expect(audited.rows[0]?.n).toBe('1');

      // Past its retention: the object is deleted, the row stays, expired.
      await db.query(`UPDATE exports SET expires_at = now() - interval '1 second' WHERE id = $1`, [exportId]);
      expect(await svc.expire()).toBeGreaterThanOrEqual(1);
      expect(await store.head(S3ArchiveLocation.of(BUCKET, t.id, exportId))).toBeNull();
      expect((await svc.get(exportId)).status).toBe('expired');
    });

    it("suspends a pool tenant on the shared cluster: its writes are refused in the database, its neighbour's are not, and reactivation gives them back", async () => {
      expect(engine.lifecycleSteps('suspend', 'pool')).toEqual(['suspend-writes']);
      expect(engine.lifecycleSteps('reactivate', 'pool')).toEqual(['resume-writes']);
      expect(engine.lifecycleSteps('suspend', 'bridge')).toEqual(['suspend-logins']);
      expect(engine.lifecycleSteps('suspend', 'account')).toEqual(['suspend-logins']);
      const t = made.neighbour;
      const step = (kind: 'suspend' | 'reactivate', name: string) =>
        engine.runStep({
          operationId: `op_${rand(8)}`,
          kind,
          step: name,
          tenant: { id: t.id, slug: t.slug, tier: 'pool', templateVersion: 1 },
          params: { reason: 'non-payment' },
          signal: new AbortController().signal,
        });
      const write = async (who: Made) => {
        const d = await connectionOf(s, who.slug);
        return asTenant(d, (c) =>
          c.query(`INSERT INTO users (tenant_id, email, name) VALUES ($1, $2, 'late')`, [
            d.tenantId,
            `late-${rand(3)}@x.test`,
          ]),
        ).then(
          () => 'written',
          (e: { code?: string }) => e.code,
        );
      };
      const frozen = async () => [...(await engine.suspendedPoolFreezes([t.id, made.pool.id])).frozen];
      expect(await frozen()).toEqual([]);
      await step('suspend', 'suspend-writes');
      expect(await write(t)).toBe('25006');
      // What aws drift reads for a suspended pool tenant: its freeze, and no other tenant's.
      expect(await frozen()).toEqual([t.id]);
      expect(await write(made.pool)).toBe('written');
      // Its rows are all there, and readable.
      const d = await connectionOf(s, t.slug);
      const { rows } = await asTenant(d, (c) =>
        c.query<{ n: string }>('SELECT count(*)::text AS n FROM users'),
      );
      expect(rows[0]?.n).toBe('20');
      // Twice is the same (a step re-run after a crash).
      await step('suspend', 'suspend-writes');
      await step('reactivate', 'resume-writes');
      expect(await write(t)).toBe('written');
      expect(await frozen()).toEqual([]);
    });

    it('exports through the API of a control plane started with TENANTRY_TARGET=aws: the operation, the ready export and its download', async () => {
      const names = new DataPlane(adminUrl(s.dataDb)).names;
      const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-pulumi-state-'));
      const a = await startStack({
        TENANTRY_TARGET: 'aws',
        PULUMI_BACKEND_URL: `file://${stateDir}`,
        PULUMI_CONFIG_PASSPHRASE: 'test',
        AWS_REGION: MOTO_REGION,
        TENANTRY_AWS_ENDPOINT: moto.endpoint(),
        TENANTRY_EXPORT_BUCKET: BUCKET,
        TENANTRY_AWS_PLATFORM: JSON.stringify({
          adminRoleArn: 'arn:aws:iam::123456789012:role/tenantry-control-plane',
          dataPlaneRoleArn: 'arn:aws:iam::123456789012:role/tenantry-data-plane',
          sharedClusterSecretName: SHARED_SECRET,
          postgresSsl: 'false',
          poolSchema: names.poolSchema,
          poolOwnerRole: names.ownerRole,
          poolAppRole: names.poolRole,
          tenantSetting: names.tenantSetting,
        }),
      });
      try {
        // The bridge tenant as its stack's `up` would have recorded it on this control plane.
        const t = made.bridge;
        const keyArn = (await kms().send(new DescribeKeyCommand({ KeyId: t.keyId }))).KeyMetadata?.Arn;
        await a.runtime.services.db.tx(async (q) => {
          await insertTenant(q, {
            id: t.id,
            slug: t.slug,
            name: t.slug,
            tier: 'bridge',
            status: 'active',
            region: MOTO_REGION,
            plan: null,
            contactEmail: null,
            templateVersion: 1,
          });
          await q.query('UPDATE tenants SET outputs = $2::jsonb WHERE id = $1', [
            t.id,
            JSON.stringify({ keyArn }),
          ]);
        });
        const res = await a.app.inject({
          method: 'POST',
          url: `/v1/tenants/${t.slug}/exports`,
          headers: auth(a.tokens.sre),
        });
        expect(res.statusCode, res.body).toBe(202);
        const op = await waitForOperation(a, res.json().operation.id);
        expect(op.status, JSON.stringify(op)).toBe('succeeded');
        const e = (
          await a.app.inject({
            method: 'GET',
            url: `/v1/exports/${res.json().export.id}`,
            headers: auth(a.tokens.sre),
          })
        ).json();
        expect(e.status).toBe('ready');
        expect(sums(e.manifest)).toEqual(sums(await localExport(s, t.slug)));
        const head = await store.head(S3ArchiveLocation.of(BUCKET, t.id, e.id));
        expect(head?.sha256).toBe(e.sha256);
        const used = (await kms().send(new DescribeKeyCommand({ KeyId: head?.kmsKeyId ?? '' }))).KeyMetadata
          ?.Arn;
        expect(used).toBe(keyArn);
        const dl = await a.app.inject({
          method: 'GET',
          url: `/v1/exports/${e.id}/download`,
          headers: auth(a.tokens.sre),
        });
        expect(dl.statusCode).toBe(200);
        const { createHash } = await import('node:crypto');
        expect(createHash('sha256').update(dl.rawPayload).digest('hex')).toBe(e.sha256);
        // A tenant whose stack recorded no key (no `up` ran) is refused, with nothing written.
        const silo = `account-${rand(3)}`;
        await a.runtime.services.db.tx((q) =>
          insertTenant(q, {
            id: crypto.randomUUID(),
            slug: silo,
            name: 'account',
            tier: 'account',
            status: 'active',
            region: MOTO_REGION,
            plan: null,
            contactEmail: null,
            templateVersion: 1,
          }),
        );
        const refused = await a.app.inject({
          method: 'POST',
          url: `/v1/tenants/${silo}/exports`,
          headers: auth(a.tokens.sre),
        });
        expect(refused.statusCode).toBe(422);
        expect(refused.json().error).toMatchObject({
          code: 'EXPORT_NOT_AVAILABLE_ON_TARGET',
          message: expect.stringMatching(/no KMS key in its outputs/),
        });
        const rows = await a.runtime.services.db.query<{ n: string }>(
          'SELECT count(*)::text AS n FROM exports WHERE tenant_slug = $1',
          [silo],
        );
        expect(rows.rows[0]?.n).toBe('0');
      } finally {
        await a.close();
        fs.rmSync(stateDir, { recursive: true, force: true });
      }
    });
  },
);

describe('TENANTRY_EXPORT_BUCKET', () => {
  it('takes an S3 bucket name, and refuses anything else with the variable named', () => {
    expect(loadConfig({ TENANTRY_EXPORT_BUCKET: 'acme-tenantry-exports' }).lifecycle.exportBucket).toBe(
      'acme-tenantry-exports',
    );
    expect(loadConfig({}).lifecycle.exportBucket).toBeUndefined();
    expect(() => loadConfig({ TENANTRY_EXPORT_BUCKET: 'Not_A_Bucket' })).toThrow(/TENANTRY_EXPORT_BUCKET/);
  });
});
