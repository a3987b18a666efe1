import { Command, Option } from 'commander';
import ora from 'ora';
import pc from 'picocolors';
import { action, collect } from '../context.js';
import { CliFailure } from '../errors.js';
import { cell, emit, listTable, recordTable, say, status } from '../output.js';
import { TIERS } from './tenants.js';

interface Finding {
  tenantSlug: string | null;
  resource: string;
  name: string;
  kind: string;
  field: string;
  desired: unknown;
  actual: unknown;
  category: string;
  resolution: string;
}

interface DriftRun {
  id: string;
  trigger: string;
  status: string;
  tenantsChecked: number;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  durationMs: number | null;
  skipped: { slug: string; reason: string }[];
  summary: Record<string, unknown>;
  error: string | null;
  findings?: Finding[];
  findingsTruncated?: boolean;
}

interface Policy {
  scope: string;
  tier: string | null;
  tenantSlug: string | null;
  mode: string | null;
  ignoreFields: string[];
  updatedAt: string;
  updatedBy: string | null;
}

export class DriftRunFailed extends CliFailure {
  override readonly name = 'DriftRunFailed';
  constructor(message: string) {
    super('DRIFT_RUN_FAILED', message);
  }
}

const findingsTable = (findings: Finding[]) =>
  listTable(
    findings,
    [
      { header: 'TENANT', value: (f) => f.tenantSlug ?? '(platform)' },
      { header: 'RESOURCE', value: (f) => f.resource },
      { header: 'NAME', value: (f) => f.name },
      { header: 'KIND', value: (f) => f.kind },
      { header: 'FIELD', value: (f) => f.field },
      { header: 'DESIRED', value: (f) => f.desired },
      { header: 'ACTUAL', value: (f) => f.actual },
      { header: 'CATEGORY', value: (f) => f.category },
      { header: 'RESOLUTION', value: (f) => status(f.resolution) },
    ],
    'no findings',
  );

const runTable = (r: DriftRun) => {
  const head = recordTable([
    ['id', r.id],
    ['trigger', r.trigger],
    ['status', status(r.status)],
    ['tenants checked', r.tenantsChecked],
    ['skipped', r.skipped.map((s) => `${s.slug} (${s.reason})`)],
    ['summary', r.summary],
    ['started', r.startedAt],
    ['duration', r.durationMs === null ? null : `${r.durationMs} ms`],
    ['error', r.error],
  ]);
  if (!r.findings) return head;
  const more = r.findingsTruncated
    ? `\n${pc.dim('(findings truncated: -o json shows what the API returned)')}`
    : '';
  return `${head}\n${findingsTable(r.findings)}${more}`;
};

const runColumns = [
  { header: 'ID', value: (r: DriftRun) => r.id },
  { header: 'TRIGGER', value: (r: DriftRun) => r.trigger },
  { header: 'STATUS', value: (r: DriftRun) => status(r.status) },
  { header: 'CHECKED', value: (r: DriftRun) => r.tenantsChecked },
  { header: 'FINDINGS', value: (r: DriftRun) => r.summary.findings ?? null },
  { header: 'CREATED', value: (r: DriftRun) => r.createdAt },
  { header: 'DURATION', value: (r: DriftRun) => (r.durationMs === null ? null : `${r.durationMs} ms`) },
];

const policyTable = (items: Policy[]) =>
  listTable(
    items,
    [
      { header: 'SCOPE', value: (p) => p.scope },
      { header: 'TIER', value: (p) => p.tier },
      { header: 'TENANT', value: (p) => p.tenantSlug },
      { header: 'MODE', value: (p) => p.mode ?? pc.dim('(inherit)') },
      { header: 'IGNORE', value: (p) => p.ignoreFields },
      { header: 'UPDATED', value: (p) => p.updatedAt },
      { header: 'BY', value: (p) => p.updatedBy },
    ],
    'no policies (every tenant: report)',
  );

