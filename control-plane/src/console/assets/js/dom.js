// A small element builder: every value from the API goes in as text, never as HTML.

/**
 * h('a', { href: '#/x', class: 'link' }, 'text', child): an element with its attributes and children.
 * `on*` attributes that are functions become listeners; `null`, `undefined` and `false` are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

/** Appends children, flattening arrays and skipping `null`, `undefined` and `false`. */
export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A status as a badge: its class carries the colour, its text the word (colour is never the only cue). */
export const badge = (status) => h('span', { class: `badge badge-${status}` }, status);

/** A table with a header row; `rows` are arrays of cells (text or elements). */
export function table(caption, headers, rows, empty = 'Nothing yet.') {
  if (rows.length === 0) return h('p', { class: 'muted' }, empty);
  return h(
    'table',
    {},
    h('caption', { class: caption.visible ? '' : 'visually-hidden' }, caption.text ?? caption),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        headers.map((x) => h('th', { scope: 'col' }, x)),
      ),
    ),
    h(
      'tbody',
      {},
      rows.map((r) =>
        h(
          'tr',
          {},
          r.map((cell) => h('td', {}, cell)),
        ),
      ),
    ),
  );
}

/** A definition list from [term, value] pairs. */
export const facts = (pairs) =>
  h(
    'dl',
    { class: 'facts' },
    pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]),
  );

export const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

/** "3 min 04 s" style: a duration in milliseconds, for countdowns and elapsed times. */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  if (d > 0) return `${d} d ${hh} h ${mm} min`;
  if (hh > 0) return `${hh} h ${mm} min ${ss} s`;
  return `${mm} min ${ss} s`;
}

export const bytes = (n) => {
  if (typeof n !== 'number') return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 ** 2).toFixed(1)} MiB`;
};

/** Groups items by a key function, keeping first-seen order. */
export function groupBy(items, key) {
  const groups = new Map();
  for (const x of items) {
    const k = key(x);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(x);
  }
  return groups;
}

/**
 * An error as the console shows it everywhere: the API's code and message (and its request id, for
 * the logs). `role="alert"` so a screen reader announces it.
 */
export const errorBox = (err) =>
  h(
    'div',
    { class: 'error', role: 'alert' },
    h('strong', { class: 'error-code' }, err?.code ?? 'ERROR'),
    ' ',
    h('span', { class: 'error-message' }, err?.message ?? String(err)),
    err?.requestId ? h('span', { class: 'muted' }, ` (request ${err.requestId})`) : null,
  );

/**
 * A titled section that loads on its own: "Loading…", then what `load(body)` returns (or what it
 * put in `body` itself), or the API's error in its place. One failing section leaves the others.
 */
export function panel(id, title, load) {
  const body = h('div', { class: 'panel-body' }, h('p', { class: 'muted' }, 'Loading…'));
  const el = h(
    'section',
    { class: 'panel', id, 'aria-labelledby': `${id}-title` },
    h('h2', { id: `${id}-title` }, title),
    body,
  );
  queueMicrotask(async () => {
    try {
      const content = await load(body);
      if (content !== undefined) fill(body, content);
    } catch (e) {
      if (e.name !== 'AbortError') fill(body, errorBox(e));
    }
  });
  return el;
}
