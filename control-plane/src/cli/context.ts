import { type Command, InvalidArgumentError } from 'commander';
import { ApiClient } from './client.js';
import { resolveProfile } from './config.js';
import { type Format, type Out, processOut } from './output.js';

/** What every command's action gets: where to print, and a client for the configured server. */
export interface Ctx {
  out: Out;
  /** The API client, configured on first use (so `login` and `--help` need no profile). */
  client(): ApiClient;
  profileName: string | undefined;
}

export interface GlobalOptions {
  output: Format;
  profile?: string;
}

export function contextOf(cmd: Command): Ctx {
  const g = cmd.optsWithGlobals<GlobalOptions>();
  let client: ApiClient | undefined;
  return {
    out: processOut(g.output),
    profileName: g.profile,
    client: () => {
      client ??= new ApiClient(resolveProfile(g.profile));
      return client;
    },
  };
}

/**
 * A command's action with its context: the positional arguments and options as commander parsed
 * them, the context last. Errors propagate to main.ts, which prints them and sets the exit code.
 */
export function action<A extends unknown[]>(
  fn: (ctx: Ctx, ...args: A) => Promise<void>,
): (...args: unknown[]) => Promise<void> {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    await fn(contextOf(cmd), ...(args.slice(0, -1) as A));
  };
}

/** Collects a repeatable option's values (`--kind a --kind b`). */
export const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Collects a repeatable option's values, each one of `choices` (commander's own check stops at one). */
export const collectOneOf =
  (choices: readonly string[]) =>
  (value: string, previous: string[] = []) => {
    if (!choices.includes(value))
      throw new InvalidArgumentError(`Allowed choices are ${choices.join(', ')}.`);
    return [...previous, value];
  };

/** A usage error found after parsing (an option's value, or none given): exit 2, with its message. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}
