/**
 * `TENANTRY_SECRETS=aws` on the local target, end to end against the AWS API emulator: a whole
 * control plane (real Postgres, in-process worker) whose tenant keys are KMS keys and whose
 * credentials are Secrets Manager secrets. Onboarding, promotion and offboarding for the pool,
 * bridge and silo tiers, through the public API.
 */
import { DescribeKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { DescribeSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deleteSecretNow, secretVersionOf } from '../../control-plane/src/aws/secrets.js';
import { tenantKeyAlias, tenantSecretName } from '../../control-plane/src/domain/naming.js';
import type { SweepResult } from '../../control-plane/src/drift/sweep.js';
import {
  auth,
  connectionOf,
  onboard,
  rand,
  startStack,
  superQuery,
  type TestStack,
  tenantClient,
  waitForOperation,
} from '../helpers/runtime.js';
import { promoteAndWait } from '../integration/promotion-helpers.js';
import { MOTO_REGION, skipReason, useMoto } from './helpers/moto.js';

const moto = useMoto({ reset: false });
const region = MOTO_REGION;
const kms = () => new KMSClient({ region });
const sm = () => new SecretsManagerClient({ region });

async function keyOf(slug: string) {
  return (await kms().send(new DescribeKeyCommand({ KeyId: tenantKeyAlias(slug) }))).KeyMetadata;
}

async function offboard(s: TestStack, slug: string) {
  const res = await s.app.inject({
    method: 'DELETE',
    url: `/v1/tenants/${slug}`,
    headers: { ...auth(s.tokens.sre), confirm: slug },
  });
  expect(res.statusCode).toBe(202);
  const op = await waitForOperation(s, res.json().operation.id, 60_000);
  expect(op.status, JSON.stringify(op)).toBe('succeeded');
}

/** 'exists', or the name of the error AWS answered. */
const outcome = (p: Promise<unknown>) =>
  p.then(
    () => 'exists',
    (e: Error) => e.name,
  );

/** The descriptor's secret reference (the API returns it; the shared helper's type leaves it out). */
const refOf = (d: object) => (d as { secretRef?: string }).secretRef;

/** The number of the secret's current version (its id is Tenantry's numbered token). */
async function currentVersion(slug: string): Promise<number> {
  const d = await sm().send(new DescribeSecretCommand({ SecretId: tenantSecretName(slug) }));
  return secretVersionOf(
    Object.entries(d.VersionIdsToStages ?? {}).find(([, st]) => st.includes('AWSCURRENT'))?.[0],
  );
}

/** The tenant's descriptor works: it logs in and reads its own tables. */
async function logsIn(s: TestStack, slug: string) {
  const d = await connectionOf(s, slug);
  const c = await tenantClient(d);
  try {
    if (d.tenantSetting) {
      await c.query('BEGIN');
      await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, d.tenantId]);
    }
    await c.query('SELECT count(*) FROM users');
    if (d.tenantSetting) await c.query('COMMIT');
  } finally {
    await c.end();
  }
  return d;
}

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `TENANTRY_SECRETS=aws on the local target${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    let s: TestStack;
    const slugs = { pool: `p-${rand(3)}`, bridge: `b-${rand(3)}`, silo: `s-${rand(3)}` };
    const ids: Record<string, string> = {};

    beforeAll(async () => {
      s = await startStack({
        TENANTRY_SECRETS: 'aws',
        AWS_REGION: region,
        TENANTRY_AWS_ENDPOINT: moto.endpoint(),
        TENANTRY_AWS_KEY_DELETION_WINDOW_DAYS: '7',
      });
    });
    afterAll(async () => {
      await s?.close();
    });

    it('onboards every tier with its key in KMS and its credentials in Secrets Manager, under that key', async () => {
      for (const tier of ['pool', 'bridge', 'silo'] as const) {
        const slug = slugs[tier];
        ids[tier] = (await onboard(s, tier, slug)).id;
        const d = await logsIn(s, slug);
        const key = await keyOf(slug);
        expect(key?.KeyState).toBe('Enabled');
        const secret = await sm().send(new DescribeSecretCommand({ SecretId: tenantSecretName(slug) }));
        // The descriptor's secretRef is the secret's ARN; the secret is encrypted with the tenant's own key.
        expect(refOf(d)).toBe(secret.ARN);
        expect(refOf(d)).toMatch(/^arn:aws:secretsmanager:/);
        expect(secret.KmsKeyId).toBe(key?.Arn);
        expect(secret.Tags).toEqual(
          expect.arrayContaining([{ Key: 'tenantry:managed-by', Value: 'tenantry' }]),
        );
      }
      // Nothing of it in the control database's local key store.
      const local = await superQuery(
        s.controlDb,
        `SELECT (SELECT count(*) FROM local_keys)::int AS keys, (SELECT count(*) FROM local_secrets)::int AS secrets`,
      );
      expect(local[0]).toEqual({ keys: 0, secrets: 0 });
      // The platform key and the pool login's secret live there too.
      expect(
        (await kms().send(new DescribeKeyCommand({ KeyId: 'alias/tenantry/platform' }))).KeyMetadata
          ?.KeyState,
      ).toBe('Enabled');
    });

    it('promotes pool→bridge and bridge→silo, the new credentials a new version of the same secret', async () => {
      for (const [tier, target] of [
        ['pool', 'bridge'],
        ['bridge', 'silo'],
      ] as const) {
        const slug = slugs[tier];
        const before = await connectionOf(s, slug);
        const versionBefore = await currentVersion(slug);
        const { op } = await promoteAndWait(s, slug, target);
        expect(op.status, JSON.stringify(op)).toBe('succeeded');
        const after = await logsIn(s, slug);
        expect(after.tier).toBe(target);
        expect(refOf(after)).toBe(refOf(before));
        expect(await currentVersion(slug)).toBeGreaterThan(versionBefore);
        // The promotion's staging secret (the new login's password before the flip) is gone.
        const staging = await outcome(
          sm().send(new DescribeSecretCommand({ SecretId: `tenantry/${slug}/promotion` })),
        );
        expect(staging).toBe('ResourceNotFoundException');
      }
    });

    it('offboards: schedules each key’s deletion, removes its alias and deletes the secret at once', async () => {
      for (const tier of ['pool', 'bridge', 'silo'] as const) {
        const slug = slugs[tier];
        const key = await keyOf(slug);
        await offboard(s, slug);
        const after = await kms().send(new DescribeKeyCommand({ KeyId: key?.KeyId }));
        expect(after.KeyMetadata?.KeyState).toBe('PendingDeletion');
        expect(after.KeyMetadata?.DeletionDate).toBeInstanceOf(Date);
        const alias = await outcome(kms().send(new DescribeKeyCommand({ KeyId: tenantKeyAlias(slug) })));
        expect(alias).toBe('NotFoundException');
        const secret = await outcome(
          sm().send(new DescribeSecretCommand({ SecretId: tenantSecretName(slug) })),
        );
        expect(secret).toBe('ResourceNotFoundException');
      }
    });

    it('onboards a slug again right after its offboarding, with a new key and secret', async () => {
      const slug = slugs.pool;
      const again = await onboard(s, 'pool', slug);
      expect(again.id).not.toBe(ids.pool);
      const d = await logsIn(s, slug);
      const key = await keyOf(slug);
      expect(key?.KeyState).toBe('Enabled');
      const secret = await sm().send(new DescribeSecretCommand({ SecretId: tenantSecretName(slug) }));
      expect(secret.KmsKeyId).toBe(key?.Arn);
      expect(refOf(d)).toBe(secret.ARN);
      await offboard(s, slug);
    });

    it('lets a drift sweep read the keys and secrets from AWS: nothing to report, then a deleted secret', async () => {
      const { slug, id } = await onboard(s, 'bridge', `d-${rand(3)}`);
      // What the sweep read from the store: this tenant's key and secret findings.
      const mine = (r: SweepResult) =>
        r.findings.filter((f) => f.tenantId === id && (f.resource === 'key' || f.resource === 'secret'));
      const clean = await s.runtime.services.drift.runNow();
      expect(clean && mine(clean)).toEqual([]);
      await deleteSecretNow(sm(), tenantSecretName(slug));
      const found = await s.runtime.services.drift.runNow();
      expect(found && mine(found)).toEqual([
        expect.objectContaining({ resource: 'secret', name: tenantSecretName(slug), kind: 'missing' }),
      ]);
      await offboard(s, slug);
    });

    it('rotates a bridge and a silo tenant: the new login’s password is a new version of the same secret, under the same key', async () => {
      for (const tier of ['bridge', 'silo'] as const) {
        const { slug } = await onboard(s, tier, `r${tier[0]}-${rand(3)}`);
        const before = await logsIn(s, slug);
        const versionBefore = await currentVersion(slug);
        const res = await s.app.inject({
          method: 'POST',
          url: `/v1/tenants/${slug}/credential-rotations`,
          headers: auth(s.tokens.sre),
          payload: { graceSeconds: 600 },
        });
        expect(res.statusCode).toBe(202);
        const op = await waitForOperation(s, res.json().operation.id, 60_000);
        expect(op.status, JSON.stringify(op)).toBe('succeeded');
        const after = await logsIn(s, slug);
        // The other login of the pair, its password published as the secret's next version.
        expect(after.user).not.toBe(before.user);
        expect(after.password).not.toBe(before.password);
        expect(refOf(after)).toBe(refOf(before));
        expect(await currentVersion(slug)).toBeGreaterThan(versionBefore);
        const secret = await sm().send(new DescribeSecretCommand({ SecretId: tenantSecretName(slug) }));
        expect(secret.KmsKeyId).toBe((await keyOf(slug))?.Arn);
        // Inside the grace period the old login still works.
        await tenantClient(before).then((c) => c.end());
        await offboard(s, slug);
      }
    });
  },
);
