import { Command, Option } from 'commander';
import pc from 'picocolors';
import { ApiClient, ApiError } from '../client.js';
import { loginUrl, profileNameOf, removeProfile, saveProfile } from '../config.js';
import { action } from '../context.js';
import { CliFailure } from '../errors.js';
import { emit, listTable, recordTable, say } from '../output.js';
import { confirmTyped, readSecret } from '../prompt.js';

/** Who may do what: login, tokens, the audit log. */

const ROLES = ['sales-ops', 'sre', 'dataplane', 'admin'];

interface TokenInfo {
  id: string;
  name: string;
  role: string;
  createdAt: string;
  revokedAt: string | null;
}

interface Whoami {
  id: string;
  name: string;
  role: string;
  permissions?: string[];
}

export class LoginRefused extends CliFailure {
  override readonly name = 'LoginRefused';
  constructor(message: string) {
    super('LOGIN_REFUSED', message);
  }
}

const tokenColumns = [
  { header: 'ID', value: (t: TokenInfo) => t.id },
  { header: 'NAME', value: (t: TokenInfo) => t.name },
  { header: 'ROLE', value: (t: TokenInfo) => t.role },
  { header: 'CREATED', value: (t: TokenInfo) => t.createdAt },
  { header: 'REVOKED', value: (t: TokenInfo) => t.revokedAt },
];

export function loginCommands(): Command[] {
  const login = new Command('login')
    .description('store a server URL and token in a profile (file mode 600); the token is read from stdin')
    .option('--url <url>', 'the API (default: TENANTRY_URL, the profile’s, or http://127.0.0.1:3000)')
    .action(
      action(async (ctx, o: { url?: string }) => {
        const name = profileNameOf(ctx.profileName);
        const url = loginUrl(o.url, name);
        // Never an argument: `ps` would show it. Typed without echo on a terminal, or piped in.
        const token = await readSecret(`Token for ${url}: `);
        if (!token) throw new LoginRefused('no token was given on stdin');
        let who: Whoami | null = null;
        try {
          who = await new ApiClient({ url, token }).request<Whoami>('GET', '/v1/whoami');
        } catch (e) {
          // A server without /v1/whoami (an older build) cannot say who the token is; any other refusal stops here.
          if (!(e instanceof ApiError) || e.code !== 'ROUTE_NOT_FOUND') throw e;
        }
        const file = saveProfile(name, { url, token });
        say(
          ctx.out,
          `logged in to ${url}${who ? ` as ${who.name} (${who.role})` : ''}; profile "${name}" saved in ${file}`,
        );
      }),
    );

  const logout = new Command('logout').description('forget the profile’s token').action(
    action(async (ctx) => {
      const name = profileNameOf(ctx.profileName);
      say(ctx.out, removeProfile(name) ? `profile "${name}" removed` : `no profile "${name}"`);
    }),
  );

  const whoami = new Command('whoami').description('who the configured token is: its name and role').action(
    action(async (ctx) => {
      const who = await ctx.client().request<Whoami>('GET', '/v1/whoami');
      emit(ctx.out, who, () =>
        recordTable([
          ['server', ctx.client().baseUrl],
          ['token id', who.id],
          ['name', who.name],
          ['role', who.role],
          ['permissions', who.permissions ?? null],
        ]),
      );
    }),
  );
  return [login, logout, whoami];
}

export function tokensCommand(): Command {
  const cmd = new Command('tokens').description('API tokens (admin)');
  cmd
    .command('create')
    .description('create a token: it is shown once, store it now')
    .requiredOption('--name <name>', 'what it is for')
    .addOption(new Option('--role <role>', 'its role').choices(ROLES).makeOptionMandatory())
    .action(
      action(async (ctx, o: { name: string; role: string }) => {
        const body = await ctx.client().request<{ token: string; info: TokenInfo }>('POST', '/v1/tokens', {
          body: { name: o.name, role: o.role },
        });
        say(ctx.out, pc.yellow('the new token is shown once: store it now'));
        emit(ctx.out, body, () =>
          recordTable([
            ['token', body.token],
            ['id', body.info.id],
            ['name', body.info.name],
            ['role', body.info.role],
          ]),
        );
      }),
    );
  cmd
    .command('list')
    .description('every token (never its value)')
    .action(
      action(async (ctx) => {
        const body = await ctx.client().request<{ items: TokenInfo[] }>('GET', '/v1/tokens');
        emit(ctx.out, body, () => listTable(body.items, tokenColumns, 'no tokens'));
      }),
    );
  cmd
    .command('revoke <id>')
    .description('revoke a token, at once on every API process')
    .option('-y, --yes', 'do not ask to type the token id')
    .action(
      action(async (ctx, id: string, o: { yes?: boolean }) => {
        if (!o.yes) await confirmTyped(`This revokes token ${id}: whatever uses it stops working.`, id);
        const info = await ctx.client().request<TokenInfo>('DELETE', `/v1/tokens/${id}`);
        emit(ctx.out, info, () => listTable([info], tokenColumns));
      }),
    );
  return cmd;
}

interface AuditRecord {
  id: number;
  at: string;
  actorName: string | null;
  role: string | null;
  action: string;
  tenantSlug: string | null;
  operationId: string | null;
  requestId: string | null;
  details: Record<string, unknown>;
}

export function auditCommand(): Command {
  return new Command('audit')
    .description('the append-only audit log, oldest first')
    .option('--tenant <slug>', "the current tenant with this slug's trail")
    .option('--tenant-id <uuid>', "a tenant's trail by id (an offboarded one's too)")
    .option('--limit <n>', 'how many (1-1000)', '100')
    .option('--after <id>', 'records after this id (the next page: the last id shown)')
    .action(
      action(async (ctx, o: { tenant?: string; tenantId?: string; limit: string; after?: string }) => {
        const body = await ctx.client().request<{ items: AuditRecord[] }>('GET', '/v1/audit', {
          query: { tenant: o.tenant, tenantId: o.tenantId, limit: o.limit, after: o.after },
        });
        emit(ctx.out, body, () =>
          listTable(
            body.items,
            [
              { header: 'ID', value: (a) => a.id },
              { header: 'AT', value: (a) => a.at },
              { header: 'ACTOR', value: (a) => a.actorName },
              { header: 'ROLE', value: (a) => a.role },
              { header: 'ACTION', value: (a) => a.action },
              { header: 'TENANT', value: (a) => a.tenantSlug },
              { header: 'OPERATION', value: (a) => a.operationId },
              { header: 'DETAILS', value: (a) => (Object.keys(a.details).length ? a.details : null) },
            ],
            'no audit records',
          ),
        );
      }),
    );
}
