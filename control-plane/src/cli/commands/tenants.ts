import { Command, Option } from 'commander';
import pc from 'picocolors';
import type { Operation, Tenant, TenantDetail } from '../../domain/tenant.js';
import type { ApiClient, Query } from '../client.js';
import { action, type Ctx } from '../context.js';
import { emit, emitPage, recordTable, say } from '../output.js';
import { confirmTyped } from '../prompt.js';
import { acceptedTable, tenantColumns, tenantTable } from '../views.js';
import { follow } from '../wait.js';

export const TIERS = ['pool', 'bridge', 'silo', 'account'];
const STATUSES = ['provisioning', 'active', 'failed', 'offboarding', 'offboarded'];

export interface Accepted {
  tenant: Tenant;
  operation: Operation;
}

interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** One page, or every page from `cursor` on when `all` (the result is then one page with no next). */
export async function pages<T>(
  client: ApiClient,
  path: string,
  query: Query,
  all: boolean,
): Promise<Page<T>> {
  const first = await client.request<Page<T>>('GET', path, { query });
  if (!all) return first;
  const items = [...first.items];
  let cursor = first.nextCursor;
  while (cursor) {
    const next = await client.request<Page<T>>('GET', path, { query: { ...query, cursor } });
    items.push(...next.items);
    cursor = next.nextCursor;
  }
  return { items, nextCursor: null };
}

/**
 * An accepted operation: printed as accepted, or with `--wait` followed to its end and printed as it
 * ended (the tenant read again then, unless it is gone).
 */
export async function accepted(ctx: Ctx, body: Accepted, wait: boolean): Promise<void> {
  const { out } = ctx;
  if (!wait) {
    say(
      out,
      `accepted: operation ${body.operation.id} (${body.operation.kind}); follow it with: tenantry ops watch ${body.operation.id}`,
    );
    emit(out, body, () => acceptedTable(body));
    return;
  }
  say(out, `operation ${body.operation.id} (${body.operation.kind} ${body.tenant.slug}):`);
  const operation = await follow(ctx.client(), body.operation.id, out);
  const tenant = await ctx.client().request<Tenant>('GET', `/v1/tenants/${body.tenant.slug}`);
  const done = { tenant, operation };
  emit(out, done, () => acceptedTable(done));
}

const wait = new Option('--wait', 'follow the operation live until it ends; exit non-zero if it fails');

export function tenantsCommand(): Command {
  const cmd = new Command('tenants').description('onboard, list, read and offboard tenants');

  cmd
    .command('list')
    .description('list tenants (oldest first, one page unless --all)')
    .addOption(new Option('--tier <tier>', 'only this tier').choices(TIERS))
    .addOption(new Option('--status <status>', 'only this status').choices(STATUSES))
    .option('--limit <n>', 'page size (1-500)', '50')
    .option('--cursor <cursor>', 'the nextCursor of the previous page')
    .option('--all', 'follow nextCursor to the last page')
    .action(
      action(
        async (ctx, o: { tier?: string; status?: string; limit: string; cursor?: string; all?: boolean }) => {
          const page = await pages<Tenant>(
            ctx.client(),
            '/v1/tenants',
            { tier: o.tier, status: o.status, limit: o.limit, cursor: o.cursor },
            Boolean(o.all),
          );
          emitPage(ctx.out, page, tenantColumns, 'no tenants');
        },
      ),
    );

  cmd
    .command('get <slug>')
    .description('one tenant, with its operation in flight and its latest promotion')
    .action(
      action(async (ctx, slug: string) => {
        const t = await ctx.client().request<TenantDetail>('GET', `/v1/tenants/${slug}`);
        emit(ctx.out, t, () => tenantTable(t));
      }),
    );

  cmd
    .command('create <slug>')
    .description('onboard a tenant')
    .addOption(new Option('--tier <tier>', 'isolation tier').choices(TIERS).makeOptionMandatory())
    .option('--name <name>', 'display name (default: the slug)')
    .option('--region <region>', 'e.g. eu-west-1')
    .option('--plan <plan>', 'billing plan')
    .option('--contact-email <email>', 'contact address')
    .option('--idempotency-key <key>', 'replays the first response when the same request is sent again')
    .addOption(wait)
    .action(
      action(
        async (
          ctx,
          slug: string,
          o: {
            tier: string;
            name?: string;
            region?: string;
            plan?: string;
            contactEmail?: string;
            idempotencyKey?: string;
            wait?: boolean;
          },
        ) => {
          const body = await ctx.client().request<Accepted>('POST', '/v1/tenants', {
            body: {
              slug,
              name: o.name ?? slug,
              tier: o.tier,
              ...(o.region ? { region: o.region } : {}),
              ...(o.plan ? { plan: o.plan } : {}),
              ...(o.contactEmail ? { contactEmail: o.contactEmail } : {}),
            },
            ...(o.idempotencyKey ? { headers: { 'idempotency-key': o.idempotencyKey } } : {}),
          });
          await accepted(ctx, body, Boolean(o.wait));
        },
      ),
    );

  cmd
    .command('delete <slug>')
    .description('offboard a tenant: removes its data, role and key; keeps its audit trail')
    .option('-y, --yes', 'do not ask to type the slug')
    .addOption(wait)
    .action(
      action(async (ctx, slug: string, o: { yes?: boolean; wait?: boolean }) => {
        if (!o.yes) await confirmTyped(`This offboards tenant ${slug} and deletes its data.`, slug);
        const body = await ctx.client().request<Accepted>('DELETE', `/v1/tenants/${slug}`, {
          headers: { confirm: slug },
        });
        await accepted(ctx, body, Boolean(o.wait));
      }),
    );

  cmd
    .command('connection <slug>')
    .description("the tenant's data-plane connection descriptor (audited; the table hides the password)")
    .action(
      action(async (ctx, slug: string) => {
        const d = await ctx
          .client()
          .request<Record<string, unknown>>('GET', `/v1/tenants/${slug}/connection`);
        emit(ctx.out, d, () =>
          recordTable(
            Object.entries(d).map(([k, v]) => [
              k,
              k === 'password' ? pc.dim('(hidden: -o json or -o yaml shows it)') : v,
            ]),
          ),
        );
      }),
    );

  return cmd;
}
