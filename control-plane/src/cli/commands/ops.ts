import { Command, Option } from 'commander';
import type { Operation } from '../../domain/tenant.js';
import { action, collect, collectOneOf } from '../context.js';
import { emit, emitPage, say } from '../output.js';
import { operationColumns, operationTable } from '../views.js';
import { follow } from '../wait.js';
import { type Accepted, accepted, pages } from './tenants.js';

const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];

export function opsCommand(): Command {
  const cmd = new Command('ops').description('operations: list, read, follow live, resume');

  cmd
    .command('list')
    .description('operations, newest first (one page unless --all)')
    .option('--tenant <slug>', "only this tenant's")
    // Kinds grow with the server (a bad one is refused there, naming the allowed ones).
    .option(
      '--kind <kind>',
      'only this kind: onboard, offboard, promote, reconcile, … (repeat for several)',
      collect,
    )
    .addOption(
      new Option('--status <status>', 'only this status (repeat for several)')
        .choices(STATUSES)
        .argParser(collectOneOf(STATUSES)),
    )
    .option('--limit <n>', 'page size (1-200)', '50')
    .option('--cursor <cursor>', 'the nextCursor of the previous page')
    .option('--all', 'follow nextCursor to the last page')
    .action(
      action(
        async (
          ctx,
          o: {
            tenant?: string;
            kind?: string[];
            status?: string[];
            limit: string;
            cursor?: string;
            all?: boolean;
          },
        ) => {
          const page = await pages<Operation>(
            ctx.client(),
            '/v1/operations',
            { tenant: o.tenant, kind: o.kind, status: o.status, limit: o.limit, cursor: o.cursor },
            Boolean(o.all),
          );
          emitPage(ctx.out, page, operationColumns, 'no operations');
        },
      ),
    );

  cmd
    .command('get <id>')
    .description('an operation and its steps')
    .action(
      action(async (ctx, id: string) => {
        const op = await ctx.client().request<Operation>('GET', `/v1/operations/${id}`);
        emit(ctx.out, op, () => operationTable(op));
      }),
    );

  cmd
    .command('watch <id>')
    .description('follow an operation live until it ends; exit non-zero if it fails')
    .action(
      action(async (ctx, id: string) => {
        const op = await follow(ctx.client(), id, ctx.out);
        emit(ctx.out, op, () => operationTable(op));
      }),
    );

  cmd
    .command('resume <id>')
    .description('queue a failed operation again from its failed step (where it was not undone)')
    .addOption(new Option('--wait', 'follow it live until it ends'))
    .action(
      action(async (ctx, id: string, o: { wait?: boolean }) => {
        const body = await ctx.client().request<Accepted>('POST', `/v1/operations/${id}/resume`);
        if (!o.wait) say(ctx.out, `resumed from its failed step`);
        await accepted(ctx, body, Boolean(o.wait));
      }),
    );

  return cmd;
}
