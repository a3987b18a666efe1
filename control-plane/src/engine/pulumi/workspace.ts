/**
 * The seam's LocalWorkspace side (operation.ts `AutomationApi`): opens a job's stack through the
 * Automation API and the Pulumi CLI. child.ts serves it in the operation's own process.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  type InlineProgramArgs,
  LocalWorkspace,
  type LocalWorkspaceOptions,
  PulumiCommand,
  type Stack,
} from '@pulumi/pulumi/automation/index.js';
import { programFor } from '../../../../stacks/index.js';
import type { AutomationApi, OperationIo, PulumiStackApi } from './operation.js';
import type { PulumiJob } from './runner.js';

/**
 * The stack's `Pulumi.<stack>.yaml`, rewritten whole when the workspace opens: the persisted secrets
 * provider settings and the job's config (plain values; none is secret), so a run that changes
 * nothing writes no config afterwards.
 */
function settingsFile(job: PulumiJob) {
  const config: Record<string, string> = {};
  for (const [k, v] of Object.entries(job.config)) if (!v.secret) config[k] = v.value;
  return { ...job.stackSettings, config };
}

/** The workspace of a job: its directory, environment, project, and the stack's persisted settings. */
export function workspaceOptions(job: PulumiJob, pulumiCommand?: PulumiCommand): LocalWorkspaceOptions {
  return {
    workDir: job.workDir,
    envVars: job.envVars,
    ...(pulumiCommand ? { pulumiCommand } : {}),
    // Applied by the SDK only when it creates the stack (pulumi#8183); an existing stack's provider
    // comes from the settings below, written to Pulumi.<stack>.yaml before the stack is selected.
    ...(job.stackSettings?.secretsProvider
      ? { secretsProvider: job.stackSettings.secretsProvider }
      : job.secretsProvider
        ? { secretsProvider: job.secretsProvider }
        : {}),
    ...(job.stackSettings ? { stackSettings: { [job.stackName]: settingsFile(job) } } : {}),
    projectSettings: { name: job.projectName, runtime: 'nodejs', backend: { url: job.backendUrl } },
  };
}

/** The seam over a LocalWorkspace stack. */
function stackApi(stack: Stack): PulumiStackApi {
  const ws = stack.workspace;
  return {
    get pulumiVersion() {
      return ws.pulumiVersion;
    },
    listPlugins: async () => (await ws.listPlugins()).map((p) => ({ ...p, version: p.version ?? '' })),
    stackSettings: async () => {
      const s = await ws.stackSettings(stack.name);
      return {
        ...(s.secretsProvider ? { secretsProvider: s.secretsProvider } : {}),
        ...(s.encryptedKey ? { encryptedKey: s.encryptedKey } : {}),
        ...(s.encryptionSalt ? { encryptionSalt: s.encryptionSalt } : {}),
      };
    },
    getAllConfig: () => stack.getAllConfig(),
    setAllConfig: (c) => stack.setAllConfig(c),
    removeAllConfig: (keys) => stack.removeAllConfig(keys),
    exportStack: () => stack.exportStack(),
    importStack: (s) => stack.importStack(s as Parameters<Stack['importStack']>[0]),
    cancel: () => stack.cancel(),
    refresh: async (o) => {
      await stack.refresh({ ...o, color: 'never' });
    },
    up: async (o) => {
      const r = await stack.up({ ...o, color: 'never' });
      return { summary: r.summary.resourceChanges ?? {}, outputs: r.outputs };
    },
    preview: async (o) => {
      const r = await stack.preview({ ...o, color: 'never' });
      return { summary: r.changeSummary };
    },
    destroy: async (o) => {
      const r = await stack.destroy({ ...o, color: 'never' });
      return { summary: r.summary.resourceChanges ?? {} };
    },
  };
}

export const automation: AutomationApi = {
  async open(job) {
    // LocalWorkspace refuses a workDir that does not exist; the stack's own, private to this user.
    mkdirSync(job.workDir, { recursive: true, mode: 0o700 });
    // The CLI on the job's PATH; its exact version is checked against the pin (operation.ts).
    const command = await PulumiCommand.get({ skipVersionCheck: true });
    const args: InlineProgramArgs = {
      stackName: job.stackName,
      projectName: job.projectName,
      program: programFor(job.input),
    };
    const opts = workspaceOptions(job, command);
    // A drift check must not create a stack for a tenant that has none: select only.
    const stack =
      job.op === 'preview-refresh'
        ? await LocalWorkspace.selectStack(args, opts)
        : await LocalWorkspace.createOrSelectStack(args, opts);
    return stackApi(stack);
  },
};

/** The policy packs (and their config, written next to the stack's workspace) for up and preview. */
export const policyOptions: OperationIo['policyOptions'] = (job) => {
  if (job.policyPacks.length === 0) return {};
  if (!job.policyPackConfig) return { policyPacks: job.policyPacks };
  const file = path.join(job.workDir, `policy-config.${job.op}.json`);
  writeFileSync(file, JSON.stringify(job.policyPackConfig));
  return { policyPacks: job.policyPacks, policyPackConfigs: job.policyPacks.map(() => file) };
};
