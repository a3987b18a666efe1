/**
 * Runs one Pulumi Automation API operation in its own process (never inside an HTTP request or
 * the worker's event loop: pulumi#20737, #13687). The parent sends one job over IPC and may
 * send `cancel`; the child streams engine events and ends with one result message.
 */
import { type EngineEvent, LocalWorkspace, type Stack } from '@pulumi/pulumi/automation/index.js';
import { programFor } from '../../../../stacks/index.js';
import type { ChildMessage, PulumiJob } from './runner.js';

const send = (m: ChildMessage) => process.send?.(m);
const abort = new AbortController();

async function run(job: PulumiJob): Promise<void> {
  const stack: Stack = await LocalWorkspace.createOrSelectStack(
    { stackName: job.stackName, projectName: job.projectName, program: programFor(job.input) },
    {
      workDir: job.workDir,
      envVars: job.envVars,
      ...(job.secretsProvider ? { secretsProvider: job.secretsProvider } : {}),
      projectSettings: { name: job.projectName, runtime: 'nodejs', backend: { url: job.backendUrl } },
    },
  );
  await stack.setAllConfig(job.config); // in bulk: key by key costs a CLI call each (pulumi#5453)
  const onEvent = (event: EngineEvent) => send({ type: 'event', event });
  const common = { onEvent, signal: abort.signal, color: 'never' as const };
  if (job.op === 'up') {
    const r = await stack.up(common);
    const outputs = Object.fromEntries(
      Object.entries(r.outputs)
        .filter(([, v]) => !v.secret)
        .map(([k, v]) => [k, v.value]),
    );
    send({ type: 'result', summary: r.summary.resourceChanges ?? {}, outputs });
  } else if (job.op === 'preview-refresh') {
    // Drift without side effects: a refreshing preview, read through its events (pulumi#19443).
    const r = await stack.preview({ ...common, refresh: true });
    send({ type: 'result', summary: r.changeSummary, outputs: {} });
  } else {
    const r = await stack.destroy(common);
    send({ type: 'result', summary: r.summary.resourceChanges ?? {}, outputs: {} });
  }
}

process.on('message', (m: { type: 'job'; job: PulumiJob } | { type: 'cancel' }) => {
  if (m.type === 'cancel') {
    abort.abort();
    return;
  }
  run(m.job).then(
    () => process.exit(0),
    (e: unknown) => {
      const err = e as Error;
      send({ type: 'error', name: err?.name ?? 'Error', message: String(err?.message ?? e) });
      process.exit(1);
    },
  );
});
