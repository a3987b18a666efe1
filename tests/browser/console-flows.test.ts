import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth } from '../helpers/runtime.js';
import { pauseAt, seedPool } from '../integration/promotion-helpers.js';
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
 * The console's flows in Chromium against a real control plane: a sales-ops user onboards a pool
 * tenant through the form and watches it go active; an SRE promotes it to silo, watches the
 * promotion to its end, and gets the rollback button with its countdown; sales-ops gets no promote
 * button, and the API refuses the request when it is sent by hand.
 */
const SLUG = 'globex';
let c: ConsoleStack;
let holdFile: string;
let holdDir: string;

beforeAll(async () => {
  if (reasonToSkip) return;
  holdDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-ui-hold-'));
  holdFile = path.join(holdDir, 'hold');
  // An operation reaching the point this file names waits there until the file names another.
  c = await startConsole({ TENANTRY_FAULT_HOLD_FILE: holdFile });
});
afterAll(async () => {
  await c?.close();
  if (holdDir) fs.rmSync(holdDir, { recursive: true, force: true });
  removeScreenshots();
});

const auditActions = async (slug: string) => {
  const res = await c.stack.app.inject({
    method: 'GET',
    url: `/v1/audit?tenant=${slug}`,
    headers: auth(c.stack.tokens.admin),
  });
  return (res.json().items as { action: string }[]).map((a) => a.action);
};

/** The tenant as GET /v1/tenants/{slug} answers it now. */
const tenantNow = async (slug: string) =>
  (
    await c.stack.app.inject({ method: 'GET', url: `/v1/tenants/${slug}`, headers: auth(c.stack.tokens.sre) })
  ).json();

