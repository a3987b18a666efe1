import { Command, Option } from 'commander';
import type { TenantDetail } from '../../domain/tenant.js';
import { action } from '../context.js';
import { CliFailure } from '../errors.js';
import { confirmTyped } from '../prompt.js';
import { type Accepted, accepted, TIERS } from './tenants.js';

export class NothingToRollBack extends CliFailure {
  override readonly name = 'NothingToRollBack';
  constructor(message: string) {
    super('NOTHING_TO_ROLL_BACK', message);
  }
}

const wait = () =>
  new Option('--wait', 'follow the operation live (steps, rows copied, lag, freeze, rollback deadline)');

export function promoteCommand(): Command {
  return new Command('promote')
    .description('move a tenant online to a stronger tier (pool→bridge, pool→silo, bridge→silo)')
    .argument('<slug>')
    .addOption(new Option('--to <tier>', 'the target tier').choices(TIERS).makeOptionMandatory())
    .option('-y, --yes', 'do not ask to type the slug')
    .addOption(wait())
    .action(
      action(async (ctx, slug: string, o: { to: string; yes?: boolean; wait?: boolean }) => {
        if (!o.yes) {
          await confirmTyped(
            `This promotes tenant ${slug} to ${o.to}: its rows move online, and its writes freeze briefly at the cutover.`,
            slug,
          );
        }
        const body = await ctx.client().request<Accepted>('POST', `/v1/tenants/${slug}/promotions`, {
          body: { targetTier: o.to },
        });
        await accepted(ctx, body, Boolean(o.wait));
      }),
    );
}

export function rollbackCommand(): Command {
  return new Command('rollback')
    .description('within its rollback window, move a tenant back to where a promotion took it from')
    .argument('<slug>')
    .argument('[operationId]', "the promotion to roll back (default: the tenant's latest)")
    .option('-y, --yes', 'do not ask to type the slug')
    .addOption(wait())
    .action(
      action(
        async (ctx, slug: string, operationId: string | undefined, o: { yes?: boolean; wait?: boolean }) => {
          let id = operationId;
          if (!id) {
            const t = await ctx.client().request<TenantDetail>('GET', `/v1/tenants/${slug}`);
            if (!t.promotion)
              throw new NothingToRollBack(`tenant ${slug} has no completed promotion to roll back`);
            id = t.promotion.operationId;
          }
          if (!o.yes) {
            await confirmTyped(
              `This rolls tenant ${slug} back from promotion ${id}, with the rows written since.`,
              slug,
            );
          }
          const body = await ctx
            .client()
            .request<Accepted>('POST', `/v1/tenants/${slug}/promotions/${id}/rollback`);
          await accepted(ctx, body, Boolean(o.wait));
        },
      ),
    );
}
