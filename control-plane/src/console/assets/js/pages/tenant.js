// One tenant: its tier, status and outputs; its operations as a timeline (the one in flight live);
// its drift findings and audit trail; and, for roles that may, promote, roll back and offboard.

import { api, apiBlob, qs } from '../api.js';
import { append, badge, bytes, errorBox, facts, fill, h, panel, table, when } from '../dom.js';
import { findingsView } from '../findings.js';
import { countdown, operationPanel, stepList, TERMINAL } from '../live.js';
import { PROMOTIONS, SUSPENSION_REASONS } from '../rules.js';

const TIMELINE_LIMIT = 50;
const AUDIT_LIMIT = 200;

/** A button that stays disabled until `input` holds exactly `expected`. */
function typedConfirmation(id, label, expected, button) {
  const input = h('input', {
    id,
    name: id,
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-describedby': `${id}-help`,
  });
  const sync = () => {
    button.disabled = input.value !== expected;
  };
  input.addEventListener('input', sync);
  sync();
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    input,
    h('p', { id: `${id}-help`, class: 'muted small' }, 'Type ', h('code', {}, expected), ' to confirm.'),
  );
}

/**
 * An action as a small form: its title and text, its fields, and a button that sends `call()`. The
 * API's error shows in place; an accepted action hands its answer to `onAccepted` (the page re-reads).
 */
function actionForm({ id, title, intro, fields = [], button, call, onAccepted }) {
  const problem = h('div');
  const form = h(
    'form',
    { class: 'action', method: 'post', 'aria-labelledby': `${id}-title` },
    h('h3', { id: `${id}-title` }, title),
    intro,
    fields,
    button,
    problem,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (button.disabled) return;
    button.disabled = true;
    fill(problem);
    try {
      onAccepted(await call());
    } catch (err) {
      fill(problem, errorBox(err));
      button.disabled = false;
    }
  });
  return form;
}

function promoteForm(tenant, refresh) {
  const targets = PROMOTIONS.filter(([from]) => from === tenant.tier).map(([, to]) => to);
  if (targets.length === 0) return h('p', { class: 'muted' }, `No promotion from ${tenant.tier}.`);
  const target = h(
    'select',
    { id: 'promote-target', name: 'targetTier' },
    targets.map((t) => h('option', { value: t }, t)),
  );
  const button = h('button', { type: 'submit', id: 'promote-button' }, 'Promote');
  return actionForm({
    id: 'promote',
    title: 'Promote',
    intro: h(
      'p',
      { class: 'muted small' },
      'Moves the tenant online: its rows are copied, later writes stream across, and only its own writes pause for the cutover.',
    ),
    fields: [
      h('div', { class: 'field' }, h('label', { for: 'promote-target' }, 'To tier'), target),
      typedConfirmation('promote-confirm', 'Confirm the tenant', tenant.slug, button),
    ],
    button,
    call: () => api('POST', `/v1/tenants/${tenant.slug}/promotions`, { body: { targetTier: target.value } }),
    onAccepted: refresh,
  });
}

function rollbackForm(tenant, promotion, signal, refresh) {
  const button = h(
    'button',
    { type: 'submit', id: 'rollback-button', class: 'warning' },
    `Roll back to ${promotion.fromTier}`,
  );
  return actionForm({
    id: 'rollback',
    title: 'Roll back the promotion',
    intro: h(
      'p',
      {},
      `Moves ${tenant.slug} back to ${promotion.fromTier}, with the rows written since the cutover. The window closes in `,
      countdown(promotion.rollbackUntil, signal, () => {
        button.disabled = true;
      }),
      ` (at ${when(promotion.rollbackUntil)}).`,
    ),
    button,
    call: () => api('POST', `/v1/tenants/${tenant.slug}/promotions/${promotion.operationId}/rollback`),
    onAccepted: refresh,
  });
}

function offboardForm(tenant, refresh) {
  const button = h('button', { type: 'submit', id: 'offboard-button', class: 'danger' }, 'Offboard');
  return actionForm({
    id: 'offboard',
    title: 'Offboard',
    intro: h('p', { class: 'muted small' }, 'Removes its data, login and key. Its audit trail is kept.'),
    fields: [typedConfirmation('offboard-confirm', 'Confirm the tenant', tenant.slug, button)],
    button,
    call: () => api('DELETE', `/v1/tenants/${tenant.slug}`, { headers: { confirm: tenant.slug } }),
    onAccepted: refresh,
  });
}

