import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginRoleName, tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { auth, onboard, superQuery } from '../helpers/runtime.js';
import { promoteAndWait, seedPool } from '../integration/promotion-helpers.js';
import {
  axeViolations,
  type ConsoleStack,
  expectClean,
  reasonToSkip,
  removeScreenshots,
  screenshot,
  signIn,
  startConsole,
  titled,
} from './helpers.js';

/**
 * Every page of the console in Chromium, on a fleet with something on each page (tenants of each
 * tier, a promotion inside its rollback window, an onboarding held in flight, a drift sweep with a
 * finding): no serious or critical axe-core violation, no CSP violation or page error, nothing
 * fetched from another origin, and a screenshot (docs/console/*.png when TENANTRY_SCREENSHOTS=docs).
 * Then the console's promises: the token only in sessionStorage, every API error shown with its
 * code and message, the role's navigation, a token shown once, filters and pages.
 */
let c: ConsoleStack;
let holdDir: string;
let holdFile: string;

const inject = (method: 'GET' | 'POST', url: string, token: string, payload?: object) =>
  c.stack.app.inject({ method, url, headers: auth(token), ...(payload ? { payload } : {}) });

/** Re-reads `url` until `done` holds for its JSON (the stack's work is in-process; bounded). */
async function until<T>(url: string, done: (body: T) => boolean): Promise<T> {
  for (let i = 0; ; i++) {
    const body = (await inject('GET', url, c.stack.tokens.admin)).json() as T;
    if (done(body)) return body;
    if (i > 2400) throw new Error(`${url} never got there: ${JSON.stringify(body)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  if (reasonToSkip) return;
  holdDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-ui-hold-'));
  holdFile = path.join(holdDir, 'hold');
  c = await startConsole({ TENANTRY_FAULT_HOLD_FILE: holdFile });
  const s = c.stack;
  await onboard(s, 'pool', 'acme');
  await onboard(s, 'bridge', 'hooli');
  await onboard(s, 'silo', 'stark');
  const wayne = await onboard(s, 'pool', 'wayne');
  await seedPool(s, wayne.id, 40);
  await promoteAndWait(s, 'wayne', 'silo');
  // Drift: a bridge tenant's login (the first of its two) allowed more connections than its tier gives.
  await superQuery(
    'postgres',
    `ALTER ROLE ${loginRoleName(tenantObjectName('hooli'), 'a')} CONNECTION LIMIT 7`,
  );
  const run = (await inject('POST', '/v1/drift-runs', s.tokens.sre)).json() as { id: string };
  await until<{ status: string }>(`/v1/drift-runs/${run.id}`, (r) =>
    ['succeeded', 'failed'].includes(r.status),
  );
  // An onboarding held at its first step: something in flight for the overview.
  fs.writeFileSync(holdFile, 'step:credentials');
  const held = (
    await inject('POST', '/v1/tenants', s.tokens['sales-ops'], {
      slug: 'cyberdyne',
      name: 'Cyberdyne',
      tier: 'bridge',
    })
  ).json() as { operation: { id: string } };
  await until<{ progress: { faultPoint?: string } }>(
    `/v1/operations/${held.operation.id}`,
    (op) => op.progress.faultPoint === 'step:credentials',
  );
});

afterAll(async () => {
  if (holdFile) fs.writeFileSync(holdFile, '');
  await c?.close();
  if (holdDir) fs.rmSync(holdDir, { recursive: true, force: true });
  removeScreenshots();
});

interface PageCase {
  name: string;
  hash: string;
  /** What shows that the page has loaded all it loads. */
  ready: (page: Page) => Promise<unknown>;
  /** What the screenshot covers up. */
  mask?: string[];
}

const PAGES: PageCase[] = [
  {
    name: 'overview',
    hash: '#/',
    ready: async (page) => {
      await page.locator('#fleet td a', { hasText: '2' }).waitFor();
      await page.locator('#in-flight td a', { hasText: 'cyberdyne' }).waitFor();
      await page.locator('#last-drift dl').waitFor();
      await page.locator('#ops-chart canvas').waitFor();
    },
  },
  {
    name: 'tenants',
    hash: '#/tenants',
    ready: (page) => page.locator('table td a', { hasText: 'wayne' }).waitFor(),
  },
  {
    name: 'onboard',
    hash: '#/onboard',
    ready: async (page) => {
      await page.getByLabel('Slug').fill('Bad_Slug');
      await page.locator('#slug-problem', { hasText: 'A slug' }).waitFor();
    },
  },
  {
    name: 'tenant',
    hash: '#/tenants/wayne',
    ready: async (page) => {
      await page.locator('#rollback-button').waitFor();
      await page.locator('#audit table').waitFor();
      await page.locator('#drift p').first().waitFor();
    },
  },
  {
    name: 'tenant-in-flight',
    hash: '#/tenants/cyberdyne',
    ready: (page) => page.locator('#in-flight [data-step="credentials"].step-running').waitFor(),
  },
  {
    name: 'drift',
    hash: '#/drift',
    ready: async (page) => {
      await page.locator('#run .findings-tenant', { hasText: 'hooli' }).waitFor();
      await page.locator('#policies form').waitFor();
    },
  },
  {
    name: 'tokens',
    hash: '#/tokens',
    ready: async (page) => {
      await page.getByLabel('Name').fill('billing-export');
      await page.getByLabel('Role').selectOption('dataplane');
      await page.getByRole('button', { name: 'Create token' }).click();
      await page.locator('.once input').waitFor();
    },
    mask: ['#new-token'],
  },
];

describe.skipIf(reasonToSkip !== null)(titled('console pages in Chromium'), () => {
  it('sign-in: accessible, and the token goes to sessionStorage only, never the URL, a cookie or localStorage', async () => {
    const context = await c.browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const urls: string[] = [];
    page.on('request', (r) => urls.push(r.url()));
    await page.goto(`${c.base}/ui/`);
    await page.getByLabel('API token').waitFor();
    expect(await axeViolations(page)).toEqual([]);
    await screenshot(page, 'sign-in');

    const token = c.stack.tokens.sre;
    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem('tenantry.token'))).toBe(token);
    expect(await page.evaluate(() => localStorage.length)).toBe(0);
    expect(await context.cookies()).toEqual([]);
    expect(urls.filter((u) => u.includes(token))).toEqual([]);
    expect(page.url()).not.toContain(token);

    // Another tab (another session) is not signed in; signing out forgets the token.
    const other = await context.newPage();
    await other.goto(`${c.base}/ui/`);
    await other.getByLabel('API token').waitFor();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API token').waitFor();
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await context.close();
  });

  it('sign-in with an unknown token shows the API error code and message, and keeps nothing', async () => {
    const context = await c.browser.newContext();
    const page = await context.newPage();
    await page.goto(`${c.base}/ui/`);
    await page.getByLabel('API token').fill(`tnt_${'x'.repeat(40)}`);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const alert = page.locator('[role="alert"]', { hasText: 'UNAUTHENTICATED' });
    await alert.waitFor();
    expect(await alert.textContent()).toContain('the token is unknown or revoked');
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await context.close();
  });

  it.each(PAGES)(
    '$name: no serious accessibility violation, no CSP violation, nothing from outside; screenshot',
    async (pc) => {
      const p = await signIn(c, 'admin', pc.hash);
      await pc.ready(p.page);
      expect(await axeViolations(p.page)).toEqual([]);
      await screenshot(
        p.page,
        pc.name,
        (pc.mask ?? []).map((m) => p.page.locator(m)),
      );
      expectClean(p);
      await p.page.context().close();
    },
  );

  it('every API error shows its code and message in place, never a blank page', async () => {
    const p = await signIn(c, 'admin', '#/tenants/no-such-tenant');
    const { page } = p;
    const notFound = page.locator('[role="alert"]', { hasText: 'TENANT_NOT_FOUND' });
    await notFound.waitFor();
    expect(await notFound.textContent()).toContain('no tenant no-such-tenant');
    expect(await notFound.textContent()).toMatch(/request [0-9a-f-]{36}/);

    await page.goto(`${c.base}/ui/#/onboard`);
    await page.getByLabel('Slug').fill('acme');
    await page.getByLabel('Name', { exact: true }).fill('Acme again');
    await page.getByRole('button', { name: 'Onboard' }).click();
    await page.locator('#onboard-problem [role="alert"]', { hasText: 'TENANT_SLUG_TAKEN' }).waitFor();

    await page.goto(`${c.base}/ui/#/drift`);
    await page.locator('#policy-scope').selectOption('tenant');
    await page.getByLabel('Tenant slug').fill('nobody-here');
    await page.getByRole('button', { name: 'Save policy' }).click();
    await page.locator('#policies [role="alert"]', { hasText: 'TENANT_NOT_FOUND' }).waitFor();

    await page.goto(`${c.base}/ui/#/no-such-page`);
    await page.locator('[role="alert"]', { hasText: 'ROUTE_NOT_FOUND' }).waitFor();
    expectClean(p);
  });

  it("the overview's in-flight refresh shows a failure with its code, keeps the last answer, and clears once a refresh works", async () => {
    const p = await signIn(c, 'sre', '#/');
    const { page } = p;
    const row = page.locator('#in-flight td a', { hasText: 'cyberdyne' });
    await row.waitFor();
    const failing = '**/v1/operations?**';
    await page.route(failing, (route) =>
      route.fulfill({
        status: 503,
        contentType: 'application/json',
        body: JSON.stringify({
          error: {
            code: 'DATABASE_UNAVAILABLE',
            message: 'the database is unavailable; retry later',
            requestId: 'r-1',
          },
        }),
      }),
    );
    const alert = page.locator('#in-flight [role="alert"]', { hasText: 'DATABASE_UNAVAILABLE' });
    await alert.waitFor();
    expect(await alert.textContent()).toContain('the database is unavailable; retry later');
    expect(await row.count()).toBe(1);
    await page.unroute(failing);
    await alert.waitFor({ state: 'detached' });
    expect(await row.count()).toBe(1);
    expectClean(p);
  });

  it('the policy editor sets a tier policy, and the list shows it', async () => {
    const p = await signIn(c, 'sre', '#/drift');
    const { page } = p;
    await page.locator('#policy-scope').selectOption('tier');
    await page.locator('#policy-tier').selectOption('bridge');
    await page.locator('#policy-mode').selectOption('report');
    await page.getByLabel('Ignored fields').fill('role.connectionLimit\ntable.privileges:*');
    await page.getByRole('button', { name: 'Save policy' }).click();
    const row = page.locator('#policies tbody tr', { hasText: 'bridge' });
    await row.waitFor();
    expect(await row.textContent()).toContain('role.connectionLimit, table.privileges:*');
    const policies = (await inject('GET', '/v1/drift-policies', c.stack.tokens.sre)).json();
    expect(policies.items).toContainEqual(
      expect.objectContaining({
        scope: 'tier',
        tier: 'bridge',
        mode: 'report',
        ignoreFields: ['role.connectionLimit', 'table.privileges:*'],
      }),
    );
    expectClean(p);
  });

  it('the navigation follows the role: sales-ops has no Tokens link and #/tokens says FORBIDDEN; dataplane has the overview only', async () => {
    const p = await signIn(c, 'sales-ops');
    const nav = await p.page.locator('#nav a').allTextContents();
    expect(nav).toEqual(['Overview', 'Tenants', 'Onboard', 'Drift', 'Rollouts']);
    await p.page.goto(`${c.base}/ui/#/tokens`);
    await p.page.locator('[role="alert"]', { hasText: 'FORBIDDEN' }).waitFor();
    // The drift page is readable, its sweep button and policy editor are not there.
    await p.page.goto(`${c.base}/ui/#/drift`);
    await p.page.locator('#policies', { hasText: 'A tenant inherits' }).waitFor();
    expect(await p.page.locator('#drift-run-now').count()).toBe(0);
    expect(await p.page.locator('#policies form').count()).toBe(0);
    expectClean(p);

    // A dataplane token reads connection descriptors only: the overview, whose API calls it may not make say so.
    const d = await signIn(c, 'dataplane');
    expect(await d.page.locator('#nav a').allTextContents()).toEqual(['Overview']);
    await d.page.locator('#in-flight [role="alert"]', { hasText: 'FORBIDDEN' }).waitFor();
    await d.page.locator('#fleet td a', { hasText: '2' }).waitFor();
    expectClean(d);
  });

  it('a created token is shown once: not in the list, and gone when the page is left', async () => {
    const p = await signIn(c, 'admin', '#/tokens');
    const { page } = p;
    await page.getByLabel('Name').fill('shown-once');
    await page.getByRole('button', { name: 'Create token' }).click();
    const value = await page.locator('#new-token').inputValue();
    expect(value.length).toBeGreaterThanOrEqual(16);
    const listed = await inject('GET', '/v1/whoami', value);
    expect(listed.json()).toMatchObject({ name: 'shown-once', role: 'sales-ops' });
    await page.locator('td', { hasText: 'shown-once' }).waitFor();
    expect(await page.locator('table').textContent()).not.toContain(value);
    await page.goto(`${c.base}/ui/#/`);
    await page.goto(`${c.base}/ui/#/tokens`);
    await page.locator('td', { hasText: 'shown-once' }).waitFor();
    expect(await page.locator('#new-token').count()).toBe(0);
    expect(await page.content()).not.toContain(value);
    expectClean(p);
  });

  it('a token revoked while its page is open signs the user out, with the API reason', async () => {
    const created = (
      await inject('POST', '/v1/tokens', c.stack.tokens.admin, { name: 'soon-revoked', role: 'sre' })
    ).json();
    const context = await c.browser.newContext();
    const page = await context.newPage();
    await page.goto(`${c.base}/ui/`);
    await page.getByLabel('API token').fill(created.token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    const revoked = await c.stack.app.inject({
      method: 'DELETE',
      url: `/v1/tokens/${created.info.id}`,
      headers: auth(c.stack.tokens.admin),
    });
    expect(revoked.statusCode).toBe(200);
    await page.goto(`${c.base}/ui/#/tenants`);
    await page.locator('[role="alert"]', { hasText: 'UNAUTHENTICATED' }).waitFor();
    await page.getByLabel('API token').waitFor();
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await context.close();
  });

  it('tenants: filtered by tier and status, searched, and paged with Next and Previous', async () => {
    const p = await signIn(c, 'sales-ops', '#/tenants?tier=bridge');
    const { page } = p;
    const slugs = () => page.locator('tbody td:first-child a').allTextContents();
    await page.locator('tbody td a').first().waitFor();
    expect((await slugs()).sort()).toEqual(['cyberdyne', 'hooli']);

    await page.goto(`${c.base}/ui/#/tenants?tier=bridge&status=active`);
    await page.locator('tbody td a', { hasText: 'hooli' }).waitFor();
    expect(await slugs()).toEqual(['hooli']);

    await page.goto(`${c.base}/ui/#/tenants?q=ayn`);
    await page.locator('tbody td a', { hasText: 'wayne' }).waitFor();
    expect(await slugs()).toEqual(['wayne']);

    // An exact slug opens its tenant.
    await page.goto(`${c.base}/ui/#/tenants`);
    await page.getByLabel('Search').fill('stark');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.waitForURL('**/ui/#/tenants/stark');
    await page.locator('#tenant-tier', { hasText: 'silo' }).waitFor();

    // Pages of two: every tenant once, in the API's order, and back again.
    await page.goto(`${c.base}/ui/#/tenants?limit=2`);
    const seen: string[] = [];
    for (let n = 1; ; n++) {
      await page.locator('.pager span', { hasText: `Page ${n}` }).waitFor();
      const here = await slugs();
      expect(here.length).toBeLessThanOrEqual(2);
      seen.push(...here);
      const next = page.getByRole('button', { name: 'Next page' });
      if (await next.isDisabled()) break;
      await next.click();
    }
    expect(seen.slice().sort()).toEqual(['acme', 'cyberdyne', 'hooli', 'stark', 'wayne']);
    await page.getByRole('button', { name: 'Previous page' }).click();
    await page.locator('.pager span', { hasText: 'Page 2' }).waitFor();
    expect(await slugs()).toEqual(seen.slice(2, 4));
    expectClean(p);
  });
});
