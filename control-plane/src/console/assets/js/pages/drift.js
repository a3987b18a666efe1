// Drift: the sweeps, one sweep's findings grouped by category and tenant, and the policy editor.

import { api, qs } from '../api.js';
import { append, badge, errorBox, facts, fill, h, panel, table, when } from '../dom.js';
import { findingsView } from '../findings.js';
import { TIERS } from '../rules.js';

const RUNS = 20;
const RUN_POLL_MS = 1000;
const FINISHED = new Set(['succeeded', 'failed']);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function runsTable(runs, selected) {
  return table(
    'Drift runs',
    ['Run', 'Trigger', 'Status', 'Started', 'Took', 'Tenants checked', 'Findings', 'Open'],
    runs.map((r) => [
      h(
        'a',
        { href: `#/drift${qs({ run: r.id })}`, 'aria-current': r.id === selected ? 'true' : null },
        r.id,
      ),
      r.trigger,
      badge(r.status),
      when(r.startedAt ?? r.createdAt),
      r.durationMs === null ? '—' : `${r.durationMs} ms`,
      String(r.tenantsChecked),
      String(r.summary?.findings ?? 0),
      String(r.summary?.open ?? 0),
    ]),
    'No drift run yet.',
  );
}

/** One run: what it checked and skipped, then its findings by category, then by tenant. */
async function runDetail(body, id, signal) {
  let run = await api('GET', `/v1/drift-runs/${id}`, { signal });
  // A run just requested: follow it to its end (drift runs have no event stream; a second a read).
  while (!FINISHED.has(run.status) && !signal.aborted) {
    fill(
      body,
      facts([
        ['Run', run.id],
        ['Status', badge(run.status)],
      ]),
      h('p', { class: 'muted' }, 'Sweeping…'),
    );
    await sleep(RUN_POLL_MS);
    run = await api('GET', `/v1/drift-runs/${id}`, { signal });
  }
  fill(
    body,
    facts([
      ['Run', h('code', {}, run.id)],
      ['Status', badge(run.status)],
      ['Trigger', `${run.trigger}${run.requestedBy ? ` by ${run.requestedBy}` : ''}`],
      ['Finished', when(run.finishedAt)],
      ['Tenants checked', String(run.tenantsChecked)],
      ['Skipped', String(run.skipped.length)],
    ]),
    run.error ? h('p', { class: 'error' }, run.error) : null,
    run.skipped.length > 0
      ? table(
          'Tenants skipped',
          ['Tenant', 'Reason', 'Detail'],
          run.skipped.map((s) => [h('a', { href: `#/tenants/${s.slug}` }, s.slug), s.reason, s.detail]),
        )
      : null,
    h('h3', {}, 'Findings'),
    findingsView(run.findings, { byTenant: true }),
    run.findingsTruncated ? h('p', { class: 'muted small' }, 'The list is truncated.') : null,
  );
  return run;
}

