import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AwsEngine } from '../../control-plane/src/engine/aws.js';

/**
 * A real `up`, `preview --refresh` and `destroy` of a tenant stack against a file backend.
 * It needs the Pulumi CLI (and its AWS plugin) on PATH plus an AWS endpoint to talk to
 * (real AWS credentials, or LocalStack via TENANTRY_AWS_ENDPOINT); elsewhere it is skipped,
 * with the reason in its name. It is never faked.
 */
function which(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const hasPulumi = which('pulumi');
const hasAws = Boolean(process.env.TENANTRY_AWS_ENDPOINT || process.env.AWS_ACCESS_KEY_ID);
const reason = !hasPulumi
  ? 'skipped: the pulumi CLI is not on PATH (no registry reachable here ships it or the AWS plugin)'
  : !hasAws
    ? 'skipped: no AWS endpoint (set TENANTRY_AWS_ENDPOINT for LocalStack, or AWS credentials)'
    : 'runs';

describe('live Pulumi stack', () => {
  it.skipIf(!hasPulumi || !hasAws)(
    `up, refreshing preview and destroy of a silo tenant (${reason})`,
    async () => {
      const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-live-'));
      const engine = new AwsEngine({
        backendUrl: `file://${root}/state`,
        secretsProvider: 'passphrase',
        envVars: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? root,
          PULUMI_CONFIG_PASSPHRASE: 'live-test',
        },
        aws: {
          region: process.env.AWS_REGION ?? 'us-east-1',
          ...(process.env.TENANTRY_AWS_ENDPOINT
            ? {
                endpoints: {
                  kms: process.env.TENANTRY_AWS_ENDPOINT,
                  secretsmanager: process.env.TENANTRY_AWS_ENDPOINT,
                  rds: process.env.TENANTRY_AWS_ENDPOINT,
                },
                s3UsePathStyle: true,
              }
            : {}),
        },
        platform: JSON.parse(process.env.TENANTRY_AWS_PLATFORM ?? '{}'),
        workspaceRoot: `${root}/ws`,
        concurrency: 1,
        timeoutMs: 30 * 60_000,
        programVersion: 'live-test',
      });
      const tenant = {
        id: '00000000-0000-4000-8000-00000000000a',
        slug: 'live-silo',
        tier: 'silo' as const,
        templateVersion: 1,
      };
      const ctx = (step: string) => ({
        operationId: 'op_live',
        kind: 'onboard' as const,
        step,
        tenant,
        signal: new AbortController().signal,
      });
      const up = await engine.runStep(ctx('stack-up'));
      expect(up).toMatchObject({ stack: 'tenant-live-silo', programVersion: 'live-test' });
      await engine.runStep({ ...ctx('stack-destroy'), kind: 'offboard' });
    },
  );
});
