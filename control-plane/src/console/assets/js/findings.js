// Drift findings, grouped by category (and, for the fleet, by tenant within each).

import { badge, groupBy, h, table } from './dom.js';

const value = (v) => (typeof v === 'string' ? v : JSON.stringify(v));

const rows = (findings) =>
  findings.map((f) => [
    f.resource,
    f.name,
    f.kind,
    f.field,
    value(f.desired),
    value(f.actual),
    badge(f.resolution),
  ]);

const HEADERS = ['Resource', 'Object', 'Kind', 'Field', 'Desired', 'Actual', 'Resolution'];

/** `byTenant`: one table per tenant inside each category (the fleet's view); else one per category. */
export function findingsView(findings, { byTenant = false } = {}) {
  if (findings.length === 0) return h('p', { class: 'muted' }, 'No findings.');
  return Array.from(
    groupBy(findings, (f) => f.category),
    ([category, list]) =>
      h(
        'section',
        { class: 'findings', 'data-category': category },
        h('h3', {}, `${category} `, h('span', { class: 'muted' }, `(${list.length})`)),
        byTenant
          ? Array.from(
              groupBy(list, (f) => f.tenantSlug ?? 'platform'),
              ([tenant, own]) =>
                h(
                  'div',
                  { class: 'findings-tenant' },
                  h(
                    'h4',
                    {},
                    tenant === 'platform'
                      ? 'Platform (shared resources)'
                      : h('a', { href: `#/tenants/${tenant}` }, tenant),
                  ),
                  table(`${category} findings of ${tenant}`, HEADERS, rows(own)),
                ),
            )
          : table(`${category} findings`, HEADERS, rows(list)),
      ),
  );
}
