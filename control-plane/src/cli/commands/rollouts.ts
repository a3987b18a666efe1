import { Command, Option } from 'commander';
import pc from 'picocolors';
import { action, collectOneOf, UsageError } from '../context.js';
import { CliFailure } from '../errors.js';
import { emit, listTable, type Out, recordTable, say, status } from '../output.js';
import { confirmTyped } from '../prompt.js';

/** Fleet schema rollouts (routes/rollouts.ts; docs/rollouts.md). */

const TENANT_STATUSES = ['pending', 'running', 'succeeded', 'failed', 'parked', 'skipped'];
const OPEN = new Set(['running', 'paused']);

type Counts = Record<string, number>;

interface RolloutWave {
  index: number;
  name: string;
  selector: Record<string, unknown> & { kind: string };
  parallelism: number;
  status: string;
  counts: Counts;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface Rollout {
  id: string;
  toVersion: number;
  status: string;
  onError: string;
  maxFailures: number;
  pauseReason: string | null;
  currentWave: string | null;
  createdBy: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  progress: Counts & { total: number; done: number; percent: number };
  platform: Record<string, unknown>;
  waves: RolloutWave[];
}

interface RolloutDetail extends Rollout {
  tenants: { slug: string; tier: string; wave: number; status: string; error: string | null }[];
  nextCursor: string | null;
}

const selectorText = (s: RolloutWave['selector']) => {
  const { kind, ...rest } = s;
  const v = Object.values(rest)[0];
  return v === undefined ? kind : `${kind} ${Array.isArray(v) ? v.join(',') : String(v)}`;
};

const countsText = (c: Counts) =>
  TENANT_STATUSES.filter((k) => (c[k] ?? 0) > 0)
    .map((k) => `${k} ${c[k]}`)
    .join(', ') || '-';

const waveTable = (r: Rollout) =>
  listTable(r.waves, [
    { header: 'WAVE', value: (w) => w.name },
    { header: 'SELECTS', value: (w) => selectorText(w.selector) },
    { header: 'STATUS', value: (w) => status(w.status) },
    { header: 'TENANTS', value: (w) => countsText(w.counts) },
  ]);

function rolloutTable(r: Rollout): string {
  const head = recordTable([
    ['id', r.id],
    ['to version', r.toVersion],
    ['status', status(r.status)],
    ['on error', `${r.onError} (max failures ${r.maxFailures})`],
    ['paused because', r.pauseReason],
    ['current wave', r.currentWave],
    ['progress', `${r.progress.done}/${r.progress.total} (${r.progress.percent}%)`],
    ['platform', r.platform.status ?? null],
    ['created', r.createdAt],
    ['finished', r.finishedAt],
  ]);
  const d = r as Partial<RolloutDetail>;
  const tenants = d.tenants
    ? `\n${listTable(
        d.tenants,
        [
          { header: 'TENANT', value: (t) => t.slug },
          { header: 'TIER', value: (t) => t.tier },
          { header: 'WAVE', value: (t) => r.waves[t.wave]?.name ?? t.wave },
          { header: 'STATUS', value: (t) => status(t.status) },
          { header: 'ERROR', value: (t) => t.error },
        ],
        'no tenants',
      )}${d.nextCursor ? `\n${pc.dim(`more: --cursor ${d.nextCursor}`)}` : ''}`
    : '';
  return `${head}\n${waveTable(r)}${tenants}`;
}

const listColumns = [
  { header: 'ID', value: (r: Rollout) => r.id },
  { header: 'VERSION', value: (r: Rollout) => r.toVersion },
  { header: 'STATUS', value: (r: Rollout) => status(r.status) },
  { header: 'WAVE', value: (r: Rollout) => r.currentWave },
  { header: 'DONE', value: (r: Rollout) => `${r.progress.done}/${r.progress.total}` },
  { header: 'CREATED', value: (r: Rollout) => r.createdAt },
];

/**
 * `--wait`: a rollout has no event stream, so GET /v1/rollouts/{id} every `intervalMs`, saying on
 * stderr each wave's progress as it changes, until the rollout is no longer running (completed,
 * cancelled, or paused: a paused one needs a person, so the wait ends there too).
 */
export async function watchRollout(
  get: () => Promise<Rollout>,
  out: Out,
  intervalMs = 500,
): Promise<Rollout> {
  const seen = new Map<string, string>();
  for (;;) {
    const r = await get();
    for (const w of r.waves) {
      const line = `wave ${w.name} ${w.status}: ${countsText(w.counts)}`;
      if (seen.get(w.name) !== line) {
        seen.set(w.name, line);
        if (w.status !== 'pending' || w.index === 0) say(out, `  ${pc.cyan('•')} ${line}`);
      }
    }
    if (r.status !== 'running') return r;
    await new Promise((res) => setTimeout(res, intervalMs));
  }
}

export class RolloutNotCompleted extends CliFailure {
  override readonly name = 'RolloutNotCompleted';
  constructor(message: string) {
    super('ROLLOUT_NOT_COMPLETED', message);
  }
}

export function rolloutsCommand(): Command {
  const cmd = new Command('rollouts').description('ship a template version to the fleet, in waves');

  cmd
    .command('list')
    .description('rollouts, newest first, with their progress')
    .option('--limit <n>', 'how many (1-100)', '20')
    .action(
      action(async (ctx, o: { limit: string }) => {
        const page = await ctx
          .client()
          .request<{ items: Rollout[] }>('GET', '/v1/rollouts', { query: { limit: o.limit } });
        emit(ctx.out, page, () => listTable(page.items, listColumns, 'no rollouts'));
      }),
    );

  cmd
    .command('get <id>')
    .description('a rollout: per wave, and a page of its tenants')
    .addOption(
      new Option('--status <status>', 'only tenants in this status (repeat for several)')
        .choices(TENANT_STATUSES)
        .argParser(collectOneOf(TENANT_STATUSES)),
    )
    .option('--wave <name>', "only this wave's tenants")
    .option('--limit <n>', 'tenants per page (1-1000)', '100')
    .option('--cursor <cursor>', 'the nextCursor of the previous page')
    .action(
      action(
        async (ctx, id: string, o: { status?: string[]; wave?: string; limit: string; cursor?: string }) => {
          const r = await ctx.client().request<RolloutDetail>('GET', `/v1/rollouts/${id}`, {
            query: { status: o.status, wave: o.wave, limit: o.limit, cursor: o.cursor },
          });
          emit(ctx.out, r, () => rolloutTable(r));
        },
      ),
    );

  cmd
    .command('create')
    .description('start a rollout (default waves: a canary of 3 tenants, one per tier, then the rest)')
    .requiredOption('--to-version <n>', 'a version of the template directory')
    .option('--canary <n>', 'a first wave of this many tenants, then the rest')
    .option('--waves <json>', 'the waves as JSON, e.g. \'[{"tiers":["pool"]},{"percent":50},{}]\'')
    .addOption(
      new Option('--on-error <mode>', 'on a failure: pause the rollout, or park it and go on').choices([
        'pause',
        'continue',
      ]),
    )
    .option('--max-failures <n>', 'with --on-error pause: failures tolerated before it pauses')
    .option(
      '--wait',
      'poll it every 500 ms, showing each wave, until it is no longer running; exit 1 unless it completed',
    )
    .action(
      action(
        async (
          ctx,
          o: {
            toVersion: string;
            canary?: string;
            waves?: string;
            onError?: string;
            maxFailures?: string;
            wait?: boolean;
          },
        ) => {
          const int = (flag: string, v: string) => {
            const n = Number(v);
            if (!Number.isInteger(n)) throw new UsageError(`${flag} ${v}: expected a whole number`);
            return n;
          };
          if (o.canary !== undefined && o.waves !== undefined)
            throw new UsageError('give --canary or --waves, not both');
          let waves: unknown;
          if (o.waves !== undefined) {
            try {
              waves = JSON.parse(o.waves);
            } catch {
              throw new UsageError('--waves: not JSON (an array of waves)');
            }
            if (!Array.isArray(waves)) throw new UsageError('--waves: expected a JSON array of waves');
          } else if (o.canary !== undefined) {
            waves = [{ name: 'canary', count: int('--canary', o.canary) }, { name: 'rest' }];
          }
          const client = ctx.client();
          const r = await client.request<Rollout>('POST', '/v1/rollouts', {
            body: {
              toVersion: int('--to-version', o.toVersion),
              ...(waves !== undefined ? { waves } : {}),
              ...(o.onError ? { onError: o.onError } : {}),
              ...(o.maxFailures !== undefined ? { maxFailures: int('--max-failures', o.maxFailures) } : {}),
            },
          });
          if (!o.wait) {
            say(ctx.out, `started: rollout ${r.id}; follow it with: tenantry rollouts get ${r.id}`);
            emit(ctx.out, r, () => rolloutTable(r));
            return;
          }
          say(ctx.out, `rollout ${r.id} to version ${r.toVersion}:`);
          const done = await watchRollout(
            () => client.request<RolloutDetail>('GET', `/v1/rollouts/${r.id}`),
            ctx.out,
          );
          emit(ctx.out, done, () => rolloutTable(done));
          if (done.status !== 'completed')
            throw new RolloutNotCompleted(
              `rollout ${done.id} ${done.status}${done.pauseReason ? `: ${done.pauseReason}` : ''}`,
            );
          say(ctx.out, `${pc.green('✔')} rollout ${done.id} completed`);
        },
      ),
    );

  const verb = (name: 'pause' | 'resume' | 'cancel', description: string) =>
    cmd
      .command(`${name} <id>`)
      .description(description)
      .option('-y, --yes', name === 'cancel' ? 'do not ask to type the id' : 'no effect (nothing to confirm)')
      .action(
        action(async (ctx, id: string, o: { yes?: boolean }) => {
          if (name === 'cancel' && !o.yes)
            await confirmTyped(`This cancels rollout ${id}: tenants not started stay at their version.`, id);
          const r = await ctx.client().request<Rollout>('POST', `/v1/rollouts/${id}/${name}`);
          emit(ctx.out, r, () => rolloutTable(r));
        }),
      );
  verb('pause', 'pause a running rollout: no tenant starts; those in flight finish');
  verb('resume', 'resume a paused rollout; the failures that paused it are tried again');
  verb('cancel', 'cancel a rollout: tenants not started stay at their version (skipped)');

  cmd
    .command('retry <id> <slug>')
    .description('retry a parked (or failed) tenant of a rollout, once its cause is fixed')
    .action(
      action(async (ctx, id: string, slug: string) => {
        const r = await ctx.client().request<Rollout>('POST', `/v1/rollouts/${id}/tenants/${slug}/retry`);
        if (!OPEN.has(r.status)) say(ctx.out, `rollout ${r.id} is ${r.status}`);
        emit(ctx.out, r, () => rolloutTable(r));
      }),
    );

  return cmd;
}
