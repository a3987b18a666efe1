import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';

/**
 * Running the `tenantry` CLI as a user runs it (its `bin` entry, a process of its own) against a
 * control plane listening on a port: tests/integration/cli*.test.ts share it.
 */
export const BIN = path.resolve(import.meta.dirname, '../../control-plane/src/cli/bin.js');
export const REQUEST_ID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The process's argv as `ps` shows it (read from /proc while it ran). */
  argv: string;
}

export interface CliOptions {
  /** TENANTRY_TOKEN (null: none, so the profile is used; default: the runner's default token). */
  token?: string | null;
  /** stdin: a confirmation, or the token for `login`. */
  input?: string;
  env?: Record<string, string>;
}

/**
 * A CLI runner for a server at `target().url`, with HOME (and the profile file) under
 * `target().home`; every run's output is kept in `printed`, for checks that no secret was printed.
 */
export function cliRunner(target: () => { url: string; home: string; token: string }) {
  const printed: string[] = [];
  const cli = (args: string[], opts: CliOptions = {}): Promise<Run> => {
    const { url, home, token: fallback } = target();
    const token = opts.token === undefined ? fallback : opts.token;
    const p = spawn(process.execPath, [BIN, ...args], {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: home,
        XDG_CONFIG_HOME: path.join(home, 'config'),
        ...(token === null ? {} : { TENANTRY_URL: url, TENANTRY_TOKEN: token }),
        ...opts.env,
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const argv = fs.readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').split('\0').join(' ');
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += String(d);
    });
    p.stderr.on('data', (d) => {
      stderr += String(d);
    });
    p.stdin.end(opts.input ?? '');
    return new Promise((resolve) => {
      p.on('close', (code) => {
        printed.push(stdout, stderr);
        resolve({ code, stdout, stderr, argv });
      });
    });
  };
  return { cli, printed };
}

/** A run's stdout parsed as JSON, once its exit code is 0 (its stderr shown otherwise). */
export const json = (r: Run) => {
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
};