function suspendForm(tenant, refresh) {
  const reason = h(
    'select',
    { id: 'suspend-reason', name: 'reason' },
    SUSPENSION_REASONS.map((r) => h('option', { value: r }, r)),
  );
  const button = h('button', { type: 'submit', id: 'suspend-button', class: 'danger' }, 'Suspend');
  return actionForm({
    id: 'suspend',
    title: 'Suspend',
    intro: h(
      'p',
      { class: 'muted small' },
      'Keeps every row; the data plane cannot use the tenant until it is reactivated. sales-ops may suspend for non-payment only.',
    ),
    fields: [
      h('div', { class: 'field' }, h('label', { for: 'suspend-reason' }, 'Reason'), reason),
      typedConfirmation('suspend-confirm', 'Confirm the tenant', tenant.slug, button),
    ],
    button,
    call: () => api('POST', `/v1/tenants/${tenant.slug}/suspension`, { body: { reason: reason.value } }),
    onAccepted: refresh,
  });
}

function reactivateForm(tenant, refresh) {
  const button = h('button', { type: 'submit', id: 'reactivate-button' }, 'Reactivate');
  return actionForm({
    id: 'reactivate',
    title: 'Reactivate',
    intro: h('p', { class: 'muted small' }, 'Gives back exactly what the suspension took.'),
    button,
    call: () => api('DELETE', `/v1/tenants/${tenant.slug}/suspension`),
    onAccepted: refresh,
  });
}

function rotateCredentialsForm(tenant, refresh) {
  const button = h('button', { type: 'submit', id: 'rotate-credentials-button' }, 'Rotate credentials');
  return actionForm({
    id: 'rotate-credentials',
    title: 'Rotate credentials',
    intro: h(
      'p',
      { class: 'muted small' },
      "A new password on the idle login; the old one keeps working for the tier's grace period.",
    ),
    button,
    call: () => api('POST', `/v1/tenants/${tenant.slug}/credential-rotations`, { body: {} }),
    onAccepted: refresh,
  });
}

function rotateKeyForm(tenant, refresh) {
  const button = h('button', { type: 'submit', id: 'rotate-key-button' }, 'Rotate data key');
  return actionForm({
    id: 'rotate-key',
    title: 'Rotate data key',
    intro: h(
      'p',
      { class: 'muted small' },
      'A new data key; every version of the secrets is re-encrypted under it and the old key destroyed.',
    ),
    button,
    call: () => api('POST', `/v1/tenants/${tenant.slug}/key-rotations`),
    onAccepted: refresh,
  });
}

function exportForm(tenant, refresh) {
  const button = h('button', { type: 'submit', id: 'export-button' }, 'Export');
  return actionForm({
    id: 'export',
    title: 'Export',
    intro: h('p', { class: 'muted small' }, "Writes the tenant's rows to one archive (listed below)."),
    button,
    call: () => api('POST', `/v1/tenants/${tenant.slug}/exports`),
    onAccepted: refresh,
  });
}

function actions(tenant, session, signal, refresh) {
  const canPromote = session.can('tenants:promote');
  const canOffboard = session.can('tenants:offboard');
  const canSuspend = session.can('tenants:suspend');
  const canRotate = session.can('tenants:rotate');
  const canExport = session.can('tenants:export');
  if (!canPromote && !canOffboard && !canSuspend && !canRotate && !canExport) return null;
  const busy = tenant.activeOperation !== null;
  const promotion = tenant.promotion;
  const forms = [];
  if (busy) forms.push(h('p', { class: 'muted' }, 'Actions open again when the operation in flight ends.'));
  else {
    const isActive = tenant.status === 'active';
    if (canPromote && isActive) forms.push(promoteForm(tenant, refresh));
    if (canPromote && promotion?.rollbackAvailable)
      forms.push(rollbackForm(tenant, promotion, signal, refresh));
    // The server refuses a suspended tenant's rollback (TENANT_SUSPENDED, and rollbackAvailable is
    // false) until it is reactivated: say so while the window is still open.
    const windowOpen =
      promotion && !promotion.rolledBack && Date.parse(promotion.rollbackUntil ?? '') > Date.now();
    if (canPromote && tenant.status === 'suspended' && windowOpen)
      forms.push(
        h(
          'p',
          { class: 'muted', id: 'rollback-suspended' },
          `Rollback is possible until ${when(promotion.rollbackUntil)} once the tenant is reactivated.`,
        ),
      );
    if (canRotate && isActive)
      forms.push(rotateCredentialsForm(tenant, refresh), rotateKeyForm(tenant, refresh));
    if (canExport && (isActive || tenant.status === 'suspended')) forms.push(exportForm(tenant, refresh));
    if (canSuspend && isActive) forms.push(suspendForm(tenant, refresh));
    if (canSuspend && tenant.status === 'suspended') forms.push(reactivateForm(tenant, refresh));
    if (canOffboard && tenant.status !== 'offboarding' && tenant.status !== 'offboarded')
      forms.push(offboardForm(tenant, refresh));
  }
  if (forms.length === 0) return null;
  return h(
    'section',
    { class: 'panel', id: 'actions', 'aria-labelledby': 'actions-title' },
    h('h2', { id: 'actions-title' }, 'Actions'),
    h('div', { class: 'actions' }, forms),
  );
}

