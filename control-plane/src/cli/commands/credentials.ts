import { Command, Option } from 'commander';
import { action, UsageError } from '../context.js';
import { type Accepted, accepted } from './tenants.js';

/** Rotation of a tenant's database password and of its data key (routes/credentials.ts). */

const wait = () => new Option('--wait', 'follow the operation live until it ends; exit non-zero if it fails');

export function credentialsCommand(): Command {
  const cmd = new Command('credentials').description("rotate a tenant's database password");
  cmd
    .command('rotate <slug>')
    .description(
      'a new password on the idle login; the old one keeps working for the grace period (a pool tenant rotates the pool login)',
    )
    .option('--grace <seconds>', "how long the old login keeps working (default: the tier's)")
    .addOption(wait())
    .action(
      action(async (ctx, slug: string, o: { grace?: string; wait?: boolean }) => {
        let graceSeconds: number | undefined;
        if (o.grace !== undefined) {
          graceSeconds = Number(o.grace);
          if (!Number.isInteger(graceSeconds) || graceSeconds < 1)
            throw new UsageError(`--grace ${o.grace}: expected a whole number of seconds`);
        }
        const body = await ctx
          .client()
          .request<Accepted>('POST', `/v1/tenants/${slug}/credential-rotations`, {
            body: graceSeconds === undefined ? {} : { graceSeconds },
          });
        await accepted(ctx, body, Boolean(o.wait));
      }),
    );
  return cmd;
}

export function keysCommand(): Command {
  const cmd = new Command('keys').description("rotate a tenant's data key");
  cmd
    .command('rotate <slug>')
    .description('a new data key; every version of its secrets re-encrypted under it, the old key destroyed')
    .addOption(wait())
    .action(
      action(async (ctx, slug: string, o: { wait?: boolean }) => {
        const body = await ctx.client().request<Accepted>('POST', `/v1/tenants/${slug}/key-rotations`);
        await accepted(ctx, body, Boolean(o.wait));
      }),
    );
  return cmd;
}
