import { Command, Option } from 'commander';
import pc from 'picocolors';
import type { Operation, Tenant, TenantDetail } from '../../domain/tenant.js';
import type { ApiClient, Query } from '../client.js';
import { action, type Ctx, collect, UsageError } from '../context.js';
import { emit, emitPage, recordTable, say, status } from '../output.js';
import { confirmTyped } from '../prompt.js';
import { acceptedTable, tenantColumns, tenantTable } from '../views.js';
import { bytes, follow } from '../wait.js';

export const TIERS = ['pool', 'bridge', 'silo', 'account'];
const STATUSES = ['provisioning', 'active', 'failed', 'offboarding', 'offboarded'];
const SUSPENSION_REASONS = ['non-payment', 'abuse', 'security', 'requested', 'other'];

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

  cmd
    .command('update <slug>')
    .description("change a tenant's name, plan, contact or labels (sent with If-Match from a fresh read)")
    .option('--name <name>', 'display name')
    .option('--plan <plan>', 'billing plan ("" removes it)')
    .option('--contact-email <email>', 'contact address ("" removes it)')
    .option('--label <key=value>', 'set a label (repeat for several)', collect)
    .option('--remove-label <key>', 'remove a label (repeat for several)', collect)
    .action(
      action(
        async (
          ctx,
          slug: string,
          o: {
            name?: string;
            plan?: string;
            contactEmail?: string;
            label?: string[];
            removeLabel?: string[];
          },
        ) => {
          const labels: Record<string, string | null> = {};
          for (const l of o.label ?? []) {
            const eq = l.indexOf('=');
            if (eq <= 0) throw new UsageError(`--label ${l}: expected key=value`);
            labels[l.slice(0, eq)] = l.slice(eq + 1);
          }
          for (const k of o.removeLabel ?? []) labels[k] = null;
          const patch = {
            ...(o.name !== undefined ? { name: o.name } : {}),
            ...(o.plan !== undefined ? { plan: o.plan === '' ? null : o.plan } : {}),
            ...(o.contactEmail !== undefined
              ? { contactEmail: o.contactEmail === '' ? null : o.contactEmail }
              : {}),
            ...(Object.keys(labels).length > 0 ? { labels } : {}),
          };
          if (Object.keys(patch).length === 0)
            throw new UsageError(
              'nothing to change: give --name, --plan, --contact-email, --label or --remove-label',
            );
          const client = ctx.client();
          const read = await client.requestWithHeaders<TenantDetail>('GET', `/v1/tenants/${slug}`);
          const etag = read.headers.get('etag') ?? `"${read.body.version}"`;
          const body = await client.request<{ tenant: Tenant; operation: Operation | null }>(
            'PATCH',
            `/v1/tenants/${slug}`,
            { body: patch, headers: { 'if-match': etag } },
          );
          emit(ctx.out, body, () => tenantTable(body.tenant));
        },
      ),
    );

  cmd
    .command('suspend <slug>')
    .description('suspend a tenant: it keeps its rows; the data plane cannot use it until reactivated')
    .addOption(new Option('--reason <reason>', 'why').choices(SUSPENSION_REASONS).makeOptionMandatory())
    .option('--note <text>', 'free text for the audit log and the event')
    .option('-y, --yes', 'do not ask to type the slug')
    .addOption(wait)
    .action(
      action(
        async (ctx, slug: string, o: { reason: string; note?: string; yes?: boolean; wait?: boolean }) => {
          if (!o.yes)
            await confirmTyped(
              `This suspends tenant ${slug} (${o.reason}): its logins are cut off and its sessions ended.`,
              slug,
            );
          const body = await ctx.client().request<Accepted>('POST', `/v1/tenants/${slug}/suspension`, {
            body: { reason: o.reason, ...(o.note !== undefined ? { note: o.note } : {}) },
          });
          await accepted(ctx, body, Boolean(o.wait));
        },
      ),
    );

  cmd
    .command('reactivate <slug>')
    .description('reactivate a suspended tenant')
    .addOption(wait)
    .action(
      action(async (ctx, slug: string, o: { wait?: boolean }) => {
        const body = await ctx.client().request<Accepted>('DELETE', `/v1/tenants/${slug}/suspension`);
        await accepted(ctx, body, Boolean(o.wait));
      }),
    );

  cmd
    .command('export <slug>')
    .description("export a tenant's data to one archive (and download it with --download)")
    .addOption(wait)
    .option('--download <file>', 'wait for the archive, then stream it to this file')
    .action(
      action(async (ctx, slug: string, o: { wait?: boolean; download?: string }) => {
        const { out } = ctx;
        const client = ctx.client();
        const started = await client.request<Accepted & { export: ExportView }>(
          'POST',
          `/v1/tenants/${slug}/exports`,
        );
        if (!o.wait && !o.download) {
          say(
            out,
            `accepted: export ${started.export.id}, operation ${started.operation.id}; follow it with: tenantry ops watch ${started.operation.id}`,
          );
          emit(out, started, () => exportTable(started.export));
          return;
        }
        say(out, `operation ${started.operation.id} (export ${slug}):`);
        await follow(client, started.operation.id, out);
        const exp = await client.request<ExportView>('GET', `/v1/exports/${started.export.id}`);
        if (o.download) {
          const got = await client.download(`/v1/exports/${exp.id}/download`, o.download);
          say(
            out,
            `downloaded ${bytes(got.bytes)} to ${o.download} (sha256 ${got.headers.get('x-content-sha256')})`,
          );
        }
        emit(out, exp, () => exportTable(exp));
      }),
    );

  return cmd;
}

/** An export as GET /v1/exports/{id} answers it. */
export interface ExportView {
  id: string;
  tenantSlug: string;
  tier: string;
  operationId: string;
  status: string;
  final: boolean;
  bytes: number | null;
  sha256: string | null;
  manifest: { schemaVersion: number; tables: { name: string; rows: number }[] } | null;
  error: string | null;
  createdAt: string;
  readyAt: string | null;
  expiresAt: string;
}

const exportTable = (e: ExportView) =>
  recordTable([
    ['export', e.id],
    ['tenant', e.tenantSlug],
    ['status', status(e.status)],
    ['operation', e.operationId],
    ['bytes', e.bytes],
    ['sha256', e.sha256],
    ['schema version', e.manifest?.schemaVersion],
    ['tables', e.manifest?.tables.map((t) => `${t.name} ${t.rows}`)],
    ['error', e.error],
    ['ready', e.readyAt],
    ['expires', e.expiresAt],
  ]);
