import ora, { type Ora } from 'ora';
import pc from 'picocolors';
import type { Operation, OperationStep } from '../domain/tenant.js';
import { type ApiClient, NetworkError } from './client.js';
import { CliFailure } from './errors.js';
import { type Out, say, shortTime } from './output.js';

/**
 * `--wait` and `ops watch`: follows an operation over its server-sent events
 * (GET /v1/operations/{id}/events) and shows it live on stderr: each step as it starts and ends and,
 * for a promotion, the rows copied per table, the replication lag, the write freeze, the cutover and
 * the rollback deadline. On a terminal the running step has a spinner; elsewhere each change is a line.
 * A stream that closes before its `end` event (the server's bound, a restart) is opened again.
 */

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

/**
 * An operation that ended other than succeeded: its code is the failed step's own (the error it
 * failed with), else OPERATION_FAILED (OPERATION_CANCELLED for a cancelled one).
 */
export class OperationFailed extends CliFailure {
  override readonly name = 'OperationFailed';
  constructor(readonly operation: Operation) {
    const step = operation.steps.find((s) => s.status === 'failed');
    super(
      step?.errorCode ?? (operation.status === 'cancelled' ? 'OPERATION_CANCELLED' : 'OPERATION_FAILED'),
      `operation ${operation.id} ${operation.status}${step ? ` at step ${step.name}` : ''}: ${
        operation.error ?? step?.error ?? 'no reason recorded'
      }`,
    );
  }
}

export const bytes = (n: number) =>
  n < 1024 ? `${n} B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1024 ** 2).toFixed(1)} MB`;

const duration = (ms: number) => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);

function until(iso: string, now = Date.now()): string {
  const ms = Date.parse(iso) - now;
  if (Number.isNaN(ms)) return iso;
  if (ms <= 0) return `${shortTime(iso)}, passed`;
  const min = Math.round(ms / 60_000);
  return `${shortTime(iso)} (in ${min < 60 ? `${min} min` : `${(min / 60).toFixed(1)} h`})`;
}

/** What a promotion's progress says, one line per fact that changed since the last report. */
export function progressLines(prev: Record<string, unknown>, next: Record<string, unknown>): string[] {
  const changed = (k: string) => next[k] !== undefined && JSON.stringify(prev[k]) !== JSON.stringify(next[k]);
  const lines: string[] = [];
  if (changed('rowsCopied')) {
    const rows = Object.entries(next.rowsCopied as Record<string, number>)
      .map(([t, n]) => `${t} ${Number(n).toLocaleString('en-US')}`)
      .join(', ');
    lines.push(`rows copied: ${rows}`);
  }
  if (changed('replicationLagBytes'))
    lines.push(`replication lag: ${bytes(Number(next.replicationLagBytes))}`);
  if (changed('freezeStartedAt'))
    lines.push(`write freeze started at ${shortTime(String(next.freezeStartedAt))}`);
  if (changed('writeFreezeMs')) lines.push(`write freeze lasted ${duration(Number(next.writeFreezeMs))}`);
  if (changed('cutoverAt')) lines.push(`cut over at ${shortTime(String(next.cutoverAt))}`);
  if (changed('rollbackUntil')) lines.push(`rollback possible until ${until(String(next.rollbackUntil))}`);
  if (changed('verification')) {
    const before = (prev.verification ?? {}) as Record<string, Comparison>;
    for (const [phase, c] of Object.entries(next.verification as Record<string, Comparison>)) {
      if (JSON.stringify(before[phase]) !== JSON.stringify(c)) {
        const v = verified(c);
        if (v) lines.push(`verified (${phase === 'full' ? 'every row' : 'rows changed since'}): ${v}`);
      }
    }
  }
  return lines;
}

interface Comparison {
  source?: Record<string, { rows: number; sum: string }>;
  target?: Record<string, { rows: number; sum: string }>;
}

