import { type ChildProcess, fork } from 'node:child_process';
import path from 'node:path';
import type { ConfigMap, EngineEvent } from '@pulumi/pulumi/automation/index.js';
import type { TenantProgramInput } from '../../../../stacks/common/input.js';
import { Semaphore } from '../../aws/semaphore.js';
import { CHILD_CRASH_ERROR, TIMEOUT_ERROR } from './errors.js';

export type PulumiOp = 'up' | 'preview-refresh' | 'destroy' | 'unprotect';

/**
 * What a stack's `Pulumi.<stack>.yaml` holds besides its config: the secrets provider the stack was
 * created with and that provider's state (the data key it encrypted, or the passphrase's salt).
 * Kept in the control database (db/aws.ts) and handed to every run, so any worker can run any stack.
 */
export interface StackSettingsRecord {
  secretsProvider?: string;
  encryptedKey?: string;
  encryptionSalt?: string;
}

export interface PulumiJob {
  /**
   * `unprotect` is an `up` targeted at the resources already in the stack, with the program's
   * offboarding flag set (deletion protection off, nothing retained but the key of a tier whose
   * final snapshot needs it): it never creates what a failed onboarding left out.
   */
  op: PulumiOp;
  projectName: string;
  stackName: string;
  /** One workspace directory per stack: createStack/selectStack are not safe in parallel (pulumi#8186). */
  workDir: string;
  backendUrl: string;
  secretsProvider?: string;
  /** The child's whole environment (and so the CLI's and the dynamic providers'): nothing else is inherited. */
  envVars: Record<string, string>;
  config: ConfigMap;
  input: TenantProgramInput;
  /** Absolute paths of policy pack directories (each with its PulumiPolicy.yaml), run by up and preview. */
  policyPacks: string[];
  /** Policy pack config (one object for every pack), e.g. a policy disabled for `unprotect`. */
  policyPackConfig?: Record<string, unknown>;
  /** The oldest CLI a refreshing preview may run on (DIY backends: pulumi#22385). */
  minCliVersionForPreview?: string;
  /** The exact CLI and aws plugin versions the run needs (version.ts); any other is refused. */
  pins?: { cli: string; awsPlugin: string };
  /** The stack's persisted settings (written to its workspace before the stack is selected). */
  stackSettings?: StackSettingsRecord;
  /** When a lock left on the stack is stale: older than this, or held by a dead process of this host. */
  staleLock?: { maxAgeMs: number; hostname: string };
}

export type ChildMessage =
  | { type: 'event'; event: EngineEvent }
  /** The stack's settings differ from the job's: the parent persists them, then answers. */
  | { type: 'stack-settings'; settings: StackSettingsRecord }
  | { type: 'result'; summary: Record<string, number>; outputs: Record<string, unknown> }
  | { type: 'error'; name: string; message: string };

export interface PulumiResult {
  summary: Record<string, number>;
  outputs: Record<string, unknown>;
}

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
  /** How long a cancelled child (and the CLI it started) gets to stop cleanly before SIGKILL. */
  graceMs?: number;
  /** The child entry; tests may point it elsewhere. */
  childPath?: string;
  /** Persists the stack's settings the child reports, before the child goes on (AwsEngine: db/aws.ts). */
  onStackSettings?: (settings: StackSettingsRecord) => Promise<void>;
}

/** What runs one job: the real child process, or a stand-in in tests. */
export type PulumiRunner = (job: PulumiJob, opts: RunOptions) => Promise<PulumiResult>;

const CHILD = path.join(import.meta.dirname, 'child.ts');

/** Signals the child's whole process group: the child, the CLI it spawned and the CLI's plugins. */
function signalGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

/**
 * Runs a Pulumi operation in a child process with a timeout and an AbortSignal. The child is
 * the leader of its own process group (detached), so the CLI and plugins it starts can be
 * stopped with it: on timeout or abort the child is asked to cancel (the SDK sends the CLI
 * SIGINT, which lets it release the stack lock), and the whole group is killed after a grace
 * period. The promise settles only once the child has exited, so a bounded pool never starts
 * a new operation while the previous one still runs. The child gets `job.envVars` as its whole
 * environment: the control plane's own secrets (DATABASE_URL, admin token) never reach the
 * CLI or the dynamic providers it runs.
 */
export function runPulumi(job: PulumiJob, opts: RunOptions): Promise<PulumiResult> {
  return new Promise((resolve, reject) => {
    const graceMs = opts.graceMs ?? 10_000;
    let child: ChildProcess;
    try {
      child = fork(opts.childPath ?? CHILD, [], {
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
        env: { ...job.envVars },
        detached: true,
      });
    } catch (e) {
      reject(e);
      return;
    }
    let result: PulumiResult | undefined;
    let failure: Error | undefined;
    let interrupted: PulumiRunError | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    let settled = false;
    const killLater = () => {
      killTimer ??= setTimeout(() => signalGroup(child, 'SIGKILL'), graceMs);
    };
    const interrupt = (e: PulumiRunError) => {
      if (interrupted || result || failure) return;
      interrupted = e;
      if (child.connected) child.send({ type: 'cancel' });
      killLater();
    };
    const onAbort = () => interrupt(new PulumiRunError('AbortError', 'the operation was cancelled'));
    const timer = setTimeout(
      () =>
        interrupt(new PulumiRunError(TIMEOUT_ERROR, `the operation timed out after ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      fn();
    };
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('message', (m: ChildMessage) => {
      if (m.type === 'event') opts.onEvent?.(m.event);
      else if (m.type === 'stack-settings') {
        // The child waits for this answer: nothing is encrypted with settings not yet saved.
        Promise.resolve(opts.onStackSettings?.(m.settings)).then(
          () => child.connected && child.send({ type: 'stack-settings-saved' }),
          (e: unknown) =>
            child.connected &&
            child.send({ type: 'stack-settings-failed', message: String((e as Error)?.message ?? e) }),
        );
      } else {
        if (m.type === 'result') result ??= { summary: m.summary, outputs: m.outputs };
        else failure ??= new PulumiRunError(m.name, m.message);
        killLater(); // the child exits right after its last message; if it lingers, it is stopped
      }
    });
    child.on('exit', (code, sig) => {
      // Whatever the child left running in its group (a CLI after a crash) goes with it.
      signalGroup(child, 'SIGKILL');
      settle(() => {
        if (result) resolve(result);
        else if (interrupted) reject(interrupted);
        else if (failure) reject(failure);
        else
          reject(
            new PulumiRunError(CHILD_CRASH_ERROR, `pulumi child exited (${code ?? sig}) without a result`),
          );
      });
    });
    child.on('error', (e) => {
      // Spawn failures come without an exit; other errors (a failed send) are followed by one.
      if (child.pid === undefined) settle(() => reject(e));
    });
    child.send({ type: 'job', job });
  });
}

/** Bounds concurrent Pulumi operations: each runs a CLI and provider plugins of 300–430 MB (pulumi-aws#5860). */
export class PulumiPool {
  private readonly sem: Semaphore;
  constructor(
    limit: number,
    private readonly runner: PulumiRunner = runPulumi,
  ) {
    this.sem = new Semaphore(limit);
  }
  /** Slots in use: a slot is held until the child has exited, not just until its result. */
  get inUse(): number {
    return this.sem.inUse;
  }
  run(job: PulumiJob, opts: RunOptions): Promise<PulumiResult> {
    return this.sem.run(() => this.runner(job, opts));
  }
}
