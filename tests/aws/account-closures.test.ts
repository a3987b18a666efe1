/**
 * The account tier's closure queue (aws/closures.ts) and the stack settings store (db/aws.ts), on the
 * control database (real Postgres) and the AWS API emulator's Organizations. Moto has no CloseAccount
 * quota (docs/aws.md): the queue's own count is what keeps within it, and that is what is shown.
 */
import {
  CreateAccountCommand,
  CreateOrganizationCommand,
  DescribeAccountCommand,
  DescribeCreateAccountStatusCommand,
  OrganizationsClient,
} from '@aws-sdk/client-organizations';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AccountClosureQueue, closeAccountQuota } from '../../control-plane/src/aws/closures.js';
import { accountState } from '../../control-plane/src/aws/organizations.js';
import { getStackSettings, queuedClosures, saveStackSettings } from '../../control-plane/src/db/aws.js';
import { Db } from '../../control-plane/src/db/db.js';
import { adminUrl, dropDatabases, rand, superQuery } from '../helpers/runtime.js';
import { skipReason, useMoto } from './helpers/moto.js';

useMoto();
const orgs = () => new OrganizationsClient({ region: 'us-east-1' });
const controlDb = `cp_closures_${rand()}`;
let db: Db;

beforeAll(async () => {
  await superQuery('postgres', `CREATE DATABASE ${controlDb} TEMPLATE ${inject('templateDb')}`);
  db = new Db(adminUrl(controlDb), 4);
});
afterAll(async () => {
  await db?.close();
  await dropDatabases([controlDb]);
});

async function vend(n: number): Promise<string[]> {
  await orgs().send(new CreateOrganizationCommand({ FeatureSet: 'ALL' }));
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const c = await orgs().send(
      new CreateAccountCommand({
        Email: `root+c${i}-${rand(3)}@tenants.example.com`,
        AccountName: `c${i}`,
        RoleName: 'OrganizationAccountAccessRole',
      }),
    );
    const s = await orgs().send(
      new DescribeCreateAccountStatusCommand({ CreateAccountRequestId: c.CreateAccountStatus?.Id }),
    );
    ids.push(String(s.CreateAccountStatus?.AccountId));
  }
  return ids;
}

const tenantOf = (i: number) => ({
  id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  slug: `acct-${i}`,
  tier: 'account' as const,
  templateVersion: 1,
});

describe('the CloseAccount quota', () => {
  it('is 10% of the member accounts per 30 days, at least 10 and at most 1,000', () => {
    expect(closeAccountQuota(0)).toBe(10);
    expect(closeAccountQuota(99)).toBe(10);
    expect(closeAccountQuota(250)).toBe(25);
    expect(closeAccountQuota(50_000)).toBe(1000);
  });
});

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `the account closure queue${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    it('requests closures within the quota, oldest first, audited, and the rest when the window has moved on', async () => {
      const ids = await vend(12);
      let now = new Date('2030-01-01T00:00:00Z');
      const queue = new AccountClosureQueue(db, orgs(), pino({ level: 'silent' }), () => now);
      for (const [i, id] of ids.entries()) await queue.enqueue(tenantOf(i), id, `op_${i}`);
      await queue.enqueue(tenantOf(0), ids[0] as string, 'op_again'); // a repeated step queues nothing new
      expect(await queuedClosures(db)).toBe(12);

      // 13 members (the management account and 12): the minimum quota, 10.
      const first = await queue.drain();
      expect(first).toMatchObject({ quota: 10, recent: 0 });
      expect(first?.requested).toEqual(ids.slice(0, 10));
      for (const id of ids.slice(0, 10)) {
        const a = await orgs().send(new DescribeAccountCommand({ AccountId: id }));
        expect(accountState(a.Account ?? {})).not.toBe('ACTIVE');
      }
      const open = await orgs().send(new DescribeAccountCommand({ AccountId: ids[10] }));
      expect(accountState(open.Account ?? {})).toBe('ACTIVE');

      // Later the same month: the quota is used up.
      now = new Date('2030-01-20T00:00:00Z');
      expect((await queue.drain())?.requested).toEqual([]);
      // Thirty days after the first requests: the rest.
      now = new Date('2030-02-01T00:00:00Z');
      expect((await queue.drain())?.requested).toEqual(ids.slice(10));
      expect(await queuedClosures(db)).toBe(0);

      const audit = await db.query<{ action: string; n: number }>(
        `SELECT action, count(*)::int AS n FROM audit_log WHERE action LIKE 'account.closure.%' GROUP BY action ORDER BY action`,
      );
      expect(audit.rows).toEqual([
        { action: 'account.closure.queued', n: 12 },
        { action: 'account.closure.requested', n: 12 },
      ]);
    });
  },
);

describe('the stack settings store', () => {
  it('keeps each stack’s secrets provider and key, replaced whole', async () => {
    expect(await getStackSettings(db, 'tenant-none')).toBeNull();
    const kms = {
      secretsProvider: 'awskms://alias/tenantry-state?region=eu-west-1',
      encryptedKey: 'AQICAHh…',
    };
    await saveStackSettings(db, 'tenant-acme', kms);
    expect(await getStackSettings(db, 'tenant-acme')).toEqual(kms);
    await saveStackSettings(db, 'tenant-acme', { secretsProvider: 'passphrase', encryptionSalt: 'v1:abc' });
    expect(await getStackSettings(db, 'tenant-acme')).toEqual({
      secretsProvider: 'passphrase',
      encryptionSalt: 'v1:abc',
    });
  });
});