/** Fetches an archive with the token (a plain link could not send it) and offers it as a file. */
function downloadButton(e, signal) {
  const out = h('span', { class: 'download' });
  const button = h(
    'button',
    {
      type: 'button',
      class: 'secondary',
      'data-export': e.id,
      'aria-label': `Download export ${e.id}`,
      onclick: async () => {
        button.disabled = true;
        fill(out);
        try {
          const { blob, filename } = await apiBlob(`/v1/exports/${e.id}/download`, { signal });
          const link = h('a', { href: URL.createObjectURL(blob), download: filename }, `Save ${filename}`);
          fill(out, ' ', link);
          link.click();
        } catch (err) {
          if (err.name !== 'AbortError') fill(out, errorBox(err));
        } finally {
          button.disabled = false;
        }
      },
    },
    'Download',
  );
  return h('span', {}, button, out);
}

async function exportsList(slug, session, signal) {
  const { items } = await api('GET', `/v1/tenants/${slug}/exports${qs({ limit: 20 })}`, { signal });
  const canDownload = session.can('tenants:export');
  return table(
    'Exports',
    ['Created', 'Export', 'Status', 'Size', 'Expires', 'Archive'],
    items.map((e) => [
      when(e.createdAt),
      h('code', {}, e.id),
      badge(e.status),
      bytes(e.bytes),
      when(e.expiresAt),
      e.status === 'ready' && canDownload ? downloadButton(e, signal) : e.error ? e.error : '',
    ]),
    'No exports.',
  );
}

function timeline(ops, liveId) {
  return h(
    'ol',
    { class: 'timeline' },
    ops.map((op) =>
      h(
        'li',
        { class: `timeline-item op-${op.status}`, 'data-operation': op.id },
        h(
          'div',
          { class: 'timeline-head' },
          h('strong', {}, op.params?.rollbackOf ? 'rollback' : op.kind),
          op.kind === 'promote' ? ` ${op.params?.fromTier} → ${op.params?.toTier}` : '',
          ' ',
          badge(op.status),
          ' ',
          h('time', { datetime: op.createdAt }, when(op.createdAt)),
          op.id === liveId ? h('span', { class: 'muted' }, ' (shown above)') : null,
        ),
        op.error ? h('p', { class: 'error' }, op.error) : null,
        h('details', {}, h('summary', {}, `${op.steps.length} steps · ${op.id}`), stepList(op)),
      ),
    ),
  );
}

async function auditTrail(slug, session, signal) {
  if (!session.can('audit:read'))
    return h(
      'p',
      { class: 'muted' },
      `The audit trail needs the audit:read permission, which role ${session.role} lacks.`,
    );
  const { items } = await api('GET', `/v1/audit${qs({ tenant: slug, limit: AUDIT_LIMIT })}`, { signal });
  const rows = items
    .slice()
    .reverse()
    .map((a) => [
      when(a.at),
      a.action,
      `${a.actorName ?? '—'}${a.role ? ` (${a.role})` : ''}`,
      a.operationId ?? '—',
      a.requestId ?? '—',
    ]);
  return [
    table('Audit trail', ['At', 'Action', 'Actor', 'Operation', 'Request'], rows, 'No audit records.'),
    items.length === AUDIT_LIMIT
      ? h('p', { class: 'muted small' }, `The first ${AUDIT_LIMIT} records.`)
      : null,
  ];
}

async function drift(slug, signal) {
  const d = await api('GET', `/v1/tenants/${slug}/drift`, { signal });
  if (!d.runId) return h('p', { class: 'muted' }, 'No drift sweep has finished yet.');
  return [
    h(
      'p',
      { class: 'muted small' },
      `Sweep ${d.runId}, observed ${when(d.observedAt)}.`,
      d.skipped ? ` Skipped: ${d.skipped.reason} (${d.skipped.detail}).` : '',
    ),
    findingsView(d.findings),
  ];
}

