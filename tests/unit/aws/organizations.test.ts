import {
  ConcurrentModificationException,
  CreateAccountCommand,
  DescribeCreateAccountStatusCommand,
  ListAccountsCommand,
  OrganizationsClient,
  TooManyRequestsException,
} from '@aws-sdk/client-organizations';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createAccount,
  listAccounts,
  waitForCreateAccount,
} from '../../../control-plane/src/aws/organizations.js';
import { Semaphore } from '../../../control-plane/src/aws/semaphore.js';
import { TenantryError } from '../../../control-plane/src/domain/errors.js';

const org = mockClient(OrganizationsClient);
const client = new OrganizationsClient({ region: 'us-east-1' });
const noSleep = { sleep: async () => undefined, random: () => 0.5 };
const input = {
  email: 'root+acme-0a1b2c3d4e5f@tenants.example.com',
  accountName: 'tenantry-acme',
  roleName: 'OrganizationAccountAccessRole',
};
const meta = { $metadata: { httpStatusCode: 400, requestId: 'req-1' } };

function status(state: 'IN_PROGRESS' | 'SUCCEEDED' | 'FAILED', extra: Record<string, string> = {}) {
  return {
    CreateAccountStatus: {
      Id: 'car-0123456789abcdef0123456789abcdef',
      AccountName: 'tenantry-acme',
      State: state,
      RequestedTimestamp: new Date('2025-01-01T00:00:00Z'),
      ...extra,
    },
  };
}

afterEach(() => org.reset());

describe('createAccount', () => {
  it('polls DescribeCreateAccountStatus until SUCCEEDED and returns the account id', async () => {
    org.on(CreateAccountCommand).resolves(status('IN_PROGRESS'));
    org
      .on(DescribeCreateAccountStatusCommand)
      .resolvesOnce(status('IN_PROGRESS'))
      .resolvesOnce(status('IN_PROGRESS'))
      .resolves(status('SUCCEEDED', { AccountId: '210987654321' }));
    const res = await createAccount(
      client,
      { ...input, tags: { 'tenantry:tenant-id': 't1' } },
      { retry: noSleep },
    );
    expect(res).toEqual({ accountId: '210987654321', requestId: 'car-0123456789abcdef0123456789abcdef' });
    expect(org.commandCalls(DescribeCreateAccountStatusCommand)).toHaveLength(3);
    const sent = org.commandCalls(CreateAccountCommand)[0]?.args[0].input;
    expect(sent).toMatchObject({
      Email: input.email,
      RoleName: input.roleName,
      Tags: [{ Key: 'tenantry:tenant-id', Value: 't1' }],
    });
  });

  it.each(['EMAIL_ALREADY_EXISTS', 'ACCOUNT_LIMIT_EXCEEDED', 'INVALID_EMAIL'])(
    'turns FAILED with %s into a non-retryable error carrying the reason, without a second request',
    async (reason) => {
      org.on(CreateAccountCommand).resolves(status('IN_PROGRESS'));
      org.on(DescribeCreateAccountStatusCommand).resolves(status('FAILED', { FailureReason: reason }));
      const err = await createAccount(client, input, { retry: noSleep }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TenantryError);
      expect((err as TenantryError).retryable).toBe(false);
      expect((err as TenantryError).context.reason).toBe(reason);
      expect((err as TenantryError).message).toContain(reason);
      expect(org.commandCalls(CreateAccountCommand)).toHaveLength(1);
    },
  );

  it('retries a request that FAILED with CONCURRENT_ACCOUNT_MODIFICATION', async () => {
    org
      .on(CreateAccountCommand)
      .resolvesOnce(status('IN_PROGRESS', { Id: 'car-first' }))
      .resolves(status('IN_PROGRESS', { Id: 'car-second' }));
    org
      .on(DescribeCreateAccountStatusCommand, { CreateAccountRequestId: 'car-first' })
      .resolves(status('FAILED', { Id: 'car-first', FailureReason: 'CONCURRENT_ACCOUNT_MODIFICATION' }))
      .on(DescribeCreateAccountStatusCommand, { CreateAccountRequestId: 'car-second' })
      .resolves(status('SUCCEEDED', { Id: 'car-second', AccountId: '123456789012' }));
    const res = await createAccount(client, input, { retry: noSleep });
    expect(res.accountId).toBe('123456789012');
    expect(org.commandCalls(CreateAccountCommand)).toHaveLength(2);
  });

  it('retries ConcurrentModificationException and throttling with jittered, growing delays', async () => {
    const delays: number[] = [];
    org
      .on(CreateAccountCommand)
      .rejectsOnce(
        new ConcurrentModificationException({
          message:
            'AWS Organizations can’t complete your request because it conflicts with another attempt to modify the same entity.',
          ...meta,
        }),
      )
      .rejectsOnce(
        new TooManyRequestsException({
          message: 'You have sent too many requests in too short a period of time.',
          ...meta,
        }),
      )
      .resolves(status('SUCCEEDED', { AccountId: '123456789012' }));
    org.on(DescribeCreateAccountStatusCommand).resolves(status('SUCCEEDED', { AccountId: '123456789012' }));
    await createAccount(client, input, {
      retry: {
        sleep: async (ms) => void delays.push(ms),
        random: () => 0.999,
        baseDelayMs: 100,
        maxDelayMs: 10_000,
      },
    });
    expect(org.commandCalls(CreateAccountCommand)).toHaveLength(3);
    expect(delays).toEqual([99, 199]);
  });

  it('gives up after the attempt budget on persistent throttling', async () => {
    org.on(CreateAccountCommand).rejects(new TooManyRequestsException({ message: 'slow down', ...meta }));
    await expect(createAccount(client, input, { retry: { ...noSleep, maxAttempts: 3 } })).rejects.toThrow(
      'slow down',
    );
    expect(org.commandCalls(CreateAccountCommand)).toHaveLength(3);
  });

  it('never runs more than the semaphore allows at once', async () => {
    const sem = new Semaphore(5);
    let running = 0;
    let peak = 0;
    org.on(CreateAccountCommand).callsFake(async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      return status('IN_PROGRESS');
    });
    org.on(DescribeCreateAccountStatusCommand).resolves(status('SUCCEEDED', { AccountId: '123456789012' }));
    await Promise.all(
      Array.from({ length: 12 }, () => createAccount(client, input, { semaphore: sem, retry: noSleep })),
    );
    expect(peak).toBe(5);
    expect(org.commandCalls(CreateAccountCommand)).toHaveLength(12);
  });
});

