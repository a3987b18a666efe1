import path from 'node:path';
import { OrganizationsClient } from '@aws-sdk/client-organizations';
import { S3Client } from '@aws-sdk/client-s3';
import { parsePlatformSettings } from '../../stacks/common/config.js';
import { API_VERSION } from './app.js';
import { ACCOUNT_CLOSURES_CRON, ACCOUNT_CLOSURES_TASK, AccountClosureQueue } from './aws/closures.js';
import { AWS_ENDPOINT_SERVICES } from './aws/provider-options.js';
import { S3ArchiveStore } from './aws/s3-exports.js';
import type { Config } from './config.js';
import { getStackSettings, saveStackSettings } from './db/aws.js';
import { AwsDriftDetector, AwsDriftRemediator } from './drift/aws.js';
import { type DriftDeps, type DriftHandle, wireDrift } from './drift/index.js';
import { AwsEngine } from './engine/aws.js';

/**
 * The aws target's composition: the Pulumi engine and its drift detector and remediator. Loaded only
 * when TENANTRY_TARGET=aws (runtime.ts imports it dynamically), so the embedded default never loads
 * the AWS SDK or the stack programs' modules.
 */
export function startAwsTarget(
  a: NonNullable<Config['aws']>,
  opts: {
    dataDir: string;
    templatesDir: string;
    templateVersion: number;
    drift: DriftDeps;
    /** The row move's settings, as on the local target (TENANTRY_PROMOTION_*). */
    promotion?: { rollbackWindowMs: number; maxLagBytes: number; freezeWaitMs: number; lagPollMs: number };
    /** TENANTRY_EXPORT_BUCKET: exports to S3, each archive under its tenant's KMS key. */
    exportBucket?: string;
  },
): { engine: AwsEngine; drift: DriftHandle; exports?: S3ArchiveStore } {
  const platform = parsePlatformSettings((k) => a.platform[k]);
  const endpoints = a.endpoint
    ? Object.fromEntries(AWS_ENDPOINT_SERVICES.map((svc) => [svc, a.endpoint as string]))
    : undefined;
  const { db, log } = opts.drift;
  // Account closures: offboarding queues them, an hourly task requests what the quota allows.
  const organizations = platform.account
    ? new OrganizationsClient({ region: a.region, ...(a.endpoint ? { endpoint: a.endpoint } : {}) })
    : undefined;
  const closures = organizations
    ? new AccountClosureQueue(db, organizations, log.child({ component: 'account-closures' }))
    : undefined;
  // Export archives in S3 (path-style addressing at an emulator's single endpoint).
  const s3 = opts.exportBucket
    ? new S3Client({
        region: a.region,
        ...(a.endpoint ? { endpoint: a.endpoint, forcePathStyle: true } : {}),
      })
    : undefined;
  const exports = s3 ? new S3ArchiveStore(s3) : undefined;
  const engine = new AwsEngine({
    ...(exports ? { exports: { store: exports, stagingDir: path.join(opts.dataDir, 'exports') } } : {}),
    // Each stack's secrets provider and key, in the control database: any worker runs any stack.
    stackSettings: {
      get: (stack) => getStackSettings(db, stack),
      save: (stack, s) => saveStackSettings(db, stack, s),
    },
    ...(closures ? { closures } : {}),
    backendUrl: a.backendUrl,
    ...(a.secretsProvider ? { secretsProvider: a.secretsProvider } : {}),
    envVars: a.envVars,
    aws: { region: a.region, ...(endpoints ? { endpoints, s3UsePathStyle: true } : {}) },
    platform,
    workspaceRoot: path.join(opts.dataDir, 'pulumi'),
    templatesDir: opts.templatesDir,
    concurrency: a.concurrency,
    timeoutMs: a.timeoutMs,
    // The engine appends a content hash of the programs, providers and templates.
    programVersion: `${API_VERSION}+template.${opts.templateVersion}`,
    ...(opts.promotion
      ? {
          promotionRollbackWindowMs: opts.promotion.rollbackWindowMs,
          promotion: {
            maxLagBytes: opts.promotion.maxLagBytes,
            freezeWaitMs: opts.promotion.freezeWaitMs,
            lagPollMs: opts.promotion.lagPollMs,
          },
        }
      : {}),
  });
  const wired = wireDrift(
    opts.drift,
    new AwsDriftDetector(engine, { concurrency: a.concurrency }),
    new AwsDriftRemediator(engine),
  );
  // The closure queue's task rides with the target's other job-queue tasks (the worker merges them).
  const drift: DriftHandle = closures
    ? {
        ...wired,
        taskList: {
          ...wired.taskList,
          [ACCOUNT_CLOSURES_TASK]: async () => {
            await closures.drain();
          },
        },
        crontab: `${wired.crontab}${ACCOUNT_CLOSURES_CRON}`,
        close: async () => {
          await wired.close();
          organizations?.destroy();
        },
      }
    : wired;
  if (s3) {
    const close = drift.close;
    drift.close = async () => {
      await close();
      s3.destroy();
    };
  }
  return { engine, drift, ...(exports ? { exports } : {}) };
}
