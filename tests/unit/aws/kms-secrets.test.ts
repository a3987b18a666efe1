import {
  KMSClient,
  KMSInvalidStateException,
  ListAliasesCommand,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import {
  CreateSecretCommand,
  GetSecretValueCommand,
  ListSecretsCommand,
  PutSecretValueCommand,
  ResourceNotFoundException,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { findKeyByAlias, scheduleKeyDeletion } from '../../../control-plane/src/aws/kms.js';
import { getSecretValue, listSecretsByTag, putSecretValue } from '../../../control-plane/src/aws/secrets.js';
import { tenantKeyAlias, tenantSecretName } from '../../../control-plane/src/domain/naming.js';

const kms = mockClient(KMSClient);
const sm = mockClient(SecretsManagerClient);
const kmsClient = new KMSClient({ region: 'eu-west-1' });
const smClient = new SecretsManagerClient({ region: 'eu-west-1' });
const meta = { $metadata: { httpStatusCode: 400 } };
const KEY_ID = '1234abcd-12ab-34cd-56ef-1234567890ab';

afterEach(() => {
  kms.reset();
  sm.reset();
});

describe('findKeyByAlias', () => {
  it('walks ListAliases pages via NextMarker until it finds the alias', async () => {
    kms
      .on(ListAliasesCommand, { Marker: undefined })
      .resolves({
        Aliases: [
          { AliasName: 'alias/aws/rds', AliasArn: 'arn:aws:kms:eu-west-1:111111111111:alias/aws/rds' },
        ],
        Truncated: true,
        NextMarker: 'm2',
      })
      .on(ListAliasesCommand, { Marker: 'm2' })
      .resolves({
        Aliases: [
          { AliasName: tenantKeyAlias('other'), TargetKeyId: 'ffff' },
          {
            AliasName: tenantKeyAlias('acme'),
            AliasArn: `arn:aws:kms:eu-west-1:111111111111:${tenantKeyAlias('acme')}`,
            TargetKeyId: KEY_ID,
          },
        ],
        Truncated: false,
      });
    expect(await findKeyByAlias(kmsClient, tenantKeyAlias('acme'))).toEqual({
      alias: tenantKeyAlias('acme'),
      keyId: KEY_ID,
      aliasArn: `arn:aws:kms:eu-west-1:111111111111:${tenantKeyAlias('acme')}`,
    });
    expect(kms.commandCalls(ListAliasesCommand)).toHaveLength(2);
  });

  it('returns null after the last page when the alias does not exist', async () => {
    kms
      .on(ListAliasesCommand, { Marker: undefined })
      .resolves({ Aliases: [{ AliasName: 'alias/a', TargetKeyId: 'k1' }], Truncated: true, NextMarker: 'm2' })
      .on(ListAliasesCommand, { Marker: 'm2' })
      .resolves({
        Aliases: [{ AliasName: 'alias/b', TargetKeyId: 'k2' }],
        Truncated: false,
        NextMarker: 'ignored',
      });
    expect(await findKeyByAlias(kmsClient, tenantKeyAlias('ghost'))).toBeNull();
    expect(kms.commandCalls(ListAliasesCommand)).toHaveLength(2);
  });
});

describe('scheduleKeyDeletion', () => {
  it('schedules deletion with the given window', async () => {
    const deletionDate = new Date('2025-02-01T00:00:00Z');
    kms.on(ScheduleKeyDeletionCommand).resolves({
      KeyId: `arn:aws:kms:eu-west-1:111111111111:key/${KEY_ID}`,
      DeletionDate: deletionDate,
      KeyState: 'PendingDeletion',
      PendingWindowInDays: 14,
    });
    const res = await scheduleKeyDeletion(kmsClient, KEY_ID, 14);
    expect(res).toMatchObject({ deletionDate, alreadyPending: false });
    expect(kms.commandCalls(ScheduleKeyDeletionCommand)[0]?.args[0].input).toEqual({
      KeyId: KEY_ID,
      PendingWindowInDays: 14,
    });
  });

  it.each([6, 31, 7.5])('refuses a window of %s days without calling KMS', async (days) => {
    await expect(scheduleKeyDeletion(kmsClient, KEY_ID, days)).rejects.toThrow(/7 to 30/);
    expect(kms.commandCalls(ScheduleKeyDeletionCommand)).toHaveLength(0);
  });

  it('treats a key already pending deletion as done', async () => {
    kms
      .on(ScheduleKeyDeletionCommand)
      .rejects(new KMSInvalidStateException({ message: `${KEY_ID} is pending deletion.`, ...meta }));
    expect(await scheduleKeyDeletion(kmsClient, KEY_ID, 7)).toEqual({ keyId: KEY_ID, alreadyPending: true });
  });
});

describe('Secrets Manager helpers', () => {
  it('reads a JSON secret and returns null for a missing one', async () => {
    const arn = `arn:aws:secretsmanager:eu-west-1:111111111111:secret:${tenantSecretName('acme')}-AbCdEf`;
    sm.on(GetSecretValueCommand, { SecretId: tenantSecretName('acme') })
      .resolves({
        ARN: arn,
        Name: tenantSecretName('acme'),
        VersionId: 'v1',
        SecretString: '{"host":"db","port":5432}',
        VersionStages: ['AWSCURRENT'],
      })
      .on(GetSecretValueCommand, { SecretId: tenantSecretName('ghost') })
      .rejects(
        new ResourceNotFoundException({
          message: "Secrets Manager can't find the specified secret.",
          ...meta,
        }),
      );
    expect(await getSecretValue(smClient, tenantSecretName('acme'))).toEqual({
      arn,
      versionId: 'v1',
      value: { host: 'db', port: 5432 },
    });
    expect(await getSecretValue(smClient, tenantSecretName('ghost'))).toBeNull();
  });

  it('never echoes a non-JSON secret value in its error', async () => {
    sm.on(GetSecretValueCommand).resolves({ ARN: 'arn', SecretString: 'hunter2-plaintext' });
    const err = await getSecretValue(smClient, 'x').catch((e: Error) => e);
    expect(String((err as Error).message)).not.toContain('hunter2');
  });

  it('puts a new version when the secret exists, and creates it under the tenant key when it does not', async () => {
    sm.on(PutSecretValueCommand, { SecretId: 'exists' })
      .resolves({ ARN: 'arn:exists', VersionId: 'v2' })
      .on(PutSecretValueCommand, { SecretId: 'new' })
      .rejects(new ResourceNotFoundException({ message: 'not found', ...meta }));
    sm.on(CreateSecretCommand).resolves({ ARN: 'arn:new', Name: 'new', VersionId: 'v1' });
    expect(await putSecretValue(smClient, 'exists', { a: 1 }, { kmsKeyId: KEY_ID })).toEqual({
      arn: 'arn:exists',
      versionId: 'v2',
    });
    expect(sm.commandCalls(CreateSecretCommand)).toHaveLength(0);
    expect(
      await putSecretValue(
        smClient,
        'new',
        { a: 1 },
        { kmsKeyId: KEY_ID, tags: { 'tenantry:tier': 'pool' } },
      ),
    ).toEqual({
      arn: 'arn:new',
      versionId: 'v1',
    });
    expect(sm.commandCalls(CreateSecretCommand)[0]?.args[0].input).toMatchObject({
      Name: 'new',
      KmsKeyId: KEY_ID,
      SecretString: '{"a":1}',
      Tags: [{ Key: 'tenantry:tier', Value: 'pool' }],
    });
  });

  it('lists secrets by tag across NextToken pages, keeping only exact key=value pairs', async () => {
    const entry = (name: string, tags: [string, string][]) => ({
      ARN: `arn:aws:secretsmanager:eu-west-1:111111111111:secret:${name}-AbCdEf`,
      Name: name,
      Tags: tags.map(([Key, Value]) => ({ Key, Value })),
    });
    sm.on(ListSecretsCommand, { NextToken: undefined })
      .resolves({
        SecretList: [
          entry(tenantSecretName('acme'), [['tenantry:managed-by', 'tenantry']]),
          // tag-key and tag-value filters match independently: this one has the key and the value on different tags.
          entry('other/b', [
            ['tenantry:managed-by', 'someone'],
            ['owner', 'tenantry'],
          ]),
        ],
        NextToken: 'tok-2',
      })
      .on(ListSecretsCommand, { NextToken: 'tok-2' })
      .resolves({ SecretList: [entry(tenantSecretName('cobalt'), [['tenantry:managed-by', 'tenantry']])] });
    const found = await listSecretsByTag(smClient, 'tenantry:managed-by', 'tenantry');
    expect(found.map((s) => s.Name)).toEqual([tenantSecretName('acme'), tenantSecretName('cobalt')]);
    expect(sm.commandCalls(ListSecretsCommand)).toHaveLength(2);
    expect(sm.commandCalls(ListSecretsCommand)[0]?.args[0].input.Filters).toEqual([
      { Key: 'tag-key', Values: ['tenantry:managed-by'] },
      { Key: 'tag-value', Values: ['tenantry'] },
    ]);
  });
});
