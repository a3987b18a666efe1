// Fleet schema rollouts: the list, and one rollout's waves and per-tenant ledger, re-read every 2 s
// while it runs; pause, resume and cancel for the roles that may (rollouts:manage).

import { api, qs } from '../api.js';
import { badge, duration, errorBox, facts, fill, h, table, when } from '../dom.js';

const REREAD_MS = 2000;
const LEDGER_LIMIT = 200;

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

/** Renders `load()`'s answer into `body` with `show`, again every 2 s while `running(answer)`. */
async function followWhile(body, signal, load, show, running) {
  for (;;) {
    const data = await load();
    if (signal.aborted) return;
    fill(body, show(data));
    if (!running(data)) return;
    await sleep(REREAD_MS, signal);
    if (signal.aborted) return;
  }
}

const progressText = (r) => `${r.progress.done} / ${r.progress.total} (${Math.round(r.progress.percent)} %)`;

export async function renderRollouts(view, { signal }) {
  const body = h('div', { id: 'rollouts-list' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(view, h('div', { class: 'page-head' }, h('h1', {}, 'Rollouts')), body);
  await followWhile(
    body,
    signal,
    () => api('GET', `/v1/rollouts${qs({ limit: 100 })}`, { signal }),
    ({ items }) =>
      table(
        'Rollouts',
        ['Rollout', 'To version', 'Status', 'Progress', 'Current wave', 'Created'],
        items.map((r) => [
          h('a', { href: `#/rollouts/${r.id}` }, r.id),
          String(r.toVersion),
          badge(r.status),
          progressText(r),
          r.currentWave ?? '—',
          when(r.createdAt),
        ]),
        'No rollouts yet.',
      ),
    ({ items }) => items.some((r) => r.status === 'running'),
  );
}

function controls(r, session, reload) {
  if (!session.can('rollouts:manage')) return null;
  const verbs = [];
  if (r.status === 'running') verbs.push(['pause', 'Pause'], ['cancel', 'Cancel']);
  if (r.status === 'paused') verbs.push(['resume', 'Resume'], ['cancel', 'Cancel']);
  if (verbs.length === 0) return null;
  const problem = h('div');
  const buttons = verbs.map(([verb, label]) =>
    h(
      'button',
      {
        type: 'button',
        id: `rollout-${verb}`,
        class: verb === 'cancel' ? 'danger' : null,
        onclick: async (e) => {
          const b = e.currentTarget;
          b.disabled = true;
          fill(problem);
          try {
            await api('POST', `/v1/rollouts/${r.id}/${verb}`);
            reload();
          } catch (err) {
            fill(problem, errorBox(err));
            b.disabled = false;
          }
        },
      },
      label,
    ),
  );
  return h('div', { class: 'actions', id: 'rollout-actions' }, buttons, problem);
}

function rolloutView(r, session, reload) {
  return [
    h(
      'section',
      { class: 'panel', id: 'rollout-summary', 'aria-labelledby': 'rollout-summary-title' },
      h('h2', { id: 'rollout-summary-title' }, 'Rollout'),
      facts([
        ['Status', h('span', { id: 'rollout-status' }, badge(r.status))],
        ['To version', String(r.toVersion)],
        ['Progress', progressText(r)],
        ['Current wave', r.currentWave],
        ['On error', `${r.onError} (max failures ${r.maxFailures})`],
        ['Pause reason', r.pauseReason],
        ['Created', `${when(r.createdAt)}${r.createdBy ? ` by ${r.createdBy}` : ''}`],
        ['Started', when(r.startedAt)],
        ['Finished', when(r.finishedAt)],
        ['Duration', typeof r.durationMs === 'number' ? duration(r.durationMs) : '—'],
      ]),
      controls(r, session, reload),
    ),
    h(
      'section',
      { class: 'panel', id: 'rollout-waves', 'aria-labelledby': 'rollout-waves-title' },
      h('h2', { id: 'rollout-waves-title' }, 'Waves'),
      table(
        'Waves',
        ['Wave', 'Status', 'Parallelism', 'Pending', 'Running', 'Succeeded', 'Failed', 'Parked', 'Skipped'],
        r.waves.map((w) => [
          w.name,
          badge(w.status),
          String(w.parallelism),
          ...['pending', 'running', 'succeeded', 'failed', 'parked', 'skipped'].map((s) =>
            String(w.counts[s] ?? 0),
          ),
        ]),
        'No waves.',
      ),
    ),
    h(
      'section',
      { class: 'panel', id: 'rollout-tenants', 'aria-labelledby': 'rollout-tenants-title' },
      h('h2', { id: 'rollout-tenants-title' }, 'Tenants'),
      table(
        'Tenants',
        ['Tenant', 'Tier', 'Wave', 'Status', 'Version', 'Attempts', 'Error'],
        r.tenants.map((t) => [
          h('a', { href: `#/tenants/${t.slug}` }, t.slug),
          t.tier,
          r.waves.find((w) => w.index === t.wave)?.name ?? String(t.wave),
          badge(t.status),
          `${t.fromVersion} → ${t.version}`,
          String(t.attempts),
          t.error ?? t.note ?? '',
        ]),
        'No tenants.',
      ),
      r.nextCursor ? h('p', { class: 'muted small' }, `The first ${LEDGER_LIMIT} tenants.`) : null,
    ),
  ];
}

export async function renderRollout(view, { params, session, signal, refresh }) {
  const [id] = params;
  const body = h('div', { id: 'rollout' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(
    view,
    h('div', { class: 'page-head' }, h('h1', {}, id), h('a', { href: '#/rollouts' }, 'All rollouts')),
    body,
  );
  await followWhile(
    body,
    signal,
    () => api('GET', `/v1/rollouts/${id}${qs({ limit: LEDGER_LIMIT })}`, { signal }),
    (r) => rolloutView(r, session, refresh),
    (r) => r.status === 'running',
  );
}
