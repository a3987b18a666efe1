import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { startAwsTarget } from '../../../control-plane/src/aws-target.js';
import { loadConfig } from '../../../control-plane/src/config.js';
import type { Db } from '../../../control-plane/src/db/db.js';

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'tenantry-aws-target-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('the aws target composition', () => {
  const config = loadConfig({
    TENANTRY_TARGET: 'aws',
    PULUMI_BACKEND_URL: 'file:///tmp/tenantry-state',
    AWS_REGION: 'eu-west-1',
    TENANTRY_AWS_ENDPOINT: 'http://localhost:4566',
    TENANTRY_DATA_DIR: dataDir,
    TENANTRY_AWS_PLATFORM: JSON.stringify({
      adminRoleArn: 'arn:aws:iam::111111111111:role/tenantry-control-plane',
      dataPlaneRoleArn: 'arn:aws:iam::111111111111:role/tenantry-data-plane',
      sharedClusterSecretName: 'tenantry/platform/shared-cluster-admin',
      dbSubnetGroupName: 'tenantry-private',
      vpcSecurityGroupIds: '["sg-0123456789abcdef0"]',
    }),
    AWS_WEB_IDENTITY_TOKEN_FILE: '/var/run/secrets/token',
    AWS_ROLE_ARN: 'arn:aws:iam::111111111111:role/tenantry-control-plane',
    DATABASE_URL: 'postgres://u:secret@db:5432/tenantry',
    TENANTRY_ADMIN_TOKEN: 'x'.repeat(32),
  });

  it('hands the Pulumi child web-identity credentials but never the database URL or the admin token', () => {
    const env = config.aws?.envVars ?? {};
    expect(env.AWS_WEB_IDENTITY_TOKEN_FILE).toBe('/var/run/secrets/token');
    expect(env.AWS_ROLE_ARN).toContain(':role/tenantry-control-plane');
    expect(Object.values(env).join(' ')).not.toMatch(/secret@db|xxxxxxxx/);
    expect(Object.keys(env)).not.toContain('DATABASE_URL');
  });

  it('wires the Pulumi engine, which keeps failed onboardings, with stack-preview drift and up repairs', () => {
    if (!config.aws) throw new Error('aws config expected');
    const { engine, drift } = startAwsTarget(config.aws, {
      dataDir,
      templatesDir: config.templatesDir,
      templateVersion: 1,
      drift: {
        db: {} as Db,
        log: pino({ level: 'silent' }),
        registry: new Registry(),
        schedule: '*/15 * * * *',
      },
    });
    expect(engine.target).toBe('aws');
    expect(engine.rollsBackFailedOnboarding).toBe(false);
    expect(drift.service.target).toBe('aws');
    expect(
      drift.remediator.plan(
        {
          id: 't',
          slug: 'acme',
          tier: 'silo',
          status: 'active',
          templateVersion: 1,
          outputs: {},
        },
        [],
      ),
    ).toEqual(['stack-up']);
    expect(drift.crontab).toBe(
      '*/15 * * * * drift-sweep ?jobKey=drift-sweep&jobKeyMode=preserve_run_at&max=3\n',
    );
  });
});
