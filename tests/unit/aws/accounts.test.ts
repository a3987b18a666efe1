/**
 * Account lookups where the AWS API emulator (tests/aws/sdk.test.ts runs them on moto) cannot show
 * what AWS does: answers with `State` and `Status` apart (moto always answers both, equal), the
 * request STS is sent (moto checks neither duration nor session name), and an answer without
 * credentials (neither AWS nor moto sends one; the guard is ours).
 */
import { ListAccountsCommand, OrganizationsClient } from '@aws-sdk/client-organizations';
import { AssumeRoleCommand, STSClient } from '@aws-sdk/client-sts';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import {
  assumeRole,
  findActiveAccountIdByEmail,
  memberRoleArn,
} from '../../../control-plane/src/aws/accounts.js';

const org = mockClient(OrganizationsClient);
const sts = mockClient(STSClient);
const orgClient = new OrganizationsClient({ region: 'us-east-1' });
const stsClient = new STSClient({ region: 'eu-west-1' });
const EMAIL = 'root+acme-0a1b2c3d4e5f@tenants.example.com';

afterEach(() => {
  org.reset();
  sts.reset();
});

describe('findActiveAccountIdByEmail', () => {
  it('follows NextToken and returns the active account with that root email', async () => {
    org
      .on(ListAccountsCommand, { NextToken: undefined })
      .resolves({
        Accounts: [{ Id: '111111111111', Email: 'platform@example.com', Status: 'ACTIVE' }],
        NextToken: 't2',
      })
      .on(ListAccountsCommand, { NextToken: 't2' })
      .resolves({ Accounts: [{ Id: '333333333333', Email: EMAIL.toUpperCase(), Status: 'ACTIVE' }] });
    expect(await findActiveAccountIdByEmail(orgClient, EMAIL)).toBe('333333333333');
    expect(org.commandCalls(ListAccountsCommand)).toHaveLength(2);
  });

  it('reads State, the field that replaces Status (moto answers both, always equal; AWS retires Status on 9 September 2026)', async () => {
    org.on(ListAccountsCommand).resolves({
      Accounts: [
        // An endpoint past the retirement: State only.
        { Id: '666666666666', Email: EMAIL, State: 'ACTIVE' },
      ],
    });
    expect(await findActiveAccountIdByEmail(orgClient, EMAIL)).toBe('666666666666');
    org.reset();
    org.on(ListAccountsCommand).resolves({
      Accounts: [
        // A closing account whose retired Status still says ACTIVE: State decides.
        { Id: '777777777777', Email: EMAIL, State: 'PENDING_CLOSURE', Status: 'ACTIVE' },
      ],
    });
    expect(await findActiveAccountIdByEmail(orgClient, EMAIL)).toBeNull();
  });

  it('ignores a suspended or closing account with that email (an older endpoint: Status only)', async () => {
    org.on(ListAccountsCommand).resolves({
      Accounts: [
        { Id: '444444444444', Email: EMAIL, Status: 'SUSPENDED' },
        { Id: '555555555555', Email: EMAIL, Status: 'PENDING_CLOSURE' },
      ],
    });
    expect(await findActiveAccountIdByEmail(orgClient, EMAIL)).toBeNull();
  });
});

describe('assumeRole', () => {
  it('returns the session credentials, asking for 15 minutes under a bounded session name', async () => {
    const expiration = new Date('2030-01-01T00:00:00Z');
    sts.on(AssumeRoleCommand).resolves({
      Credentials: { AccessKeyId: 'ASIA1', SecretAccessKey: 's', SessionToken: 't', Expiration: expiration },
    });
    const roleArn = memberRoleArn('333333333333', 'OrganizationAccountAccessRole');
    expect(await assumeRole(stsClient, roleArn, `tenantry-connection-${'x'.repeat(80)}`)).toEqual({
      accessKeyId: 'ASIA1',
      secretAccessKey: 's',
      sessionToken: 't',
      expiration,
    });
    const input = sts.commandCalls(AssumeRoleCommand)[0]?.args[0].input;
    expect(input).toMatchObject({ RoleArn: roleArn, DurationSeconds: 900 });
    expect(input?.RoleSessionName?.length).toBe(64);
  });

  it('fails clearly when STS returns no credentials, and refuses malformed ARN parts', async () => {
    sts.on(AssumeRoleCommand).resolves({});
    await expect(assumeRole(stsClient, 'arn:aws:iam::333333333333:role/r', 's')).rejects.toMatchObject({
      code: 'PROVIDER_FAILED',
    });
    expect(() => memberRoleArn('3333', 'r')).toThrow(/account id/);
    expect(() => memberRoleArn('333333333333', 'bad/role')).toThrow(/role name/);
  });
});