describe.skipIf(reasonToSkip !== null).sequential(titled('console flows in Chromium'), () => {
  it('sales-ops onboards a pool tenant through the form and sees it go active live, without reloading', async () => {
    const p = await signIn(c, 'sales-ops', '#/onboard');
    const { page } = p;
    fs.writeFileSync(holdFile, 'step:credentials');
    await page.getByLabel('Slug').fill(SLUG);
    await page.getByLabel('Name', { exact: true }).fill('Globex Corporation');
    await page.getByLabel('pool', { exact: true }).check();
    await page.getByRole('button', { name: 'Onboard' }).click();

    // The tenant page, with the onboarding held at its first step: provisioning, the step running.
    await page.waitForURL(`**/ui/#/tenants/${SLUG}`);
    const live = page.locator('#in-flight .live');
    await live.locator('[data-step="credentials"].step-running').waitFor();
    await expect(page.locator('#tenant-status').textContent()).resolves.toBe('provisioning');
    expect(await axeViolations(page)).toEqual([]);
    // Marks this document: a reload would lose it.
    await page.evaluate(() => {
      (window as unknown as { marker: string }).marker = 'same-document';
    });

    fs.writeFileSync(holdFile, '');
    await page.locator('#tenant-status', { hasText: 'active' }).waitFor();
    await page.locator('#in-flight .live[data-status="succeeded"]').waitFor();
    expect(await page.evaluate(() => (window as unknown as { marker?: string }).marker)).toBe(
      'same-document',
    );
    expect(await page.locator('#in-flight h2').textContent()).toBe('Just finished');
    expect(await auditActions(SLUG)).toContain('tenant.create');
    expectClean(p);
  });

  it('a double click on Onboard creates one tenant and shows no error', async () => {
    const p = await signIn(c, 'sales-ops', '#/onboard');
    const { page } = p;
    // Every POST the page sends: its Idempotency-Key and the status it got.
    const posts: { key: string; status: number }[] = [];
    page.on('response', (r) => {
      const req = r.request();
      if (req.method() === 'POST' && r.url().endsWith('/v1/tenants'))
        posts.push({ key: req.headers()['idempotency-key'] ?? '', status: r.status() });
    });
    await page.getByLabel('Slug').fill('initech');
    await page.getByLabel('Name', { exact: true }).fill('Initech');
    await page.getByRole('button', { name: 'Onboard' }).dblclick();
    await page.waitForURL('**/ui/#/tenants/initech');
    await page.locator('#tenant-status', { hasText: 'active' }).waitFor();
    expect(await page.locator('[role="alert"]').count()).toBe(0);
    expect(posts.length).toBeGreaterThanOrEqual(1);
    expect(posts.every((p) => p.status === 202 && /^ui-[0-9a-f]{32}$/.test(p.key))).toBe(true);
    expect(new Set(posts.map((p) => p.key)).size).toBe(1);
    expect((await auditActions('initech')).filter((a) => a === 'tenant.create')).toHaveLength(1);
    expectClean(p);
  });

  it('a retry after a lost response sends the same Idempotency-Key: the API answers the first 202 again', async () => {
    const p = await signIn(c, 'sales-ops', '#/onboard');
    const { page } = p;
    const keys: string[] = [];
    let replayed: string | undefined;
    // The first POST reaches the server (which creates the tenant), but its answer never reaches the page.
    await page.route('**/v1/tenants', async (route) => {
      keys.push(route.request().headers()['idempotency-key'] ?? '');
      const response = await route.fetch();
      if (keys.length === 1) return route.abort('connectionreset');
      replayed = response.headers()['idempotent-replayed'];
      return route.fulfill({ response });
    });
    await page.getByLabel('Slug').fill('umbrella');
    await page.getByLabel('Name', { exact: true }).fill('Umbrella');
    await page.getByRole('button', { name: 'Onboard' }).click();
    await page.locator('[role="alert"]', { hasText: 'NETWORK_ERROR' }).waitFor();
    await page.getByRole('button', { name: 'Onboard' }).click();
    await page.waitForURL('**/ui/#/tenants/umbrella');
    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatch(/^ui-[0-9a-f]{32}$/);
    expect(keys[1]).toBe(keys[0]);
    expect(replayed).toBe('true');
    expect((await auditActions('umbrella')).filter((a) => a === 'tenant.create')).toHaveLength(1);
    expectClean(p);
  });

  it('an SRE promotes it to silo with a typed confirmation, watches it to the end, then gets the rollback countdown', async () => {
    const tenant = await tenantNow(SLUG);
    await seedPool(c.stack, tenant.id, 25);
    const p = await signIn(c, 'sre', `#/tenants/${SLUG}`);
    const { page } = p;
    const promote = page.locator('#promote-button');
    await page.locator('#promote-target').selectOption('silo');
    expect(await promote.isDisabled()).toBe(true);
    await page.getByLabel('Confirm the tenant').first().fill('globe');
    expect(await promote.isDisabled()).toBe(true);
    await page.getByLabel('Confirm the tenant').first().fill(SLUG);

    // Held inside catch-up: the rows are copied, the promotion is live on the page.
    const gate = pauseAt(c.stack, tenant.id, 'catch-up:start');
    await promote.click();
    await gate.reached;
    const live = page.locator('#in-flight .live');
    await live.locator('[data-step="catch-up"].step-running').waitFor();
    await live.locator('[data-step="copy"].step-succeeded').waitFor();
    await live.locator('.promotion-progress', { hasText: 'pool → silo' }).waitFor();
    await live.locator('.promotion-progress td', { hasText: 'users' }).waitFor();
    expect(await page.locator('#promote-button').count()).toBe(0);
    await screenshot(page, 'promotion-live');
    expect(await axeViolations(page)).toEqual([]);

    gate.open();
    await page.locator('#in-flight .live[data-status="succeeded"]').waitFor({ timeout: 60_000 });
    const steps = await live
      .locator('.step')
      .evaluateAll((els) =>
        els.map((e) => `${(e as HTMLElement).dataset.step}:${e.className.replace('step step-', '')}`),
      );
    expect(steps.every((s) => s.endsWith(':succeeded') || s.endsWith(':skipped'))).toBe(true);
    expect(steps.map((s) => s.split(':')[0])).toContain('cutover');
    await page.locator('#tenant-tier', { hasText: 'silo' }).waitFor();

    const rollback = page.locator('#rollback-button');
    await rollback.waitFor();
    expect(await rollback.textContent()).toBe('Roll back to pool');
    const countdown = page.locator('#actions .countdown');
    const first = await countdown.textContent();
    expect(first).toMatch(/^23 h 5\d min \d\d s$/);
    // It counts down: wait for the text to change (a tick), not for a time.
    await page.waitForFunction(
      (was) => document.querySelector('#actions .countdown')?.textContent !== was,
      first,
    );
    expect(await countdown.textContent()).toMatch(/^23 h 5\d min \d\d s$/);
    expect(await axeViolations(page)).toEqual([]);
    expectClean(p);
  }, 180_000);

  it('an SRE offboards a tenant after typing its slug, follows it live, and lands on the list where it shows offboarded', async () => {
    const p = await signIn(c, 'sre', '#/tenants/initech');
    const { page } = p;
    const offboard = page.locator('#offboard-button');
    await offboard.waitFor();
    expect(await offboard.isDisabled()).toBe(true);
    await page.locator('#offboard-confirm').fill('initec');
    expect(await offboard.isDisabled()).toBe(true);
    await page.locator('#offboard-confirm').fill('initech');
    expect(await axeViolations(page)).toEqual([]);
    await offboard.click();
    await page.waitForURL('**/ui/#/tenants');
    // Kept in the list for its audit trail, as offboarded.
    await page
      .locator('tbody tr', { hasText: 'initech' })
      .locator('.badge', { hasText: 'offboarded' })
      .waitFor();
    expect(await auditActions('initech')).toContain('tenant.offboard');

    // Its page, once offboarded, offers nothing to do to it (the API would answer TENANT_NOT_FOUND).
    await page.goto(`${c.base}/ui/#/tenants/initech`);
    await page.locator('#tenant-status', { hasText: 'offboarded' }).waitFor();
    await page.locator('#audit table').waitFor();
    expect(await page.locator('#offboard-button').count()).toBe(0);
    expect(await page.locator('#actions').count()).toBe(0);
    expect(await axeViolations(page)).toEqual([]);
    expectClean(p);
  });

  it('sales-ops sees no promote, rollback or offboard button, and the same request sent by hand gets 403', async () => {
    const p = await signIn(c, 'sales-ops', `#/tenants/${SLUG}`);
    const { page } = p;
    await page.locator('#tenant-tier', { hasText: 'silo' }).waitFor();
    await page.locator('#timeline .timeline-item').first().waitFor();
    // Its actions are the ones sales-ops may take (suspend), none of promote, roll back or offboard.
    await page.locator('#actions #suspend-button').waitFor();
    expect(await page.getByRole('button', { name: /promote|roll back|offboard|rotate/i }).count()).toBe(0);
    // Its audit panel says why it is empty, rather than failing.
    await page.locator('#audit', { hasText: 'audit:read' }).waitFor();

    const byHand = await page.evaluate(async (slug) => {
      const res = await fetch(`/v1/tenants/${slug}/promotions`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${sessionStorage.getItem('tenantry.token')}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ targetTier: 'silo' }),
      });
      return { status: res.status, body: await res.json() };
    }, SLUG);
    expect(byHand.status).toBe(403);
    expect(byHand.body.error.code).toBe('FORBIDDEN');
    expectClean(p);
  });

  it('a suspended tenant inside its rollback window shows when it may be rolled back, not a rollback the API would refuse', async () => {
    const suspend = await c.stack.app.inject({
      method: 'POST',
      url: `/v1/tenants/${SLUG}/suspension`,
      headers: auth(c.stack.tokens.sre),
      payload: { reason: 'requested' },
    });
    expect(suspend.statusCode).toBe(202);
    for (let i = 0; ; i++) {
      const t = await tenantNow(SLUG);
      if (t.status === 'suspended' && t.activeOperation === null) break;
      if (i > 2400) throw new Error(`never suspended: ${JSON.stringify(t)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    const p = await signIn(c, 'sre', `#/tenants/${SLUG}`);
    const { page } = p;
    await page.locator('#tenant-status', { hasText: 'suspended' }).waitFor();
    await page.locator('#rollback-suspended', { hasText: 'once the tenant is reactivated' }).waitFor();
    expect(await page.locator('#rollback-button').count()).toBe(0);
    await page.locator('#reactivate-button').waitFor();
    expect(await axeViolations(page)).toEqual([]);
    expectClean(p);
  });
});