/** A verification's comparison in a few words: how many tables match, and the rows compared. */
function verified(c: Comparison): string | null {
  if (!c || typeof c !== 'object' || !c.source || !c.target) return null;
  const tables = Object.keys(c.source);
  const same = tables.filter((t) => JSON.stringify(c.source?.[t]) === JSON.stringify(c.target?.[t]));
  const rows = tables.reduce((n, t) => n + Number(c.source?.[t]?.rows ?? 0), 0);
  const differ = tables.filter((t) => !same.includes(t));
  return `${same.length}/${tables.length} tables match, ${rows.toLocaleString('en-US')} rows${
    differ.length ? `; differ: ${differ.join(', ')}` : ''
  }`;
}

class Reporter {
  private readonly spinner: Ora;
  private readonly steps = new Map<string, string>();
  private progress: Record<string, unknown> = {};

  constructor(private readonly out: Out) {
    this.spinner = ora({ stream: out.stderr as NodeJS.WriteStream, discardStdin: false });
  }

  private line(text: string): void {
    const spinning = this.spinner.isSpinning;
    const current = this.spinner.text;
    if (spinning) this.spinner.clear();
    say(this.out, text);
    if (spinning) this.spinner.start(current);
  }

  step(s: OperationStep): void {
    const sig = `${s.status}|${s.error ?? ''}`;
    if (this.steps.get(s.name) === sig) return;
    this.steps.set(s.name, sig);
    const took =
      s.startedAt && s.finishedAt
        ? ` ${pc.dim(duration(Date.parse(s.finishedAt) - Date.parse(s.startedAt)))}`
        : '';
    if (s.status === 'running') {
      if (this.spinner.isEnabled) this.spinner.start(s.name);
      else this.line(`${pc.yellow('▸')} ${s.name}`);
    } else if (s.status === 'succeeded') {
      this.stopSpinner();
      this.line(`${pc.green('✔')} ${s.name}${took}`);
    } else if (s.status === 'failed') {
      this.stopSpinner();
      this.line(`${pc.red('✖')} ${s.name}${s.error ? `: ${s.error}` : ''}`);
    } else if (s.status === 'skipped') {
      this.line(`${pc.dim('-')} ${s.name} ${pc.dim('(skipped)')}`);
    }
  }

  onProgress(p: Record<string, unknown>): void {
    for (const l of progressLines(this.progress, p)) this.line(`  ${pc.cyan('•')} ${l}`);
    this.progress = p;
  }

  resource(r: Record<string, unknown>): void {
    this.line(pc.dim(`    ${r.resource} ${r.action} ${r.status}`));
  }

  stopSpinner(): void {
    if (this.spinner.isSpinning) this.spinner.stop();
  }
}

/** Follows the operation to its end and returns it; throws OperationFailed if it did not succeed. */
export async function follow(client: ApiClient, id: string, out: Out): Promise<Operation> {
  const reporter = new Reporter(out);
  let final: Operation | null = null;
  let lost = 0;
  try {
    while (!final) {
      try {
        for await (const e of client.events(`/v1/operations/${id}/events`)) {
          if (e.event === 'step') reporter.step(e.data as OperationStep);
          else if (e.event === 'progress')
            reporter.onProgress((e.data as { progress: Record<string, unknown> }).progress);
          else if (e.event === 'resource') reporter.resource(e.data as Record<string, unknown>);
          else if (e.event === 'end') final = e.data as Operation;
        }
        lost = 0;
      } catch (e) {
        if (!(e instanceof NetworkError) || ++lost > 5) throw e;
        reporter.stopSpinner();
        say(out, pc.dim(`(${e.message}; reconnecting)`));
        await new Promise((r) => setTimeout(r, 500 * lost));
      }
      if (!final) {
        const op = await client.request<Operation>('GET', `/v1/operations/${id}`);
        if (TERMINAL.has(op.status)) final = op;
      }
    }
  } finally {
    reporter.stopSpinner();
  }
  reporter.onProgress(final.progress);
  if (final.status !== 'succeeded') throw new OperationFailed(final);
  say(out, `${pc.green('✔')} operation ${final.id} succeeded`);
  return final;
}
