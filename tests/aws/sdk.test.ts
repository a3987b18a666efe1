/**
 * The project's AWS SDK helpers (control-plane/src/aws/) through the real clients, against the AWS
 * API emulator (tests/aws/helpers/moto.ts): what AWS answers on the wire, not what a mock was told.
 * What moto answers differently from AWS stays in tests/unit/aws/ with aws-sdk-client-mock.
 */
import {
  DescribeKeyCommand,
  GetKeyRotationStatusCommand,
  KMSClient,
  ListResourceTagsCommand,
} from '@aws-sdk/client-kms';
import {
  CreateAccountCommand,
  CreateOrganizationCommand,
  DescribeAccountCommand,
  DescribeCreateAccountStatusCommand,
  OrganizationsClient,
} from '@aws-sdk/client-organizations';
import {
  CreateSecretCommand,
  DeleteSecretCommand,
  DescribeSecretCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { describe, expect, it } from 'vitest';
import {
  assumeRole,
  findActiveAccountIdByEmail,
  memberRoleArn,
} from '../../control-plane/src/aws/accounts.js';
import {
  deleteAlias,
  describeKey,
  ensureAliasedKey,
  listKeyAliases,
  scheduleKeyDeletion,
} from '../../control-plane/src/aws/kms.js';
import { accountState, closeAccount, listAccounts } from '../../control-plane/src/aws/organizations.js';
import {
  deleteSecretNow,
  getSecretValue,
  listSecretsByTag,
  putSecretValue,
  SecretVersionTaken,
  secretVersionOf,
} from '../../control-plane/src/aws/secrets.js';
import { tenantKeyAlias, tenantSecretName } from '../../control-plane/src/domain/naming.js';
import { MOTO_ACCOUNT, MOTO_REGION, skipReason, useMoto } from './helpers/moto.js';

const moto = useMoto();
const region = MOTO_REGION;
// Built inside the tests: the emulator's endpoint is in the environment once it has started.
const kms = () => new KMSClient({ region });
const sm = () => new SecretsManagerClient({ region });
const orgs = () => new OrganizationsClient({ region: 'us-east-1' });
const keyOpts = {
  description: 'test key',
  tags: { 'tenantry:managed-by': 'tenantry' },
  deletionWindowDays: 7,
};

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `KMS helpers on the emulator${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    it('reaches the emulator through AWS_ENDPOINT_URL, with no endpoint in the client', async () => {
      expect(process.env.AWS_ENDPOINT_URL).toBe(moto.endpoint());
      const who = await new STSClient({ region }).send(new GetCallerIdentityCommand({}));
      expect(who.Account).toBe(MOTO_ACCOUNT);
    });

    it('creates one rotating, tagged key behind the alias, and returns the same key when asked again', async () => {
      const alias = tenantKeyAlias('acme');
      const first = await ensureAliasedKey(kms(), alias, keyOpts);
      expect(first).toMatchObject({ state: 'Enabled' });
      expect(first.arn).toBe(`arn:aws:kms:${region}:${MOTO_ACCOUNT}:key/${first.keyId}`);
      expect(await ensureAliasedKey(kms(), alias, keyOpts)).toEqual(first);
      expect(await describeKey(kms(), alias)).toEqual(first);
      const rotation = await kms().send(new GetKeyRotationStatusCommand({ KeyId: first.keyId }));
      expect(rotation.KeyRotationEnabled).toBe(true);
      const tags = await kms().send(new ListResourceTagsCommand({ KeyId: first.keyId }));
      expect(tags.Tags).toEqual(
        expect.arrayContaining([
          { TagKey: 'tenantry:managed-by', TagValue: 'tenantry' },
          { TagKey: 'tenantry:alias', TagValue: alias },
        ]),
      );
    });

    it('moves an alias left on a key pending deletion to a new key (a slug onboarded again)', async () => {
      const alias = tenantKeyAlias('reused');
      const old = await ensureAliasedKey(kms(), alias, keyOpts);
      await scheduleKeyDeletion(kms(), old.keyId, 7);
      expect((await describeKey(kms(), alias))?.state).toBe('PendingDeletion');
      const fresh = await ensureAliasedKey(kms(), alias, keyOpts);
      expect(fresh.keyId).not.toBe(old.keyId);
      expect(await describeKey(kms(), alias)).toEqual(fresh);
    });

    it('schedules a deletion in the window asked for, and forgets a deleted alias', async () => {
      const alias = tenantKeyAlias('gone');
      const key = await ensureAliasedKey(kms(), alias, keyOpts);
      const scheduled = await scheduleKeyDeletion(kms(), key.keyId, 7);
      // AWS answers the key's ARN, moto its id.
      expect(scheduled).toMatchObject({ alreadyPending: false });
      expect(scheduled.keyId).toContain(key.keyId);
      const d = await kms().send(new DescribeKeyCommand({ KeyId: key.keyId }));
      expect(d.KeyMetadata?.KeyState).toBe('PendingDeletion');
      expect(d.KeyMetadata?.PendingDeletionWindowInDays ?? 7).toBe(7);
      await deleteAlias(kms(), alias);
      await deleteAlias(kms(), alias); // gone already: done
      expect(await describeKey(kms(), alias)).toBeNull();
      await expect(
        scheduleKeyDeletion(kms(), '00000000-0000-4000-8000-000000000000', 7),
      ).rejects.toMatchObject({
        code: 'PROVIDER_FAILED',
      });
    });

    it('lists the tenant aliases with their keys, and no other', async () => {
      const a = await ensureAliasedKey(kms(), tenantKeyAlias('alpha'), keyOpts);
      const b = await ensureAliasedKey(kms(), tenantKeyAlias('bravo'), keyOpts);
      await ensureAliasedKey(kms(), 'alias/elsewhere/charlie', keyOpts);
      const listed = await listKeyAliases(kms(), 'alias/tenantry/');
      expect(Object.fromEntries(listed)).toEqual({
        [tenantKeyAlias('alpha')]: a.keyId,
        [tenantKeyAlias('bravo')]: b.keyId,
      });
    });
  },
);

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `Secrets Manager helpers on the emulator${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    it('creates a secret under the given key with numbered versions, and reads the latest back', async () => {
      const key = await ensureAliasedKey(kms(), tenantKeyAlias('acme'), keyOpts);
      const name = tenantSecretName('acme');
      const v1 = await putSecretValue(sm(), name, { host: 'h', n: 1 }, { kmsKeyId: key.arn, version: 1 });
      expect(v1.arn).toMatch(new RegExp(`^arn:aws:secretsmanager:${region}:${MOTO_ACCOUNT}:secret:`));
      expect(secretVersionOf(v1.versionId)).toBe(1);
      const described = await sm().send(new DescribeSecretCommand({ SecretId: name }));
      expect(described.KmsKeyId).toBe(key.arn);
      await putSecretValue(sm(), name, { host: 'h', n: 2 }, { kmsKeyId: key.arn, version: 2 });
      const read = await getSecretValue(sm(), name);
      expect(read).toEqual({ arn: v1.arn, versionId: read?.versionId, value: { host: 'h', n: 2 } });
      expect(secretVersionOf(read?.versionId)).toBe(2);
    });

    it('makes a retried write of a version a no-op, and refuses that version with another value', async () => {
      const key = await ensureAliasedKey(kms(), tenantKeyAlias('race'), keyOpts);
      const name = tenantSecretName('race');
      await putSecretValue(sm(), name, { a: 1 }, { kmsKeyId: key.arn, version: 1 });
      await putSecretValue(sm(), name, { a: 2 }, { kmsKeyId: key.arn, version: 2 });
      await putSecretValue(sm(), name, { a: 2 }, { kmsKeyId: key.arn, version: 2 });
      await expect(
        putSecretValue(sm(), name, { a: 3 }, { kmsKeyId: key.arn, version: 2 }),
      ).rejects.toBeInstanceOf(SecretVersionTaken);
      expect((await getSecretValue(sm(), name))?.value).toEqual({ a: 2 });
    });

    it('reads a missing secret, and one deleted with a recovery window, as none', async () => {
      expect(await getSecretValue(sm(), tenantSecretName('ghost'))).toBeNull();
      await sm().send(new CreateSecretCommand({ Name: 'tenantry/held/connection', SecretString: '{}' }));
      await sm().send(
        new DeleteSecretCommand({ SecretId: 'tenantry/held/connection', RecoveryWindowInDays: 7 }),
      );
      expect(await getSecretValue(sm(), 'tenantry/held/connection')).toBeNull();
    });

    it('never echoes a secret value that is not a JSON object', async () => {
      await sm().send(
        new CreateSecretCommand({ Name: 'tenantry/plain/connection', SecretString: 'hunter2' }),
      );
      const err = (await getSecretValue(sm(), 'tenantry/plain/connection').catch((e: unknown) => e)) as Error;
      expect(err).toMatchObject({ code: 'SECRET_UNAVAILABLE' });
      expect(err.message).not.toContain('hunter2');
    });

    it('deletes a secret at once, so its name can be created again, and a gone one is done', async () => {
      const key = await ensureAliasedKey(kms(), tenantKeyAlias('again'), keyOpts);
      const name = tenantSecretName('again');
      const first = await putSecretValue(sm(), name, { a: 1 }, { kmsKeyId: key.arn, version: 1 });
      await deleteSecretNow(sm(), name);
      await deleteSecretNow(sm(), name);
      const second = await putSecretValue(sm(), name, { a: 2 }, { kmsKeyId: key.arn, version: 1 });
      expect(second.arn).not.toBe(first.arn);
    });

    it('lists secrets by exact tag pair across pages (more than one page of 100)', async () => {
      const tagged = Array.from(
        { length: 103 },
        (_, i) => `tenantry/t${String(i).padStart(3, '0')}/connection`,
      );
      for (const name of tagged) {
        await sm().send(
          new CreateSecretCommand({
            Name: name,
            SecretString: '{}',
            Tags: [{ Key: 'tenantry:managed-by', Value: 'tenantry' }],
          }),
        );
      }
      // tag-key and tag-value filters match independently: the key and the value on different tags.
      await sm().send(
        new CreateSecretCommand({
          Name: 'other/b',
          SecretString: '{}',
          Tags: [
            { Key: 'tenantry:managed-by', Value: 'someone' },
            { Key: 'owner', Value: 'tenantry' },
          ],
        }),
      );
      const found = await listSecretsByTag(sm(), 'tenantry:managed-by', 'tenantry');
      expect(found.map((s) => s.Name).sort()).toEqual(tagged);
    });
  },
);

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `Organizations and STS helpers on the emulator${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    async function vend(email: string): Promise<string> {
      const c = await orgs().send(
        new CreateAccountCommand({
          Email: email,
          AccountName: email.split('@')[0],
          RoleName: 'OrganizationAccountAccessRole',
        }),
      );
      const s = await orgs().send(
        new DescribeCreateAccountStatusCommand({ CreateAccountRequestId: c.CreateAccountStatus?.Id }),
      );
      return String(s.CreateAccountStatus?.AccountId);
    }

    it('finds the active account by root email across pages, and not once it is closed', async () => {
      await orgs().send(new CreateOrganizationCommand({ FeatureSet: 'ALL' }));
      const ids: string[] = [];
      for (let i = 0; i < 23; i++) ids.push(await vend(`root+t${i}@tenants.example.com`));
      const all = await listAccounts(orgs());
      expect(all.length).toBe(24); // the management account and 23 members: more than one page
      const target = ids[21] as string;
      expect(await findActiveAccountIdByEmail(orgs(), 'ROOT+T21@tenants.example.com')).toBe(target);
      await closeAccount(orgs(), target);
      const closed = await orgs().send(new DescribeAccountCommand({ AccountId: target }));
      expect(accountState(closed.Account ?? {})).not.toBe('ACTIVE');
      expect(await findActiveAccountIdByEmail(orgs(), 'root+t21@tenants.example.com')).toBeNull();
    });

    it('assumes the organization role in a member account and acts there', async () => {
      await orgs().send(new CreateOrganizationCommand({ FeatureSet: 'ALL' }));
      const id = await vend('root+member@tenants.example.com');
      const creds = await assumeRole(
        new STSClient({ region }),
        memberRoleArn(id, 'OrganizationAccountAccessRole'),
        'tenantry-test',
      );
      expect(creds.sessionToken).toBeTruthy();
      const inside = new SecretsManagerClient({ region, credentials: creds });
      const who = await new STSClient({ region, credentials: creds }).send(new GetCallerIdentityCommand({}));
      expect(who.Account).toBe(id);
      await inside.send(
        new CreateSecretCommand({ Name: tenantSecretName('member'), SecretString: '{"host":"h"}' }),
      );
      expect((await getSecretValue(inside, tenantSecretName('member')))?.arn).toContain(`:${id}:secret:`);
      // The platform account does not see it.
      expect(await getSecretValue(sm(), tenantSecretName('member'))).toBeNull();
    });
  },
);
