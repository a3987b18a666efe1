/**
 * Organizations helpers where the AWS API emulator (tests/aws/sdk.test.ts runs the rest on moto)
 * cannot show what AWS does: moto never throttles and never answers ConcurrentModificationException.
 */
import {
  ConcurrentModificationException,
  ListAccountsCommand,
  OrganizationsClient,
  TooManyRequestsException,
} from '@aws-sdk/client-organizations';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { isRetryableOrganizationsError, listAccounts } from '../../../control-plane/src/aws/organizations.js';
import { withRetry } from '../../../control-plane/src/aws/retry.js';

const org = mockClient(OrganizationsClient);
const client = new OrganizationsClient({ region: 'us-east-1' });
const meta = { $metadata: { httpStatusCode: 400, requestId: 'req-1' } };

afterEach(() => org.reset());

describe('Organizations retries (moto never throttles nor reports a concurrent modification)', () => {
  it('retries ConcurrentModificationException and throttling, and answers once AWS does', async () => {
    org
      .on(ListAccountsCommand)
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
      .resolves({ Accounts: [{ Id: '123456789012', State: 'ACTIVE' }] });
    const accounts = await listAccounts(client);
    expect(accounts.map((a) => a.Id)).toEqual(['123456789012']);
    expect(org.commandCalls(ListAccountsCommand)).toHaveLength(3);
  });

  it('backs off with jittered, growing delays, and gives up after the attempt budget', async () => {
    const delays: number[] = [];
    org.on(ListAccountsCommand).rejects(new TooManyRequestsException({ message: 'slow down', ...meta }));
    await expect(
      withRetry(() => client.send(new ListAccountsCommand({})), {
        isRetryable: isRetryableOrganizationsError,
        maxAttempts: 3,
        sleep: async (ms) => void delays.push(ms),
        random: () => 0.999,
        baseDelayMs: 100,
        maxDelayMs: 10_000,
      }),
    ).rejects.toThrow('slow down');
    expect(org.commandCalls(ListAccountsCommand)).toHaveLength(3);
    expect(delays).toEqual([99, 199]);
  });
});
