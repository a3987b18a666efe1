// Fleet overview: tenants by tier and status, operations in flight, the last drift run, and
// operations over time.

import { api, apiText, qs } from '../api.js';
import { drawOperationsChart } from '../chart.js';
import { append, badge, duration, errorBox, facts, fill, h, panel, table, when } from '../dom.js';
import { stepsDone } from '../live.js';
import { ACTIVE_OPERATION_STATUSES, TENANT_STATUSES, TIERS } from '../rules.js';

const IN_FLIGHT_REFRESH_MS = 3000;
const CHART_OPERATIONS = 600;

/**
 * Tenants by tier and status, from the `tenantry_tenants` gauge of GET /metrics (counted by the
 * server in one query, however large the fleet).
 */
export async function fleetCounts(signal) {
  const text = await apiText('/metrics', { signal });
  const counts = new Map();
  const re = /^tenantry_tenants\{tier="([a-z]+)",status="([a-z]+)"\} (\d+)/gm;
  for (const m of text.matchAll(re)) counts.set(`${m[1]}/${m[2]}`, Number(m[3]));
  return (tier, status) => counts.get(`${tier}/${status}`) ?? 0;
}

async function fleetTable(signal) {
  const count = await fleetCounts(signal);
  const statuses = TENANT_STATUSES.filter((s) => s !== 'offboarded');
  const link = (n, tier, status) =>
    n === 0 ? '0' : h('a', { href: `#/tenants${qs({ tier, status })}` }, String(n));
  const rows = TIERS.map((tier) => [
    h('span', { class: 'tier' }, tier),
    ...statuses.map((s) => link(count(tier, s), tier, s)),
    String(statuses.reduce((sum, s) => sum + count(tier, s), 0)),
  ]);
  const offboarded = TIERS.reduce((sum, t) => sum + count(t, 'offboarded'), 0);
  return [
    table('Tenants by tier and status', ['Tier', ...statuses, 'Total'], rows),
    h('p', { class: 'muted' }, `${offboarded} offboarded (kept for their audit trail).`),
  ];
}

async function inFlight(body, signal) {
  // A refresh that fails shows its error above the table, which keeps the last answer until one works.
  const problem = h('div', { class: 'refresh-problem' });
  const content = h('div');
  const load = async () => {
    const { items: ops } = await api(
      'GET',
      `/v1/operations${qs({ status: ACTIVE_OPERATION_STATUSES, limit: 200 })}`,
      {
        signal,
      },
    );
    const rows = ops.map((op) => {
      const done = stepsDone(op);
      return [
        h('a', { href: `#/tenants/${op.tenantSlug}` }, op.tenantSlug),
        op.kind,
        badge(op.status),
        op.currentStep ?? '—',
        h(
          'span',
          {},
          h('progress', {
            max: op.steps.length,
            value: done,
            'aria-label': `${op.tenantSlug}: ${done} of ${op.steps.length} steps`,
          }),
          ` ${done}/${op.steps.length}`,
        ),
        duration(Date.now() - Date.parse(op.createdAt)),
      ];
    });
    fill(
      content,
      table(
        'Operations in flight',
        ['Tenant', 'Kind', 'Status', 'Step', 'Progress', 'Age'],
        rows,
        'Nothing in flight.',
      ),
    );
  };
  await load();
  fill(body, problem, content);
  // In flight changes by the second: re-read while the page is open.
  const refresh = () =>
    load().then(
      () => fill(problem),
      (e) => {
        if (e.name === 'AbortError') return;
        fill(problem, errorBox(e), h('p', { class: 'muted' }, 'Showing the last answer; retrying.'));
      },
    );
  const timer = setInterval(refresh, IN_FLIGHT_REFRESH_MS);
  signal.addEventListener('abort', () => clearInterval(timer));
}

async function lastDrift(signal) {
  const { items } = await api('GET', '/v1/drift-runs?limit=1', { signal });
  const run = items[0];
  if (!run) return h('p', { class: 'muted' }, 'No drift run yet.');
  const byCategory = Object.entries(run.summary?.byCategory ?? {});
  return [
    facts([
      ['Run', h('a', { href: `#/drift${qs({ run: run.id })}` }, run.id)],
      ['Status', badge(run.status)],
      ['Finished', when(run.finishedAt)],
      ['Tenants checked', String(run.tenantsChecked)],
      ['Findings', String(run.summary?.findings ?? 0)],
    ]),
    table(
      'Findings by category',
      ['Category', 'Findings'],
      byCategory.map(([c, n]) => [c, String(n)]),
      'No findings.',
    ),
  ];
}

/** The latest operations, newest first: up to CHART_OPERATIONS, a page of 200 at a time. */
async function latestOperations(signal) {
  const items = [];
  let cursor;
  do {
    const page = await api('GET', `/v1/operations${qs({ limit: 200, cursor })}`, { signal });
    items.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor && items.length < CHART_OPERATIONS);
  return items;
}

async function chart(body, signal) {
  const items = await latestOperations(signal);
  drawOperationsChart(body, items);
  if (items.length >= CHART_OPERATIONS)
    body.append(h('p', { class: 'muted small' }, `The latest ${items.length} operations.`));
}

export async function renderOverview(view, { signal }) {
  append(view, [
    h('h1', {}, 'Fleet overview'),
    h(
      'div',
      { class: 'grid' },
      panel('fleet', 'Tenants by tier and status', () => fleetTable(signal)),
      panel('in-flight', 'Operations in flight', (body) => inFlight(body, signal)),
      panel('last-drift', 'Last drift run', () => lastDrift(signal)),
      panel('ops-chart', 'Operations over time', (body) => chart(body, signal)),
    ),
  ]);
}