/**
 * The operation this page followed to its end, kept across the page's re-render so the user sees
 * how it ended (its steps, a promotion's numbers) above the updated tenant.
 */
let finished = null;
/**
 * The operation an action on this page just started ({slug, id}). The page re-reads the tenant once
 * the action is accepted; a quick operation may have ended by then, and no longer be the tenant's
 * operation in flight: it is then read by its id and shown as just finished.
 */
let started = null;

export async function renderTenant(view, { params, session, signal, navigate, refresh }) {
  const [slug] = params;
  if (finished?.tenantSlug !== slug) finished = null;
  if (started?.slug !== slug) started = null;
  const [tenant, ops] = await Promise.all([
    api('GET', `/v1/tenants/${slug}`, { signal }),
    api('GET', `/v1/operations${qs({ tenant: slug, limit: TIMELINE_LIMIT })}`, { signal }),
  ]);
  // When the operation in flight ends, the page is read again (status, tier, actions); an
  // offboarding that ends leaves nothing to show but the list.
  const onEnd = (op) => {
    if (op.kind === 'offboard' && op.status === 'succeeded') return navigate('#/tenants');
    finished = op;
    refresh();
  };
  const accepted = (body) => {
    if (body?.operation?.id) started = { slug, id: body.operation.id };
    refresh();
  };
  const followedId = tenant.activeOperation?.id ?? started?.id;
  started = null;
  const followed = followedId ? await api('GET', `/v1/operations/${followedId}`, { signal }) : null;
  // The tenant's operation in flight is followed to its end, which re-reads the page. One this page
  // started that had already ended when the tenant was read is shown as it ended.
  const following = followed !== null && (tenant.activeOperation !== null || !TERMINAL.has(followed.status));
  if (followed && !following) finished = followed;
  const live = following ? followed : finished;

  append(view, [
    h('div', { class: 'page-head' }, h('h1', {}, tenant.slug), h('span', { class: 'muted' }, tenant.name)),
    h(
      'div',
      { class: 'grid' },
      h(
        'section',
        { class: 'panel', id: 'summary', 'aria-labelledby': 'summary-title' },
        h('h2', { id: 'summary-title' }, 'Tenant'),
        facts([
          ['Tier', h('span', { class: 'tier', id: 'tenant-tier' }, tenant.tier)],
          ['Status', h('span', { id: 'tenant-status' }, badge(tenant.status))],
          ['Region', tenant.region],
          ['Plan', tenant.plan],
          ['Contact', tenant.contactEmail],
          ['Template version', String(tenant.templateVersion)],
          ['Created', when(tenant.createdAt)],
          ['Updated', when(tenant.updatedAt)],
          ['Id', h('code', {}, tenant.id)],
        ]),
      ),
      h(
        'section',
        { class: 'panel', id: 'outputs', 'aria-labelledby': 'outputs-title' },
        h('h2', { id: 'outputs-title' }, 'Outputs'),
        table(
          'Outputs',
          ['Name', 'Value'],
          Object.entries(tenant.outputs).map(([k, v]) => [k, h('code', {}, String(v))]),
          'No outputs yet.',
        ),
      ),
    ),
    live
      ? h(
          'section',
          { class: 'panel', id: 'in-flight', 'aria-labelledby': 'in-flight-title' },
          h('h2', { id: 'in-flight-title' }, TERMINAL.has(live.status) ? 'Just finished' : 'In flight'),
          operationPanel(live, {
            signal,
            // A finished one shown again calls nothing: only the end of a followed one re-reads the page.
            onEnd: following ? onEnd : undefined,
            title: `${live.params?.rollbackOf ? 'rollback' : live.kind} ${live.id}`,
          }),
        )
      : null,
    actions(tenant, session, signal, accepted),
    h(
      'section',
      { class: 'panel', id: 'timeline', 'aria-labelledby': 'timeline-title' },
      h('h2', { id: 'timeline-title' }, 'Operations'),
      ops.items.length > 0 ? timeline(ops.items, live?.id) : h('p', { class: 'muted' }, 'No operations.'),
    ),
    panel('exports', 'Exports', () => exportsList(slug, session, signal)),
    panel('drift', 'Drift', () => drift(slug, signal)),
    panel('audit', 'Audit trail', () => auditTrail(slug, session, signal)),
  ]);
}