describe('waitForCreateAccount', () => {
  it('stops at the deadline with a retryable in-progress error and does not re-create', async () => {
    let t = 0;
    org.on(DescribeCreateAccountStatusCommand).resolves(status('IN_PROGRESS'));
    const err = await waitForCreateAccount(client, 'car-x', {
      timeoutMs: 10_000,
      pollMs: 4_000,
      now: () => t,
      retry: {
        sleep: async (ms) => {
          t += ms;
        },
      },
    }).catch((e: unknown) => e);
    expect((err as TenantryError).retryable).toBe(true);
    expect((err as TenantryError).context).toMatchObject({ requestId: 'car-x', inProgress: true });
    expect(org.commandCalls(DescribeCreateAccountStatusCommand)).toHaveLength(4);
    expect(org.commandCalls(CreateAccountCommand)).toHaveLength(0);
  });
});

describe('listAccounts', () => {
  it('follows NextToken across pages', async () => {
    const account = (id: string) => ({
      Id: id,
      Arn: `arn:aws:organizations::111111111111:account/o-abc123defg/${id}`,
      Email: `root+${id}@tenants.example.com`,
      Name: `acct-${id}`,
      Status: 'ACTIVE' as const,
    });
    org
      .on(ListAccountsCommand, { NextToken: undefined })
      .resolves({ Accounts: [account('111111111111'), account('222222222222')], NextToken: 'page-2' })
      .on(ListAccountsCommand, { NextToken: 'page-2' })
      .resolves({ Accounts: [account('333333333333')], NextToken: 'page-3' })
      .on(ListAccountsCommand, { NextToken: 'page-3' })
      .resolves({ Accounts: [] });
    const accounts = await listAccounts(client);
    expect(accounts.map((a) => a.Id)).toEqual(['111111111111', '222222222222', '333333333333']);
    expect(org.commandCalls(ListAccountsCommand)).toHaveLength(3);
  });
});
