import type { OrganizationsClient } from '@aws-sdk/client-organizations';
import type { Logger } from 'pino';
import {
  closuresRequestedSince,
  markClosureRequested,
  type QueuedClosure,
  queueAccountClosure,
  takeQueuedClosures,
} from '../db/aws.js';
import type { Db } from '../db/db.js';
import type { StepTenant } from '../domain/ports.js';
import { accountState, closeAccount, listAccounts } from './organizations.js';

/** The graphile-worker task that requests queued closures (hourly, at :17). */
export const ACCOUNT_CLOSURES_TASK = 'aws-account-closures';
export const ACCOUNT_CLOSURES_CRON = `17 * * * * ${ACCOUNT_CLOSURES_TASK} ?jobKey=aws-account-closures&jobKeyMode=preserve_run_at&max=1\n`;

const WINDOW_MS = 30 * 24 * 3600_000;

/**
 * Organizations' CloseAccount quota: 10% of the member accounts per rolling 30 days, at least 10 and
 * at most 1,000 (closed accounts count among the members, and their closures in the window, for 90 days).
 */
export function closeAccountQuota(memberAccounts: number): number {
  return Math.min(1000, Math.max(10, Math.floor(memberAccounts / 10)));
}

/**
 * The account tier's closures. Offboarding never closes an account itself (its stack keeps the account
 * out of the destroy): it queues the closure, in the transaction that audits it, and `drain` requests
 * the oldest queued closures as far as the quota allows, each request recorded and audited. What the
 * quota does not allow waits for a later drain. One drainer at a time (a session lock); a drainer
 * killed between CloseAccount and its record sends CloseAccount again next time, which is harmless
 * (an account already closing is done).
 */
export class AccountClosureQueue {
  constructor(
    private readonly db: Db,
    private readonly organizations: OrganizationsClient,
    private readonly log: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async enqueue(tenant: StepTenant, accountId: string, operationId: string): Promise<void> {
    await this.db.tx((q) =>
      queueAccountClosure(q, { accountId, tenantId: tenant.id, tenantSlug: tenant.slug, operationId }),
    );
  }

  /** Requests what the quota allows now; returns the accounts requested and how many still wait. */
  async drain(): Promise<{ requested: string[]; quota: number; recent: number } | undefined> {
    return this.db.withSessionLock('tenantry:aws-account-closures', async () => {
      const members = (await listAccounts(this.organizations)).filter(
        (a) => accountState(a) !== 'CLOSED',
      ).length;
      const quota = closeAccountQuota(members);
      const now = this.now();
      const recent = await closuresRequestedSince(this.db, new Date(now.getTime() - WINDOW_MS));
      const requested: string[] = [];
      for (let room = quota - recent; room > 0; room--) {
        const sent = await this.db.tx(async (q) => {
          const [next] = await takeQueuedClosures(q, 1);
          if (!next) return null;
          await this.close(next);
          await markClosureRequested(q, next, now);
          return next.accountId;
        });
        if (!sent) break;
        requested.push(sent);
      }
      this.log.info({ requested: requested.length, quota, recent }, 'account closures requested');
      return { requested, quota, recent };
    });
  }

  private async close(c: QueuedClosure): Promise<void> {
    this.log.info({ tenantId: c.tenantId, accountId: c.accountId }, 'closing account');
    await closeAccount(this.organizations, c.accountId);
  }
}
