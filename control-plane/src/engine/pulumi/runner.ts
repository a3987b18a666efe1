import { fork } from 'node:child_process';
import path from 'node:path';
import type { ConfigMap, EngineEvent } from '@pulumi/pulumi/automation/index.js';
import type { TenantProgramInput } from '../../../../stacks/common/input.js';
import { Semaphore } from '../../aws/semaphore.js';

export interface PulumiJob {
  op: 'up' | 'preview-refresh' | 'destroy';
  projectName: string;
  stackName: string;
  /** One workspace directory per stack: createStack/selectStack are not safe in parallel (pulumi#8186). */
  workDir: string;
  backendUrl: string;
  secretsProvider?: string;
  envVars: Record<string, string>;
  config: ConfigMap;
  input: TenantProgramInput;
}

export type ChildMessage =
  | { type: 'event'; event: EngineEvent }
  | { type: 'result'; summary: Record<string, number>; outputs: Record<string, unknown> }
  | { type: 'error'; name: string; message: string };

export class PulumiRunError extends Error {
  constructor(
    override readonly name: string,
    message: string,
  ) {
    super(message);
  }
}

export interface RunOptions {
  signal?: AbortSignal;
  timeoutMs: number;
  onEvent?: (e: EngineEvent) => void;
  /** How long a cancelled child gets to stop cleanly before SIGKILL. */
  graceMs?: number;
  /** The child entry; tests may point it elsewhere. */
  childPath?: string;
}

const CHILD = path.join(import.meta.dirname, 'child.ts');

/**
 * Runs a Pulumi operation in a child process with a timeout and an AbortSignal: on either, the
 * child is asked to cancel (the SDK's own signal), then killed after a grace period.
 */
export function runPulumi(
  job: PulumiJob,
  opts: RunOptions,
): Promise<{ summary: Record<string, number>; outputs: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const child = fork(opts.childPath ?? CHILD, [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    });
    let settled = false;
    let killTimer: NodeJS.Timeout | undefined;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      fn();
    };
    const cancel = (why: string) => {
      if (child.connected) child.send({ type: 'cancel' });
      killTimer = setTimeout(() => child.kill('SIGKILL'), opts.graceMs ?? 10_000);
      killTimer.unref();
      finish(() => reject(new PulumiRunError('AbortError', why)));
    };
    const onAbort = () => cancel('the operation was cancelled');
    const timer = setTimeout(
      () => cancel(`the operation timed out after ${opts.timeoutMs} ms`),
      opts.timeoutMs,
    );
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('message', (m: ChildMessage) => {
      if (m.type === 'event') opts.onEvent?.(m.event);
      else if (m.type === 'result') finish(() => resolve({ summary: m.summary, outputs: m.outputs }));
      else finish(() => reject(new PulumiRunError(m.name, m.message)));
    });
    child.on('exit', (code, sig) => {
      if (killTimer) clearTimeout(killTimer);
      finish(() =>
        reject(new PulumiRunError('Error', `pulumi child exited (${code ?? sig}) without a result`)),
      );
    });
    child.on('error', (e) => finish(() => reject(e)));
    child.send({ type: 'job', job });
  });
}

/** Bounds concurrent Pulumi operations: each runs a CLI and provider plugins of 300–430 MB (pulumi-aws#5860). */
export class PulumiPool {
  private readonly sem: Semaphore;
  constructor(limit: number) {
    this.sem = new Semaphore(limit);
  }
  async run(job: PulumiJob, opts: RunOptions) {
    const release = await this.sem.acquire();
    try {
      return await runPulumi(job, opts);
    } finally {
      release();
    }
  }
}
