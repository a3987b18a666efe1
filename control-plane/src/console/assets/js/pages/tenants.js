// Tenants: filtered by tier and status (by the API), searched by slug or name, a page at a time.

import { api, qs } from '../api.js';
import { append, badge, fill, h, table, when } from '../dom.js';
import { SLUG_PATTERN, TENANT_STATUSES, TIERS } from '../rules.js';

const PAGE_SIZE = 25;
const MAX_PAGE_SIZE = 200;
const SEARCH_BATCH = 500;
const SLUG = new RegExp(SLUG_PATTERN);

const select = (id, label, values, current) =>
  h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    h(
      'select',
      { id, name: id },
      h('option', { value: '' }, 'any'),
      values.map((v) => h('option', { value: v, selected: v === current }, v)),
    ),
  );

/**
 * The filters live in the page's address (#/tenants?tier=…&status=…&q=…), so a filtered list can
 * be bookmarked; the page cursor is kept in memory (Previous walks back through the cursors seen).
 */
export async function renderTenants(view, { query, signal, navigate, session }) {
  const tier = query.get('tier') ?? '';
  const status = query.get('status') ?? '';
  const q = (query.get('q') ?? '').trim().toLowerCase();
  // ?limit= sets the page size (1 to 200), kept when the filters change.
  const pageSize = Math.min(
    MAX_PAGE_SIZE,
    Math.max(1, Number.parseInt(query.get('limit') ?? '', 10) || PAGE_SIZE),
  );
  const sized = pageSize === PAGE_SIZE ? undefined : pageSize;
  const search = h('input', { id: 'q', name: 'q', type: 'search', value: q, 'aria-describedby': 'q-help' });
  const form = h(
    'form',
    { class: 'filters', role: 'search', method: 'post', 'aria-label': 'Filter tenants' },
    h('div', { class: 'field' }, h('label', { for: 'q' }, 'Search'), search),
    select('tier', 'Tier', TIERS, tier),
    select('status', 'Status', TENANT_STATUSES, status),
    h('button', { type: 'submit' }, 'Apply'),
    h('p', { id: 'q-help', class: 'muted small' }, 'Search by slug or name; an exact slug opens the tenant.'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    navigate(
      `#/tenants${qs({ q: data.get('q').trim(), tier: data.get('tier'), status: data.get('status'), limit: sized })}`,
    );
  });
  const results = h('div', { 'aria-live': 'polite' });
  append(view, [
    h(
      'div',
      { class: 'page-head' },
      h('h1', {}, 'Tenants'),
      session.can('tenants:create')
        ? h('a', { class: 'button', href: '#/onboard' }, 'Onboard a tenant')
        : null,
    ),
    form,
    results,
  ]);

  // An exact slug goes straight to its tenant (the API has no search; a slug is a key).
  if (q && SLUG.test(q)) {
    const found = await api('GET', `/v1/tenants/${q}`, { signal }).catch((e) =>
      e.code === 'TENANT_NOT_FOUND' ? null : Promise.reject(e),
    );
    if (found) return navigate(`#/tenants/${found.slug}`);
  }

  // Without a search, one API page per console page. With one, API pages are read (500 at a time)
  // until a console page of matches is found or the list ends.
  const matches = (t) => t.slug.includes(q) || t.name.toLowerCase().includes(q);
  const read = async (cursor) => {
    const limit = q ? SEARCH_BATCH : pageSize;
    const items = [];
    let next = cursor;
    let scanned = 0;
    do {
      const page = await api('GET', `/v1/tenants${qs({ tier, status, limit, cursor: next })}`, { signal });
      scanned += page.items.length;
      items.push(...(q ? page.items.filter(matches) : page.items));
      next = page.nextCursor;
    } while (q && next && items.length < pageSize);
    return { items, next, scanned };
  };

  const cursors = [undefined];
  const show = async (index) => {
    fill(results, h('p', { class: 'muted' }, 'Loading…'));
    const { items, next: nextCursor, scanned } = await read(cursors[index]);
    if (nextCursor) cursors[index + 1] = nextCursor;
    const rows = items.map((t) => [
      h('a', { href: `#/tenants/${t.slug}` }, t.slug),
      t.name,
      h('span', { class: 'tier' }, t.tier),
      badge(t.status),
      when(t.createdAt),
    ]);
    const prev = h('button', { type: 'button', class: 'secondary', disabled: index === 0 }, 'Previous page');
    const next = h('button', { type: 'button', class: 'secondary', disabled: !nextCursor }, 'Next page');
    prev.addEventListener('click', () => show(index - 1));
    next.addEventListener('click', () => show(index + 1));
    fill(
      results,
      table(
        'Tenants',
        ['Slug', 'Name', 'Tier', 'Status', 'Created'],
        rows,
        q ? `No tenant matches “${q}”.` : 'No tenants match.',
      ),
      q ? h('p', { class: 'muted small' }, `${items.length} matches among ${scanned} tenants read.`) : null,
      h('nav', { class: 'pager', 'aria-label': 'Pages' }, prev, h('span', {}, ` Page ${index + 1} `), next),
    );
  };
  await show(0);
}