function policyEditor(onSaved) {
  const scope = h(
    'select',
    { id: 'policy-scope', name: 'scope' },
    ['global', 'tier', 'tenant'].map((s) => h('option', { value: s }, s)),
  );
  const tier = h(
    'select',
    { id: 'policy-tier', name: 'tier' },
    TIERS.map((t) => h('option', { value: t }, t)),
  );
  const tenant = h('input', {
    id: 'policy-tenant',
    name: 'tenant',
    autocomplete: 'off',
    spellcheck: 'false',
  });
  const mode = h(
    'select',
    { id: 'policy-mode', name: 'mode' },
    h('option', { value: '' }, 'inherit'),
    h('option', { value: 'report' }, 'report'),
    h('option', { value: 'remediate' }, 'remediate'),
  );
  const ignore = h('textarea', {
    id: 'policy-ignore',
    name: 'ignoreFields',
    rows: 3,
    'aria-describedby': 'policy-ignore-help',
  });
  const tierField = h('div', { class: 'field' }, h('label', { for: 'policy-tier' }, 'Tier'), tier);
  const tenantField = h(
    'div',
    { class: 'field' },
    h('label', { for: 'policy-tenant' }, 'Tenant slug'),
    tenant,
  );
  const sync = () => {
    tierField.hidden = scope.value !== 'tier';
    tenantField.hidden = scope.value !== 'tenant';
  };
  scope.addEventListener('change', sync);
  sync();
  const button = h('button', { type: 'submit' }, 'Save policy');
  const problem = h('div');
  const form = h(
    'form',
    { class: 'action', method: 'post', 'aria-labelledby': 'policy-edit-title' },
    h('h3', { id: 'policy-edit-title' }, 'Set a policy'),
    h('div', { class: 'field' }, h('label', { for: 'policy-scope' }, 'Scope'), scope),
    tierField,
    tenantField,
    h('div', { class: 'field' }, h('label', { for: 'policy-mode' }, 'Mode'), mode),
    h(
      'div',
      { class: 'field' },
      h('label', { for: 'policy-ignore' }, 'Ignored fields'),
      ignore,
      h(
        'p',
        { id: 'policy-ignore-help', class: 'muted small' },
        'One a line: resource.field (role.connectionLimit), resource.*, or a prefix ending in * (table.privileges:*).',
      ),
    ),
    button,
    problem,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    fill(problem);
    const body = {
      mode: mode.value || null,
      ignoreFields: ignore.value
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean),
    };
    if (scope.value === 'tier') body.tier = tier.value;
    if (scope.value === 'tenant') body.tenant = tenant.value.trim();
    try {
      onSaved(await api('PUT', '/v1/drift-policies', { body }));
    } catch (err) {
      fill(problem, errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

const policiesTable = (items) =>
  table(
    'Drift policies',
    ['Scope', 'Tier or tenant', 'Mode', 'Ignored fields', 'Updated'],
    items.map((p) => [
      p.scope,
      p.tier ?? p.tenantSlug ?? '—',
      p.mode ?? 'inherit',
      p.ignoreFields.length > 0 ? p.ignoreFields.join(', ') : '—',
      `${when(p.updatedAt)}${p.updatedBy ? ` by ${p.updatedBy}` : ''}`,
    ]),
    'No policies: every tenant is reported, not remediated.',
  );

async function policies(body, session, signal) {
  const list = h('div');
  const show = (items) => fill(list, policiesTable(items));
  show((await api('GET', '/v1/drift-policies', { signal })).items);
  fill(
    body,
    h(
      'p',
      { class: 'muted small' },
      'A tenant inherits from its tier, a tier from the fleet; the default is report.',
    ),
    list,
    session.can('tenants:reconcile') ? policyEditor((out) => show(out.items)) : null,
  );
}

export async function renderDrift(view, { query, session, signal, navigate, refresh }) {
  const { items: runs } = await api('GET', `/v1/drift-runs${qs({ limit: RUNS })}`, { signal });
  const selected = query.get('run') ?? runs.find((r) => FINISHED.has(r.status))?.id ?? runs[0]?.id;
  const runNow = h('button', { type: 'button', id: 'drift-run-now' }, 'Run a sweep now');
  const problem = h('div');
  runNow.addEventListener('click', async () => {
    runNow.disabled = true;
    fill(problem);
    try {
      const run = await api('POST', '/v1/drift-runs', { signal });
      navigate(`#/drift${qs({ run: run.id })}`);
    } catch (err) {
      fill(problem, errorBox(err));
      runNow.disabled = false;
    }
  });
  append(view, [
    h('div', { class: 'page-head' }, h('h1', {}, 'Drift'), session.can('tenants:reconcile') ? runNow : null),
    problem,
    panel('runs', 'Runs', () => runsTable(runs, selected)),
    selected
      ? panel('run', `Run ${selected}`, async (body) => {
          const run = await runDetail(body, selected, signal);
          // The list showed it queued or running: read the list again now that it ended.
          const listed = runs.find((r) => r.id === run.id);
          if (listed && listed.status !== run.status) refresh();
        })
      : null,
    panel('policies', 'Policies', (body) => policies(body, session, signal)),
  ]);
}
