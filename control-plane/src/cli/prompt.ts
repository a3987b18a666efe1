import readline from 'node:readline/promises';
import { Writable } from 'node:stream';
import { CliFailure } from './errors.js';

/**
 * Reading from the person at the terminal (or a pipe): a typed confirmation for destructive
 * commands, and the token for `login`, which never comes from the command line.
 */

export class Aborted extends CliFailure {
  override readonly name = 'Aborted';
  constructor(message: string) {
    super('ABORTED', message);
  }
}

/** One line from stdin after a prompt on stderr; null when stdin ends first. */
async function ask(question: string, input: NodeJS.ReadableStream, muted = false): Promise<string | null> {
  const echo = process.stderr;
  let mute = false;
  // While muted, what the user types is not echoed (the prompt itself is written before).
  const output = new Writable({
    write(chunk, _enc, done) {
      if (!mute) echo.write(chunk);
      done();
    },
  });
  const rl = readline.createInterface({
    input,
    output,
    terminal: Boolean((input as { isTTY?: boolean }).isTTY),
  });
  const closed = new Promise<null>((resolve) => rl.once('close', () => resolve(null)));
  try {
    const answer = rl.question(question);
    mute = muted;
    const line = await Promise.race([answer, closed]);
    // A terminal echoed the answer and its newline; end the prompt's line otherwise.
    if (muted || !(input as { isTTY?: boolean }).isTTY) echo.write('\n');
    return line;
  } finally {
    rl.close();
  }
}

/**
 * Asks the user to type `expected` (a tenant's slug, a token id) before a destructive command;
 * throws Aborted unless they do. `--yes` skips it (the caller does not call this).
 */
export async function confirmTyped(what: string, expected: string, input = process.stdin): Promise<void> {
  const typed = await ask(`${what}\nType ${expected} to confirm: `, input);
  if (typed === null) throw new Aborted('aborted: no confirmation was typed (pass --yes to skip it)');
  if (typed.trim() !== expected) throw new Aborted(`aborted: "${typed.trim()}" is not ${expected}`);
}

/** A secret from stdin: prompted without echo on a terminal, else the first line of what is piped in. */
export async function readSecret(prompt: string, input = process.stdin): Promise<string> {
  if ((input as { isTTY?: boolean }).isTTY) {
    const line = await ask(prompt, input, true);
    return (line ?? '').trim();
  }
  let text = '';
  for await (const chunk of input) text += String(chunk);
  return (text.split('\n')[0] ?? '').trim();
}
