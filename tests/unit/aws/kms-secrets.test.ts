/**
 * KMS and Secrets Manager helpers where the AWS API emulator (tests/aws/sdk.test.ts runs the rest on
 * moto) cannot show what AWS does. Each test names the difference it covers.
 */
import {
  KMSClient,
  KMSInvalidStateException,
  ListAliasesCommand,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import {
  CreateSecretCommand,
  GetSecretValueCommand,
  InvalidRequestException,
  PutSecretValueCommand,
  ResourceNotFoundException,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { listKeyAliases, scheduleKeyDeletion } from '../../../control-plane/src/aws/kms.js';
import { getSecretValue, putSecretValue } from '../../../control-plane/src/aws/secrets.js';
import { tenantKeyAlias, tenantSecretName } from '../../../control-plane/src/domain/naming.js';

const kms = mockClient(KMSClient);
const sm = mockClient(SecretsManagerClient);
const kmsClient = new KMSClient({ region: 'eu-west-1' });
const smClient = new SecretsManagerClient({ region: 'eu-west-1' });
const meta = { $metadata: { httpStatusCode: 400 } };
const KEY_ID = '1234abcd-12ab-34cd-56ef-1234567890ab';
/** AWS's wording for a secret in its recovery window (moto words it "currently marked deleted"). */
const AWS_MARKED = "You can't perform this operation on the secret because it was marked for deletion.";

afterEach(() => {
  kms.reset();
  sm.reset();
});

describe('listKeyAliases', () => {
  it('walks ListAliases pages via NextMarker (moto ignores Limit and never truncates, so paging shows only here)', async () => {
    kms
      .on(ListAliasesCommand, { Marker: undefined })
      .resolves({
        Aliases: [{ AliasName: 'alias/aws/rds', TargetKeyId: 'aws-managed' }],
        Truncated: true,
        NextMarker: 'm2',
      })
      .on(ListAliasesCommand, { Marker: 'm2' })
      .resolves({
        Aliases: [
          { AliasName: tenantKeyAlias('other'), TargetKeyId: 'ffff' },
          { AliasName: tenantKeyAlias('acme'), TargetKeyId: KEY_ID },
          { AliasName: tenantKeyAlias('dangling') },
        ],
        Truncated: false,
        NextMarker: 'ignored',
      });
    expect(Object.fromEntries(await listKeyAliases(kmsClient, 'alias/tenantry/'))).toEqual({
      [tenantKeyAlias('other')]: 'ffff',
      [tenantKeyAlias('acme')]: KEY_ID,
    });
    expect(kms.commandCalls(ListAliasesCommand)).toHaveLength(2);
  });
});

describe('scheduleKeyDeletion', () => {
  it.each([6, 31, 7.5])('refuses a window of %s days without calling KMS', async (days) => {
    await expect(scheduleKeyDeletion(kmsClient, KEY_ID, days)).rejects.toThrow(/7 to 30/);
    expect(kms.commandCalls(ScheduleKeyDeletionCommand)).toHaveLength(0);
  });

  it('treats a key already pending deletion as done (AWS refuses a second ScheduleKeyDeletion; moto accepts it)', async () => {
    kms
      .on(ScheduleKeyDeletionCommand)
      .rejects(new KMSInvalidStateException({ message: `${KEY_ID} is pending deletion.`, ...meta }));
    expect(await scheduleKeyDeletion(kmsClient, KEY_ID, 7)).toEqual({ keyId: KEY_ID, alreadyPending: true });
  });
});

describe('Secrets Manager helpers', () => {
  it('reads a secret in its recovery window as none (AWS words that error unlike moto)', async () => {
    sm.on(GetSecretValueCommand).rejects(new InvalidRequestException({ message: AWS_MARKED, ...meta }));
    expect(await getSecretValue(smClient, tenantSecretName('acme'))).toBeNull();
  });

  it('retries throttling before giving an answer (moto never throttles)', async () => {
    sm.on(GetSecretValueCommand)
      .rejectsOnce(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', ...meta }))
      .rejectsOnce(new ResourceNotFoundException({ message: 'not found', ...meta }));
    expect(await getSecretValue(smClient, tenantSecretName('acme'))).toBeNull();
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(2);
  });

  it('fails retryably on a secret marked for deletion (AWS refuses PutSecretValue there; moto accepts it)', async () => {
    sm.on(PutSecretValueCommand).rejects(new InvalidRequestException({ message: AWS_MARKED, ...meta }));
    const err = await putSecretValue(
      smClient,
      tenantSecretName('acme'),
      { a: 1 },
      { kmsKeyId: KEY_ID, version: 2 },
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'SECRET_UNAVAILABLE', retryable: true });
    expect(sm.commandCalls(CreateSecretCommand)).toHaveLength(0);
  });

  it('fails retryably on a name a deleted secret still holds (AWS: InvalidRequestException; moto: ResourceExistsException)', async () => {
    sm.on(PutSecretValueCommand).rejects(new ResourceNotFoundException({ message: 'not found', ...meta }));
    sm.on(CreateSecretCommand).rejects(
      new InvalidRequestException({
        message: `You can't create this secret because a secret with this name is already scheduled for deletion.`,
        ...meta,
      }),
    );
    const err = await putSecretValue(
      smClient,
      tenantSecretName('acme'),
      { a: 1 },
      { kmsKeyId: KEY_ID, version: 1 },
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'SECRET_UNAVAILABLE', retryable: true });
    expect((err as Error).message).toMatch(/scheduled for deletion/);
  });
});
