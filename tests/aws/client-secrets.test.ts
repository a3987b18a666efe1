/**
 * The data-plane client on the aws target: the descriptor carries no password, the client reads it
 * from Secrets Manager by the descriptor's secretRef, with the data plane's own credentials (here the
 * AWS API emulator's, tests/aws/helpers/moto.ts), and connects with it to a real Postgres tenant.
 */
import {
  CreateSecretCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ConnectionDescriptor,
  secretsManagerPasswords,
  TenantryClient,
} from '../../control-plane/src/client/index.js';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { loginRoleNames } from '../../control-plane/src/domain/naming.js';
import { connectionOf, onboard, startStack, superQuery, type TestStack } from '../helpers/runtime.js';
import { MOTO_REGION, skipReason, useMoto } from './helpers/moto.js';

useMoto();

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `the client's Secrets Manager passwords on the emulator${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    let s: TestStack;
    beforeAll(async () => {
      s = await startStack({ TENANTRY_ROTATION_SCHEDULE: 'off' });
    });
    afterAll(async () => {
      await s?.close();
      const { poolRole } = dataPlaneNames(s.dataDb);
      await superQuery('postgres', `DROP ROLE IF EXISTS ${loginRoleNames(poolRole).join(', ')}`).catch(
        () => undefined,
      );
    });

    const sm = () => new SecretsManagerClient({ region: MOTO_REGION });

    it('reads the password by secretRef and connects with it; a new version is read once the cached one is forgotten', async () => {
      const t = await onboard(s, 'bridge');
      const { password, ...d } = (await connectionOf(s, t.slug)) as unknown as ConnectionDescriptor;
      const created = await sm().send(
        new CreateSecretCommand({
          Name: `tenantry/${t.slug}/connection`,
          SecretString: JSON.stringify({ ...d, password }),
        }),
      );
      const descriptor: ConnectionDescriptor = { ...d, secretRef: created.ARN as string };
      const passwords = secretsManagerPasswords({ region: MOTO_REGION });
      expect(await passwords(descriptor)).toBe(password);
      const client = new TenantryClient({ descriptors: async () => descriptor, passwords });
      try {
        const n = await client.withTenant(t.slug, async (db) => {
          await db.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [db.tenantId, 'aws@x']);
          return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM users')).rows[0]?.n;
        });
        expect(n).toBe(1);
      } finally {
        await client.close();
      }
      // A rotation publishes a new version: served from the cache until a refused login forgets it.
      await sm().send(
        new PutSecretValueCommand({
          SecretId: created.ARN,
          SecretString: JSON.stringify({ ...d, password: 'rotated' }),
        }),
      );
      expect(await passwords(descriptor)).toBe(password);
      passwords.forget(descriptor.secretRef);
      expect(await passwords(descriptor)).toBe('rotated');
    });

    it('names the secret, never its value, when it cannot be read or holds no password', async () => {
      const passwords = secretsManagerPasswords({ region: MOTO_REGION });
      const base = { tenantId: 't', tier: 'silo' as const, host: 'h', port: 1, database: 'd', user: 'u' };
      await expect(passwords({ ...base, secretRef: 'tenantry/no-such/connection' })).rejects.toMatchObject({
        code: 'DESCRIPTOR_UNAVAILABLE',
        message: 'the secret tenantry/no-such/connection could not be read',
      });
      const made = await sm().send(
        new CreateSecretCommand({
          Name: 'tenantry/odd/connection',
          SecretString: JSON.stringify({ user: 'u' }),
        }),
      );
      await expect(passwords({ ...base, secretRef: made.ARN as string })).rejects.toMatchObject({
        code: 'DESCRIPTOR_UNAVAILABLE',
        message: `the secret ${made.ARN} holds no password`,
      });
    });
  },
);
