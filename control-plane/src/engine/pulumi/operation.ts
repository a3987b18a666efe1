/**
 * One Pulumi operation, end to end, over a seam: every Automation API call goes through
 * `PulumiStackApi` (workspace.ts implements it with LocalWorkspace; tests drive it directly), so the
 * checks around the run are testable without a Pulumi CLI:
 *
 * 1. the pinned CLI and aws plugin versions (refused with a clear message otherwise);
 * 2. the stack's settings (its secrets provider and the key it generated) handed to the control
 *    database when they differ from what the job brought, before anything is encrypted with them;
 * 3. recovery from a killed run: the pending operations known to be safe cleared (the lock left by
 *    the dead process cancelled first), then a refresh; anything else stops the operation for an
 *    operator, naming each resource;
 * 4. the operation, retried once after cancelling a lock whose every holder is stale.
 */
import type { ConfigMap, EngineEvent } from '@pulumi/pulumi/automation/index.js';
import { exportResourceUrns } from '../../../../stacks/common/names.js';
import { configChanges } from './config.js';
import {
  CLI_VERSION_ERROR,
  isPidAlive,
  isStaleLock,
  PENDING_OPERATIONS_ERROR,
  parseLockHolders,
} from './errors.js';
import { plainOutputs } from './outputs.js';
import type { ChildMessage, PulumiJob, StackSettingsRecord } from './runner.js';
import { isVersionAtLeast } from './version.js';

/** A state as `pulumi stack export` prints it (the parts read here). */
export interface ExportedState {
  version: number;
  deployment?: {
    resources?: { urn: string; type: string }[];
    pending_operations?: PendingOperation[];
    [k: string]: unknown;
  };
}

/** An operation the engine had begun on a resource when its run stopped (`creating`, `updating` …). */
export interface PendingOperation {
  resource: { urn: string; type: string; [k: string]: unknown };
  type: string;
}

/** The Automation API calls one operation makes on its stack (a subset of `automation.Stack`). */
export interface PulumiStackApi {
  /** The CLI's version, as `pulumi version` printed it. */
  readonly pulumiVersion: string;
  /** Installed plugins (`pulumi plugin ls`). */
  listPlugins(): Promise<{ name: string; version?: string; kind: string }[]>;
  /** The stack's settings file (`Pulumi.<stack>.yaml`): secrets provider, encrypted key, salt. */
  stackSettings(): Promise<StackSettingsRecord>;
  getAllConfig(): Promise<ConfigMap>;
  setAllConfig(config: ConfigMap): Promise<void>;
  removeAllConfig(keys: string[]): Promise<void>;
  exportStack(): Promise<ExportedState>;
  importStack(state: ExportedState): Promise<void>;
  /** `pulumi cancel`: on DIY backends it removes the stack's lock files. */
  cancel(): Promise<void>;
  refresh(opts: RunCallOptions): Promise<void>;
  up(
    opts: RunCallOptions & UpOptions,
  ): Promise<{ summary: Record<string, number>; outputs: Record<string, unknown> }>;
  preview(opts: RunCallOptions & UpOptions & { refresh: true }): Promise<{ summary: Record<string, number> }>;
  destroy(opts: RunCallOptions): Promise<{ summary: Record<string, number> }>;
}

export interface RunCallOptions {
  onEvent: (e: EngineEvent) => void;
  signal: AbortSignal;
}

export interface UpOptions {
  target?: string[];
  policyPacks?: string[];
  policyPackConfigs?: string[];
}

/** Opens (creates or selects) the job's stack. */
export interface AutomationApi {
  open(job: PulumiJob): Promise<PulumiStackApi>;
}

/** What the operation tells its parent besides the result. */
export interface OperationIo {
  onEvent(e: EngineEvent): void;
  /** Persists the stack's settings (the parent writes them to the control database) and resolves once it has. */
  saveStackSettings(s: StackSettingsRecord): Promise<void>;
  signal: AbortSignal;
  /** Where the policy-pack config file goes (child.ts writes it next to the stack's workspace). */
  policyOptions(job: PulumiJob): { policyPacks?: string[]; policyPackConfigs?: string[] };
}

export class PulumiVersionError extends Error {
  override name = CLI_VERSION_ERROR;
}

export class PendingOperationsError extends Error {
  override name = PENDING_OPERATIONS_ERROR;
}

/** The Tenantry types whose pending creations are known to be safe to drop (see isSafePending). */
const DYNAMIC = 'pulumi-nodejs:dynamic:Resource';

/**
 * Whether a pending operation a killed run left may be dropped from the state before a refresh:
 * - an update, a delete or a read: the resource is still in the state, and the refresh that follows
 *   reads what it really is (gone, or as it is);
 * - a creation that makes nothing outside Pulumi's state (providers, components);
 * - a creation of a Postgres object through the dynamic provider, whose create is idempotent (the
 *   next `up` converges what a half-done create left).
 * Any other creation may have made a cloud resource the state does not know (an RDS instance, a
 * secret with a fixed name): dropping it would make the next `up` collide with it, or leave it
 * behind unseen. Those stop the operation for an operator (import it, or delete it, then
 * `pulumi refresh --clear-pending-creates`).
 */
