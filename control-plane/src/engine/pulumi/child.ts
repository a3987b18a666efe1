/**
 * Runs one Pulumi Automation API operation in its own process (never inside an HTTP request or
 * the worker's event loop: pulumi#20737, #13687). The parent sends one job over IPC and may
 * send `cancel`; the child streams engine events and ends with one result message.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  type EngineEvent,
  type InlineProgramArgs,
  LocalWorkspace,
  type LocalWorkspaceOptions,
  type Stack,
} from '@pulumi/pulumi/automation/index.js';
import { programFor } from '../../../../stacks/index.js';
import { configChanges } from './config.js';
import { CLI_VERSION_ERROR } from './errors.js';
import { plainOutputs } from './outputs.js';
import type { ChildMessage, PulumiJob } from './runner.js';
import { isVersionAtLeast } from './version.js';

const abort = new AbortController();

/** Sends one message; `then` runs once it is handed to the IPC channel (exiting earlier can lose it). */
function send(m: ChildMessage, then?: () => void): void {
  if (!process.send) {
    then?.();
    return;
  }
  process.send(m, undefined, {}, () => then?.());
}

class PulumiVersionError extends Error {
  override name = CLI_VERSION_ERROR;
}

async function openStack(job: PulumiJob): Promise<Stack> {
  // LocalWorkspace refuses a workDir that does not exist; the stack's own, private to this user.
  mkdirSync(job.workDir, { recursive: true, mode: 0o700 });
  const args: InlineProgramArgs = {
    stackName: job.stackName,
    projectName: job.projectName,
    program: programFor(job.input),
  };
  const opts: LocalWorkspaceOptions = {
    workDir: job.workDir,
    envVars: job.envVars,
    ...(job.secretsProvider ? { secretsProvider: job.secretsProvider } : {}),
    projectSettings: { name: job.projectName, runtime: 'nodejs', backend: { url: job.backendUrl } },
  };
  // A drift check must not create a stack for a tenant that has none: select only.
  return job.op === 'preview-refresh'
    ? LocalWorkspace.selectStack(args, opts)
    : LocalWorkspace.createOrSelectStack(args, opts);
}

/** Writes the stack config only where it differs (in bulk: key by key costs a CLI call each, pulumi#5453). */
async function syncConfig(stack: Stack, job: PulumiJob): Promise<void> {
  const { set, remove } = configChanges(await stack.getAllConfig(), job.config);
  if (Object.keys(set).length > 0) await stack.setAllConfig(set);
  if (remove.length > 0) await stack.removeAllConfig(remove);
}

/** The policy packs (and their config, written next to the stack's workspace) for up and preview. */
function policyOptions(job: PulumiJob): { policyPacks?: string[]; policyPackConfigs?: string[] } {
  if (job.policyPacks.length === 0) return {};
  if (!job.policyPackConfig) return { policyPacks: job.policyPacks };
  const file = path.join(job.workDir, `policy-config.${job.op}.json`);
  writeFileSync(file, JSON.stringify(job.policyPackConfig));
  return { policyPacks: job.policyPacks, policyPackConfigs: job.policyPacks.map(() => file) };
}

async function run(job: PulumiJob): Promise<ChildMessage> {
  const stack = await openStack(job);
  if (job.op === 'preview-refresh' && job.minCliVersionForPreview) {
    const found = stack.workspace.pulumiVersion;
    if (!isVersionAtLeast(found, job.minCliVersionForPreview)) {
      throw new PulumiVersionError(
        `drift checks need the Pulumi CLI ${job.minCliVersionForPreview} or newer on a DIY backend (pulumi#22385); found ${found}`,
      );
    }
  }
  await syncConfig(stack, job);
  const onEvent = (event: EngineEvent) => send({ type: 'event', event });
  const common = { onEvent, signal: abort.signal, color: 'never' as const };
  if (job.op === 'up' || job.op === 'unprotect') {
    let target: string[] | undefined;
    if (job.op === 'unprotect' || job.input.discardStaged === true) {
      // Only what exists: an offboarding never creates what a failed onboarding left out, and a
      // discard never creates the staged placement a failed staging left out.
      const state = await stack.exportStack();
      const resources = (state.deployment?.resources ?? []) as { urn: string; type: string }[];
      target = resources.filter((r) => r.type !== 'pulumi:pulumi:Stack').map((r) => r.urn);
      if (target.length === 0) return { type: 'result', summary: {}, outputs: {} };
    }
    const r = await stack.up({ ...common, ...policyOptions(job), ...(target ? { target } : {}) });
    return { type: 'result', summary: r.summary.resourceChanges ?? {}, outputs: plainOutputs(r.outputs) };
  }
  if (job.op === 'preview-refresh') {
    // Drift without side effects: a refreshing preview, read through its events (pulumi#19443).
    const r = await stack.preview({ ...common, ...policyOptions(job), refresh: true });
    return { type: 'result', summary: r.changeSummary, outputs: {} };
  }
  const r = await stack.destroy(common);
  return { type: 'result', summary: r.summary.resourceChanges ?? {}, outputs: {} };
}

process.on('message', (m: { type: 'job'; job: PulumiJob } | { type: 'cancel' }) => {
  if (m.type === 'cancel') {
    abort.abort();
    return;
  }
  run(m.job).then(
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
