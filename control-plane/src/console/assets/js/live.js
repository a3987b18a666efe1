// An operation followed live: its steps and progress, updated from its server-sent events.

import { api, streamEvents } from './api.js';
import { badge, bytes, duration, errorBox, facts, fill, h, table, when } from './dom.js';
import { ACTIVE_OPERATION_STATUSES, OPERATION_STATUSES } from './rules.js';

/** An operation's end states: every status but queued and running. */
export const TERMINAL = new Set(OPERATION_STATUSES.filter((s) => !ACTIVE_OPERATION_STATUSES.includes(s)));

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

/** Steps done (succeeded or skipped) out of all, for a progress bar. */
export const stepsDone = (op) =>
  op.steps.filter((s) => s.status === 'succeeded' || s.status === 'skipped').length;

export function stepList(op) {
  return h(
    'ol',
    { class: 'steps' },
    op.steps.map((s) =>
      h(
        'li',
        { class: `step step-${s.status}`, 'data-step': s.name },
        h('span', { class: 'step-name' }, s.name),
        ' ',
        badge(s.status),
        s.startedAt && s.finishedAt
          ? h('span', { class: 'muted' }, ` ${Date.parse(s.finishedAt) - Date.parse(s.startedAt)} ms`)
          : null,
        s.error
          ? h(
              'div',
              { class: 'step-error' },
              s.errorCode ? h('strong', { class: 'error-code' }, `${s.errorCode} `) : null,
              s.error,
            )
          : null,
      ),
    ),
  );
}

/** A promotion's progress: rows copied per table, replication lag, the write freeze, the window. */
export function promotionProgress(op) {
  const p = op.progress ?? {};
  const rows = Object.entries(p.rowsCopied ?? {});
  return h(
    'div',
    { class: 'promotion-progress' },
    facts([
      ['From → to', `${op.params?.fromTier ?? '?'} → ${op.params?.toTier ?? '?'}`],
      ['Replication lag', bytes(p.replicationLagBytes)],
      ['Write freeze', typeof p.writeFreezeMs === 'number' ? `${p.writeFreezeMs} ms` : '—'],
      ['Cut over at', when(p.cutoverAt)],
      ['Rollback window until', when(p.rollbackUntil)],
    ]),
    rows.length > 0
      ? table(
          'Rows copied per table',
          ['Table', 'Rows copied'],
          rows.map(([t, n]) => [t, String(n)]),
        )
      : null,
  );
}

/**
 * A panel showing `initial` and following it until it ends. Calls `onEnd(op)` once with the final
 * operation. The stream is the API's own (GET /v1/operations/{id}/events); when it closes before
 * the end (the server's own limit, a restart), the panel reads the operation and follows it again.
 */
export function operationPanel(initial, { signal, onEnd, title } = {}) {
  let op = initial;
  let ended = false;
  const body = h('div');
  const announcer = h('p', { class: 'visually-hidden', 'aria-live': 'polite' });
  const problem = h('div');
  const el = h(
    'section',
    { class: 'live', 'data-operation': op.id, 'aria-label': title ?? `Operation ${op.id}` },
    body,
    problem,
    announcer,
  );

  const render = () => {
    const done = stepsDone(op);
    el.dataset.status = op.status;
    fill(
      body,
      h(
        'h3',
        {},
        title ?? `${op.kind} ${op.id}`,
        ' ',
        badge(op.status),
        TERMINAL.has(op.status) ? null : h('span', { class: 'live-dot', title: 'live' }, ' live'),
      ),
      h('progress', {
        max: op.steps.length,
        value: done,
        'aria-label': `${done} of ${op.steps.length} steps done`,
      }),
      h('span', { class: 'muted' }, ` ${done} of ${op.steps.length} steps`),
      op.error ? h('p', { class: 'error' }, h('strong', {}, `${op.kind} ${op.status}: `), op.error) : null,
      op.kind === 'promote' ? promotionProgress(op) : null,
      stepList(op),
    );
  };

  const finish = () => {
    if (ended) return;
    ended = true;
    render();
    announcer.textContent = `${op.kind} ${op.status}`;
    onEnd?.(op);
  };

  const onEvent = (name, data) => {
    if (name === 'step') {
      op = { ...op, steps: op.steps.map((s) => (s.name === data.name ? data : s)) };
      if (data.status === 'running') op.currentStep = data.name;
      announcer.textContent = `${data.name} ${data.status}`;
      render();
    } else if (name === 'progress') {
      // A promotion's rows copied, lag, freeze and rollback deadline, as they change.
      op = { ...op, currentStep: data.currentStep, progress: { ...op.progress, ...data.progress } };
      render();
    } else if (name === 'end') {
      op = data;
      finish();
    }
  };

  const follow = async () => {
    let failures = 0;
    while (!signal?.aborted && !ended) {
      try {
        await streamEvents(op.id, onEvent, signal);
        if (ended) return;
        op = await api('GET', `/v1/operations/${op.id}`, { signal });
        fill(problem);
        if (TERMINAL.has(op.status)) return finish();
        render();
        failures = 0;
      } catch (e) {
        if (e.name === 'AbortError' || signal?.aborted) return;
        fill(problem, errorBox(e), h('p', { class: 'muted' }, 'Reconnecting…'));
        failures++;
        await sleep(Math.min(10_000, 500 * 2 ** failures), signal);
      }
    }
  };

  render();
  if (TERMINAL.has(op.status)) finish();
  else void follow();
  return el;
}

/** Counts down to `until` (ISO), updating `el` every second until then or until `signal` aborts. */
export function countdown(until, signal, onZero) {
  const el = h('span', { class: 'countdown', role: 'timer' });
  const end = Date.parse(until);
  const tick = () => {
    const left = end - Date.now();
    el.textContent = left > 0 ? duration(left) : 'closed';
    if (left <= 0) {
      clearInterval(timer);
      onZero?.();
    }
  };
  const timer = setInterval(tick, 1000);
  signal?.addEventListener('abort', () => clearInterval(timer));
  tick();
  return el;
}