export function isSafePending(op: PendingOperation): boolean {
  if (op.type !== 'creating' && op.type !== 'importing') return true;
  const t = op.resource.type;
  return t === DYNAMIC || t.startsWith('pulumi:providers:') || !t.includes(':') || t.startsWith('tenantry:');
}

function sameSettings(a: StackSettingsRecord | undefined, b: StackSettingsRecord): boolean {
  return (
    (a?.secretsProvider ?? '') === (b.secretsProvider ?? '') &&
    (a?.encryptedKey ?? '') === (b.encryptedKey ?? '') &&
    (a?.encryptionSalt ?? '') === (b.encryptionSalt ?? '')
  );
}

/** Refuses a CLI or aws plugin other than the pinned ones, saying what to install. */
export async function assertPinnedVersions(stack: PulumiStackApi, job: PulumiJob): Promise<void> {
  const pins = job.pins;
  if (!pins) return;
  const found = stack.pulumiVersion.replace(/^v/, '');
  if (found !== pins.cli) {
    throw new PulumiVersionError(
      `Tenantry runs the Pulumi CLI ${pins.cli} exactly, and found ${found} on the worker's PATH: install ${pins.cli} (scripts/pulumi-install.ts, or https://github.com/pulumi/pulumi/releases/tag/v${pins.cli}) and put it first on PATH`,
    );
  }
  const aws = (await stack.listPlugins()).filter((p) => p.kind === 'resource' && p.name === 'aws');
  if (!aws.some((p) => (p.version ?? '').replace(/^v/, '') === pins.awsPlugin)) {
    const have = aws.map((p) => p.version ?? '?').join(', ') || 'none';
    throw new PulumiVersionError(
      `Tenantry runs the Pulumi aws plugin ${pins.awsPlugin} (the @pulumi/aws it is built with), and found ${have}: install it ahead of time (pulumi plugin install resource aws v${pins.awsPlugin}, or scripts/pulumi-install.ts); plugins are never installed during an operation`,
    );
  }
}

/** Whether an error is a lock conflict whose every holder is stale (dead on this host, or too old). */
function staleLockConflict(e: unknown, job: PulumiJob): boolean {
  const err = e as Error & { commandResult?: { stderr?: string } };
  const text = `${err?.message ?? ''}\n${err?.commandResult?.stderr ?? ''}`;
  if (!/the stack is currently locked by/.test(text) && err?.name !== 'ConcurrentUpdateError') return false;
  const locks = parseLockHolders(text);
  const stale = job.staleLock;
  return (
    stale !== undefined &&
    isStaleLock(locks, { maxAgeMs: stale.maxAgeMs, hostname: stale.hostname, isPidAlive })
  );
}

/** Runs `fn`; a lock left by a dead or long-gone run is cancelled and `fn` run once more. */
async function clearingStaleLock<T>(stack: PulumiStackApi, job: PulumiJob, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (!staleLockConflict(e, job)) throw e;
  }
  await stack.cancel();
  return fn();
}

/**
 * A killed run (a timeout past its grace period, a crash, kill -9 of the worker) leaves the stack
 * locked and its state with pending operations. Clears those known to be safe (isSafePending) and
 * refreshes; refuses, naming them, when any other is there. Writes nothing when there is none.
 */
export async function recoverInterrupted(
  stack: PulumiStackApi,
  job: PulumiJob,
  io: OperationIo,
): Promise<boolean> {
  const state = await stack.exportStack();
  const pending = state.deployment?.pending_operations ?? [];
  if (pending.length === 0) return false;
  const unsafe = pending.filter((p) => !isSafePending(p));
  if (unsafe.length > 0) {
    throw new PendingOperationsError(
      `a killed run left ${unsafe.length} pending creation(s) that may exist in AWS without being in the stack: ${unsafe
        .map((p) => `${p.type} ${p.resource.urn}`)
        .join(
          '; ',
        )}. Import each one that exists (pulumi import) or delete it, then run pulumi refresh --clear-pending-creates on ${job.stackName}, and resume the operation`,
    );
  }
  const cleared: ExportedState = {
    ...state,
    deployment: { ...state.deployment, pending_operations: [] },
  };
  await clearingStaleLock(stack, job, () => stack.importStack(cleared));
  await clearingStaleLock(stack, job, () => stack.refresh({ onEvent: io.onEvent, signal: io.signal }));
  return true;
}

const MUTATING = new Set(['up', 'unprotect', 'destroy']);

