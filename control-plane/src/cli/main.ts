import fs from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import pc from 'picocolors';
import { ApiError, NetworkError } from './client.js';
import { auditCommand, loginCommands, tokensCommand } from './commands/access.js';
import { credentialsCommand, keysCommand } from './commands/credentials.js';
import { driftCommand } from './commands/drift.js';
import { opsCommand } from './commands/ops.js';
import { promoteCommand, rollbackCommand } from './commands/promotions.js';
import { rolloutsCommand } from './commands/rollouts.js';
import { tenantsCommand } from './commands/tenants.js';
import { ConfigError } from './config.js';
import { type GlobalOptions, UsageError } from './context.js';
import { CliFailure } from './errors.js';
import { emit, FORMATS, type Format, processOut, say } from './output.js';
import { operationTable } from './views.js';
import { OperationFailed } from './wait.js';

/**
 * `tenantry`: the operator's command line, an HTTP client of the public API (it imports nothing
 * from the server but shared types). Data on stdout (a table, or `-o json` / `-o yaml`: the API's
 * own objects), diagnostics on stderr. Exit codes: 0 it worked; 1 the API refused the request, the
 * operation waited on failed, or a confirmation was not given; 2 bad usage or no configuration.
 */

export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

const version = (): string => {
  const pkg = path.resolve(import.meta.dirname, '../../../package.json');
  return (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { version: string }).version;
};

export function program(): Command {
  const root = new Command('tenantry')
    .description(
      'Tenantry from the command line: tenants, promotions, operations, rotations, rollouts, drift, tokens, audit',
    )
    .version(version())
    .addOption(new Option('-o, --output <format>', 'table, json or yaml').choices(FORMATS).default('table'))
    .option('--profile <name>', 'the profile `tenantry login` wrote (default: TENANTRY_PROFILE or "default")')
    .showHelpAfterError()
    .exitOverride();
  for (const c of [
    tenantsCommand(),
    promoteCommand(),
    rollbackCommand(),
    opsCommand(),
    credentialsCommand(),
    keysCommand(),
    rolloutsCommand(),
    driftCommand(),
    tokensCommand(),
    auditCommand(),
    ...loginCommands(),
  ]) {
    root.addCommand(c);
  }
  // Every subcommand reports its usage errors through the root's exit handling below.
  const exitOverride = (c: Command) => {
    c.exitOverride();
    for (const sub of c.commands) exitOverride(sub);
  };
  exitOverride(root);
  return root;
}

/** Prints an error the way scripts and people both read it, and says which exit code it means. */
export function report(e: unknown, format: Format): number {
  const out = processOut(format);
  if (e instanceof CommanderError) {
    // commander already printed its message (or the help / version asked for)
    return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
  }
  if (e instanceof ApiError || e instanceof CliFailure) {
    // A failed operation is shown first, as the API has it (its steps, the failed one's error).
    if (e instanceof OperationFailed) emit(out, e.operation, () => operationTable(e.operation));
    const api = e instanceof ApiError ? { requestId: e.requestId } : {};
    if (format === 'table') {
      say(out, `${pc.red('error')} ${e.code}: ${e.message}`);
      if (api.requestId) say(out, pc.dim(`request id: ${api.requestId}`));
    } else {
      say(out, JSON.stringify({ error: { code: e.code, message: e.message, ...api } }));
    }
    return EXIT.failed;
  }
  if (e instanceof ConfigError || e instanceof UsageError) {
    say(out, `${pc.red('error')} ${e.message}`);
    return EXIT.usage;
  }
  if (e instanceof NetworkError || e instanceof Error) {
    say(out, `${pc.red('error')} ${e.message}`);
    return EXIT.failed;
  }
  say(out, `${pc.red('error')} ${String(e)}`);
  return EXIT.failed;
}

export async function main(argv: string[]): Promise<number> {
  const root = program();
  try {
    await root.parseAsync(argv);
    return EXIT.ok;
  } catch (e) {
    const format = (root.opts<GlobalOptions>().output ?? 'table') as Format;
    return report(e, FORMATS.includes(format) ? format : 'table');
  }
}

process.exitCode = await main(process.argv);
