/**
 * Webhooks on the aws target, against the AWS API emulator (moto_server): a control plane started with
 * TENANTRY_TARGET=aws keeps each webhook's signing secret in Secrets Manager, encrypted under the
 * platform's KMS key (made the first time a webhook is registered), signs its deliveries with it, and
 * deletes it with the webhook. No Pulumi program runs here: the event delivered is one the control
 * plane writes itself (a fleet event), through the same outbox as every other.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { DescribeKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import {
  DescribeSecretCommand,
  GetSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendEvent } from '../../control-plane/src/db/outbox.js';
import { webhookSecretName } from '../../control-plane/src/db/webhooks.js';
import { PLATFORM_KEY_ALIAS } from '../../control-plane/src/domain/naming.js';
import { signedHeaders } from '../../control-plane/src/webhooks/signing.js';
import { auth, rand, startStack, type TestStack } from '../helpers/runtime.js';
import { freePort, until } from '../helpers/server.js';
import { MOTO_REGION, skipReason, useMoto } from './helpers/moto.js';

const moto = useMoto({ reset: false });
const sm = () => new SecretsManagerClient({ region: MOTO_REGION });
const kms = () => new KMSClient({ region: MOTO_REGION });

/**
 * Whether a delivery was signed with `secret`: the signature the signing module makes with it (checked
 * against the Standard Webhooks spec and its vector in tests/unit/webhook-signing.test.ts) is the one
 * received. What this file proves is which secret signed: the one Secrets Manager holds.
 */
function signedWith(secret: string, h: http.IncomingHttpHeaders, body: string): boolean {
  const want = signedHeaders(secret, String(h['webhook-id']), Number(h['webhook-timestamp']), body);
  return want['webhook-signature'] === h['webhook-signature'];
}

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `webhooks on the aws target: signing secrets in Secrets Manager${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    let s: TestStack;
    let receiver: http.Server;
    let port: number;
    const got: { headers: http.IncomingHttpHeaders; body: string }[] = [];
    const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-pulumi-state-'));

    beforeAll(async () => {
      port = await freePort();
      receiver = http.createServer((req, res) => {
        let body = '';
        req.on('data', (c) => {
          body += c;
        });
        req.on('end', () => {
          got.push({ headers: req.headers, body });
          res.end('ok');
        });
      });
      await new Promise<void>((r) => receiver.listen(port, '127.0.0.1', r));
      s = await startStack({
        TENANTRY_TARGET: 'aws',
        PULUMI_BACKEND_URL: `file://${stateDir}`,
        PULUMI_CONFIG_PASSPHRASE: 'test',
        AWS_REGION: MOTO_REGION,
        TENANTRY_AWS_ENDPOINT: moto.endpoint(),
        TENANTRY_AWS_PLATFORM: JSON.stringify({
          adminRoleArn: 'arn:aws:iam::123456789012:role/tenantry-control-plane',
          dataPlaneRoleArn: 'arn:aws:iam::123456789012:role/tenantry-data-plane',
          sharedClusterSecretName: 'tenantry/platform/shared-cluster-admin',
          dbSubnetGroupName: 'tenantry-private',
          vpcSecurityGroupIds: '["sg-0123456789abcdef0"]',
        }),
        TENANTRY_WEBHOOK_ALLOWED_NETWORKS: '127.0.0.0/8',
        TENANTRY_WEBHOOK_RETRY_BASE_MS: '50',
      });
    }, 60_000);
    afterAll(async () => {
      await s?.close();
      await new Promise((r) => receiver?.close(r));
      fs.rmSync(stateDir, { recursive: true, force: true });
    });

    it('registers a webhook, keeps its secret in Secrets Manager under the platform key, signs with it, and deletes it with the webhook', async () => {
      expect(s.config.target).toBe('aws');
      const created = await s.app.inject({
        method: 'POST',
        url: '/v1/webhooks',
        headers: auth(s.tokens.admin),
        payload: { url: `http://127.0.0.1:${port}/hooks`, eventTypes: ['drift.findings'] },
      });
      expect(created.statusCode, created.body).toBe(201);
      const { webhook, secret } = created.json() as { webhook: { id: string }; secret: string };
      expect(secret).toMatch(/^whsec_/);

      // In Secrets Manager, encrypted with the platform key; nowhere in the control database.
      const name = webhookSecretName(webhook.id);
      const platformKey = (await kms().send(new DescribeKeyCommand({ KeyId: PLATFORM_KEY_ALIAS })))
        .KeyMetadata;
      expect(platformKey?.KeyState).toBe('Enabled');
      const described = await sm().send(new DescribeSecretCommand({ SecretId: name }));
      expect(described.KmsKeyId).toBe(platformKey?.Arn);
      const stored = await sm().send(new GetSecretValueCommand({ SecretId: name }));
      expect(JSON.parse(stored.SecretString ?? '{}').secret).toBe(secret);
      const rows = await s.runtime.services.db.query<{ n: string }>(
        `SELECT count(*)::text AS n FROM webhooks WHERE row_to_json(webhooks)::text LIKE '%' || $1 || '%'`,
        [secret.slice(6)],
      );
      expect(rows.rows[0]?.n).toBe('0');

      // A delivery, signed with that secret.
      const tag = rand(4);
      await s.runtime.services.db.tx((q) => appendEvent(q, { type: 'drift.findings', data: { tag } }));
      const delivery = await until('the delivery', async () => got.find((g) => g.body.includes(tag)));
      expect(signedWith(secret, delivery.headers, delivery.body)).toBe(true);
      expect(JSON.parse(delivery.body).type).toBe('drift.findings');

      // Deleted with the webhook.
      const deleted = await s.app.inject({
        method: 'DELETE',
        url: `/v1/webhooks/${webhook.id}`,
        headers: auth(s.tokens.admin),
      });
      expect(deleted.statusCode, deleted.body).toBe(200);
      await expect(sm().send(new DescribeSecretCommand({ SecretId: name }))).rejects.toMatchObject({
        name: 'ResourceNotFoundException',
      });
    });
  },
);