/** Runs one job on its stack; returns the result message the child sends its parent. */
export async function runOperation(
  api: AutomationApi,
  job: PulumiJob,
  io: OperationIo,
): Promise<ChildMessage> {
  const stack = await api.open(job);
  await assertPinnedVersions(stack, job);
  if (job.op === 'preview-refresh' && job.minCliVersionForPreview) {
    const found = stack.pulumiVersion;
    if (!isVersionAtLeast(found, job.minCliVersionForPreview)) {
      throw new PulumiVersionError(
        `drift checks need the Pulumi CLI ${job.minCliVersionForPreview} or newer on a DIY backend (pulumi#22385); found ${found}`,
      );
    }
  }
  // Any worker must run this stack with the provider it was created with: persisted before use.
  const settings = await stack.stackSettings();
  if (!sameSettings(job.stackSettings, settings)) await io.saveStackSettings(settings);
  // Bulk config writes, only what differs (key by key costs a CLI call each, pulumi#5453).
  const { set, remove } = configChanges(await stack.getAllConfig(), job.config);
  if (Object.keys(set).length > 0) await stack.setAllConfig(set);
  if (remove.length > 0) await stack.removeAllConfig(remove);
  if (MUTATING.has(job.op)) await recoverInterrupted(stack, job, io);
  const common = { onEvent: io.onEvent, signal: io.signal };
  if (job.op === 'up' || job.op === 'unprotect') {
    const target = await upTargets(stack, job);
    if (target?.length === 0) return { type: 'result', summary: {}, outputs: {} };
    const r = await clearingStaleLock(stack, job, () =>
      stack.up({ ...common, ...io.policyOptions(job), ...(target ? { target } : {}) }),
    );
    return { type: 'result', summary: r.summary, outputs: plainOutputs(r.outputs) };
  }
  if (job.op === 'preview-refresh') {
    // Drift without side effects: a refreshing preview, read through its events (pulumi#19443).
    const r = await stack.preview({ ...common, ...io.policyOptions(job), refresh: true });
    return { type: 'result', summary: r.summary, outputs: {} };
  }
  const r = await clearingStaleLock(stack, job, () => stack.destroy(common));
  return { type: 'result', summary: r.summary, outputs: {} };
}

/**
 * What an `up` is limited to, when it is: only what the stack has (an offboarding never creates what a
 * failed onboarding left out; a discard never creates the staged placement a failed staging left
 * out), plus, for an account tenant's offboarding with a database, the export of its last snapshot.
 */
async function upTargets(stack: PulumiStackApi, job: PulumiJob): Promise<string[] | undefined> {
  if (job.op !== 'unprotect' && job.input.discardStaged !== true) return undefined;
  const state = await stack.exportStack();
  const resources = state.deployment?.resources ?? [];
  const target = resources.filter((r) => r.type !== 'pulumi:pulumi:Stack').map((r) => r.urn);
  if (
    job.op === 'unprotect' &&
    job.input.tier === 'account' &&
    resources.some((r) => r.type === 'aws:rds/instance:Instance')
  ) {
    for (const urn of exportResourceUrns(job.stackName, job.projectName, job.input.slug)) {
      if (!target.includes(urn)) target.push(urn);
    }
  }
  return target;
}

/** Parent → child messages. */
export type ParentMessage =
  | { type: 'job'; job: PulumiJob }
  | { type: 'cancel' }
  | { type: 'stack-settings-saved' }
  | { type: 'stack-settings-failed'; message: string };

/**
 * The child process's side of the IPC protocol (runner.ts is the parent's): one job in, engine events
 * and at most one settings hand-off out, then one result or error, after which the process exits.
 * The parent may send `cancel`; a parent that goes away cancels the operation too, so the CLI can
 * release the stack lock.
 */
export function serveChild(api: AutomationApi, policyOptions: OperationIo['policyOptions']): void {
  const abort = new AbortController();
  let settingsAck: { resolve: () => void; reject: (e: Error) => void } | undefined;
  /** Sends one message; `then` runs once it is handed to the IPC channel (exiting earlier can lose it). */
  const send = (m: ChildMessage, then?: () => void) => {
    if (!process.send) {
      then?.();
      return;
    }
    process.send(m, undefined, {}, () => then?.());
  };
  const io: OperationIo = {
    onEvent: (event) => send({ type: 'event', event }),
    saveStackSettings: (settings) =>
      new Promise<void>((resolve, reject) => {
        settingsAck = { resolve, reject };
        send({ type: 'stack-settings', settings });
      }),
    signal: abort.signal,
    policyOptions,
  };
  process.on('message', (m: ParentMessage) => {
    if (m.type === 'cancel') {
      abort.abort();
      return;
    }
    if (m.type === 'stack-settings-saved') {
      settingsAck?.resolve();
      return;
    }
    if (m.type === 'stack-settings-failed') {
      settingsAck?.reject(new Error(`the stack's settings could not be saved: ${m.message}`));
      return;
    }
    runOperation(api, m.job, io).then(
      (result) => send(result, () => process.exit(0)),
      (e: unknown) => {
        const err = e as Error;
        send({ type: 'error', name: err?.name ?? 'Error', message: String(err?.message ?? e) }, () =>
          process.exit(1),
        );
      },
    );
  });
  // The parent is gone (crashed or killed): cancel the operation so the CLI releases the stack lock.
  process.on('disconnect', () => abort.abort());
}
