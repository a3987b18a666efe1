// The console's shell: sign-in, the navigation (following the token's role), and a hash router.
// Every page is a function (view, ctx) that renders into `view`; a failure shows the API's error
// code and message in place of the page, never a blank page.

import { ApiError, api, token } from './api.js';
import { errorBox, fill, h } from './dom.js';
import { renderDrift } from './pages/drift.js';
import { renderOnboard } from './pages/onboard.js';
import { renderOverview } from './pages/overview.js';
import { renderRollout, renderRollouts } from './pages/rollouts.js';
import { renderSignIn } from './pages/signin.js';
import { renderTenant } from './pages/tenant.js';
import { renderTenants } from './pages/tenants.js';
import { renderTokens } from './pages/tokens.js';

/** Each page: its address, what it needs (the permission), and its entry in the navigation, if any. */
const ROUTES = [
  { path: /^\/$/, title: 'Overview', render: renderOverview, nav: ['#/', 'Overview'] },
  {
    path: /^\/tenants$/,
    title: 'Tenants',
    render: renderTenants,
    needs: 'tenants:read',
    nav: ['#/tenants', 'Tenants'],
  },
  {
    path: /^\/onboard$/,
    title: 'Onboard a tenant',
    render: renderOnboard,
    needs: 'tenants:create',
    nav: ['#/onboard', 'Onboard'],
  },
  { path: /^\/tenants\/([a-z][a-z0-9-]*)$/, title: 'Tenant', render: renderTenant, needs: 'tenants:read' },
  {
    path: /^\/drift$/,
    title: 'Drift',
    render: renderDrift,
    needs: 'operations:read',
    nav: ['#/drift', 'Drift'],
  },
  {
    path: /^\/rollouts$/,
    title: 'Rollouts',
    render: renderRollouts,
    needs: 'operations:read',
    nav: ['#/rollouts', 'Rollouts'],
  },
  {
    path: /^\/rollouts\/(ro_[0-9a-f]{28})$/,
    title: 'Rollout',
    render: renderRollout,
    needs: 'operations:read',
  },
  {
    path: /^\/tokens$/,
    title: 'Tokens',
    render: renderTokens,
    needs: 'tokens:manage',
    nav: ['#/tokens', 'Tokens'],
  },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');

/** Who is signed in: GET /v1/whoami's answer, with `can(permission)` for the buttons. */
let session = null;
/** Aborts the current page's requests, streams and timers when the user leaves it. */
let leave = new AbortController();

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  return { path, query: new URLSearchParams(query) };
}

function renderShell() {
  const here = parseHash().path;
  fill(
    nav,
    h(
      'ul',
      {},
      ROUTES.filter((r) => r.nav && (!r.needs || session.can(r.needs))).map(({ nav: [href, label] }) => {
        const target = href.slice(1);
        const current = target === '/' ? here === '/' : here.startsWith(target);
        return h('li', {}, h('a', { href, 'aria-current': current ? 'page' : null }, label));
      }),
    ),
  );
  fill(
    who,
    h('span', { class: 'who' }, session.name, ' ', h('span', { class: 'badge badge-role' }, session.role)),
    h('button', { type: 'button', class: 'secondary', onclick: signOut }, 'Sign out'),
  );
}

async function route() {
  leave.abort();
  leave = new AbortController();
  const { path, query } = parseHash();
  renderShell();
  const match = ROUTES.map((r) => ({ r, m: r.path.exec(path) })).find((x) => x.m);
  const view = h('div', { class: 'page' });
  fill(main, view);
  if (!match) {
    document.title = 'Not found · Tenantry';
    fill(view, h('h1', {}, 'Not found'), errorBox({ code: 'ROUTE_NOT_FOUND', message: `no page ${path}` }));
    return;
  }
  const { r, m } = match;
  document.title = `${r.title} · Tenantry`;
  if (r.needs && !session.can(r.needs)) {
    fill(
      view,
      h('h1', {}, r.title),
      errorBox({ code: 'FORBIDDEN', message: `role ${session.role} may not ${r.needs}` }),
    );
    return;
  }
  const { signal } = leave;
  const ctx = {
    session,
    params: m.slice(1),
    query,
    signal,
    navigate: (hash) => {
      location.hash = hash;
    },
    // Renders the page again (after an operation it follows ends), unless the user has left it.
    refresh: () => {
      if (!signal.aborted) void route();
    },
  };
  try {
    await r.render(view, ctx);
  } catch (e) {
    if (e.name === 'AbortError') return;
    view.append(errorBox(e));
  }
  view.querySelector('h1')?.setAttribute('tabindex', '-1');
}

function signOut() {
  token.clear();
  session = null;
  leave.abort();
  start();
}

async function start(reason) {
  if (!token.get()) {
    fill(nav);
    fill(who);
    document.title = 'Sign in · Tenantry';
    renderSignIn(main, { reason, onSignedIn: start });
    return;
  }
  try {
    const me = await api('GET', '/v1/whoami');
    const perms = new Set(me.permissions);
    session = { ...me, can: (p) => perms.has(p) };
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    fill(
      main,
      h('h1', {}, 'Tenantry'),
      errorBox(e),
      h('button', { type: 'button', onclick: () => start() }, 'Try again'),
      ' ',
      h('button', { type: 'button', class: 'secondary', onclick: signOut }, 'Sign out'),
    );
    return;
  }
  await route();
}

// A token the server no longer accepts (revoked, or the wrong one): back to sign-in, saying why.
window.addEventListener('tenantry:unauthenticated', (e) => {
  token.clear();
  session = null;
  leave.abort();
  start(e.detail);
});
window.addEventListener('hashchange', () => {
  if (session && location.hash.startsWith('#/')) void route();
});
// Whatever a page missed still shows up, as an error, not a blank page.
window.addEventListener('unhandledrejection', (e) => {
  if (e.reason?.name === 'AbortError') return;
  main.prepend(errorBox(e.reason));
});
document.querySelector('.skip-link')?.addEventListener('click', (e) => {
  e.preventDefault();
  (main.querySelector('h1') ?? main).focus();
});

void start();