export function driftCommand(): Command {
  const cmd = new Command('drift').description('drift sweeps, findings and policies');

  cmd
    .command('run')
    .description('run a drift sweep of the whole fleet now')
    .option('--wait', 'wait for the sweep to finish; exit non-zero if it fails')
    .action(
      action(async (ctx, o: { wait?: boolean }) => {
        const client = ctx.client();
        let run = await client.request<DriftRun>('POST', '/v1/drift-runs');
        if (o.wait) {
          const spinner = ora({ stream: ctx.out.stderr as NodeJS.WriteStream, discardStdin: false });
          if (spinner.isEnabled) spinner.start(`drift run ${run.id}`);
          else say(ctx.out, `drift run ${run.id}: waiting for it to finish`);
          // A sweep has no event stream: its run is read again until it ends.
          while (run.status === 'queued' || run.status === 'running') {
            await new Promise((r) => setTimeout(r, 500));
            run = await client.request<DriftRun>('GET', `/v1/drift-runs/${run.id}`);
          }
          spinner.stop();
          if (run.status !== 'succeeded') {
            emit(ctx.out, run, () => runTable(run));
            throw new DriftRunFailed(
              `drift run ${run.id} ${run.status}: ${run.error ?? 'no reason recorded'}`,
            );
          }
          say(ctx.out, `${pc.green('✔')} drift run ${run.id} ${run.status}: ${cell(run.summary)}`);
        } else {
          say(ctx.out, `queued: drift run ${run.id}; read it with: tenantry drift get ${run.id}`);
        }
        emit(ctx.out, run, () => runTable(run));
      }),
    );

  cmd
    .command('list')
    .description('recent drift runs, newest first')
    .option('--limit <n>', 'how many (1-200)', '20')
    .action(
      action(async (ctx, o: { limit: string }) => {
        const body = await ctx.client().request<{ items: DriftRun[] }>('GET', '/v1/drift-runs', {
          query: { limit: o.limit },
        });
        emit(ctx.out, body, () => listTable(body.items, runColumns, 'no drift runs'));
      }),
    );

  cmd
    .command('get <runId>')
    .description('a drift run with its findings')
    .action(
      action(async (ctx, id: string) => {
        const run = await ctx.client().request<DriftRun>('GET', `/v1/drift-runs/${id}`);
        emit(ctx.out, run, () => runTable(run));
      }),
    );

  cmd
    .command('show <tenant>')
    .description("a tenant's open findings from the latest sweep")
    .action(
      action(async (ctx, slug: string) => {
        const d = await ctx.client().request<{
          runId: string | null;
          observedAt: string | null;
          skipped: { reason: string; detail: string } | null;
          findings: Finding[];
        }>('GET', `/v1/tenants/${slug}/drift`);
        emit(ctx.out, d, () => {
          const head = recordTable([
            ['tenant', slug],
            ['run', d.runId ?? '(no sweep yet)'],
            ['observed', d.observedAt],
            ['skipped', d.skipped ? `${d.skipped.reason}: ${d.skipped.detail}` : null],
          ]);
          return `${head}\n${findingsTable(d.findings)}`;
        });
      }),
    );

  const policy = cmd.command('policy').description('drift policies: global, per tier, per tenant');
  policy
    .command('get')
    .description('every policy set')
    .action(
      action(async (ctx) => {
        const body = await ctx.client().request<{ items: Policy[] }>('GET', '/v1/drift-policies');
        emit(ctx.out, body, () => policyTable(body.items));
      }),
    );
  policy
    .command('set')
    .description('set the policy of the fleet (no --tier, no --tenant), a tier or a tenant')
    .addOption(new Option('--tier <tier>', 'for this tier').choices(TIERS).conflicts('tenant'))
    .option('--tenant <slug>', 'for this tenant')
    .addOption(
      new Option('--mode <mode>', 'report, remediate, or inherit (from the level above)')
        .choices(['report', 'remediate', 'inherit'])
        .makeOptionMandatory(),
    )
    .option(
      '--ignore <field>',
      'a field to ignore: resource.field, resource.*, or a prefix ending in * (repeat)',
      collect,
    )
    .action(
      action(async (ctx, o: { tier?: string; tenant?: string; mode: string; ignore?: string[] }) => {
        const body = await ctx.client().request<{ items: Policy[] }>('PUT', '/v1/drift-policies', {
          body: {
            ...(o.tier ? { tier: o.tier } : {}),
            ...(o.tenant ? { tenant: o.tenant } : {}),
            mode: o.mode === 'inherit' ? null : o.mode,
            ignoreFields: o.ignore ?? [],
          },
        });
        emit(ctx.out, body, () => policyTable(body.items));
      }),
    );

  return cmd;
}
