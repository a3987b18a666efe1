import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth, onboard } from '../helpers/runtime.js';
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
 * The console's day-two actions in Chromium against a real control plane: an SRE suspends a bridge
 * tenant (reason, typed slug) and reactivates it, following each operation live; an SRE rotates a
 * tenant's credentials and sees the operation succeed, and its key with the operation ended before the
 * page read the tenant again; sales-ops gets no rotate button; the Rollouts
 * page renders with no serious or critical axe-core violation.
 */
const SLUG = 'hooli';
let c: ConsoleStack;

beforeAll(async () => {
  if (reasonToSkip) return;
  c = await startConsole();
  await onboard(c.stack, 'bridge', SLUG);
});
afterAll(async () => {
  await c?.close();
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

describe.skipIf(reasonToSkip !== null).sequential(titled('console day-two actions in Chromium'), () => {
  it('an SRE suspends a bridge tenant after choosing a reason and typing its slug, then reactivates it', async () => {
    const p = await signIn(c, 'sre', `#/tenants/${SLUG}`);
    const { page } = p;
    const suspend = page.locator('#suspend-button');
    await suspend.waitFor();
    await page.locator('#suspend-reason').selectOption('non-payment');
    expect(await suspend.isDisabled()).toBe(true);
    await page.locator('#suspend-confirm').fill('hool');
    expect(await suspend.isDisabled()).toBe(true);
    await page.locator('#suspend-confirm').fill(SLUG);
    await suspend.click();
    await page.locator('#tenant-status', { hasText: 'suspended' }).waitFor({ timeout: 60_000 });
    await page.locator('#in-flight .live[data-status="succeeded"]').waitFor({ timeout: 60_000 });

    const reactivate = page.locator('#reactivate-button');
    await reactivate.waitFor({ timeout: 60_000 });
    expect(await page.locator('#suspend-button').count()).toBe(0);
    await reactivate.click();
    await page.locator('#tenant-status', { hasText: 'active' }).waitFor({ timeout: 60_000 });
    await page.locator('#suspend-button').waitFor({ timeout: 60_000 });
    const actions = await auditActions(SLUG);
    expect(actions.some((a) => /suspend/.test(a))).toBe(true);
    expect(actions.some((a) => /reactivat/.test(a))).toBe(true);
    expectClean(p);
  }, 120_000);

  it('an SRE rotates the credentials and sees the operation succeed', async () => {
    const p = await signIn(c, 'sre', `#/tenants/${SLUG}`);
    const { page } = p;
    const rotate = page.locator('#rotate-credentials-button');
    await rotate.waitFor();
    expect(await page.locator('#rotate-key-button').count()).toBe(1);
    await rotate.click();
    const live = page.locator('#in-flight .live[data-status="succeeded"]');
    await live.waitFor({ timeout: 60_000 });
    expect(await page.locator('#in-flight h2').textContent()).toBe('Just finished');
    expect(await page.locator('#in-flight').textContent()).toContain('rotate');
    await page.locator('#timeline .timeline-item.op-succeeded').first().waitFor();
    expectClean(p);
  }, 120_000);

  it('shows an operation it started as just finished, even when it ended before the page read the tenant again', async () => {
    // The race a quick operation wins: the page re-reads the tenant once the action is accepted, and
    // the operation may have ended by then (no longer the tenant's operation in flight). The page's
    // next read of the tenant is held here until the operation has ended.
    const p = await signIn(c, 'sre', `#/tenants/${SLUG}`);
    const { page } = p;
    await page.locator('#rotate-key-button').waitFor();
    let held = false;
    await page.route(`${c.base}/v1/tenants/${SLUG}`, async (route) => {
      if (held) return route.continue();
      held = true;
      for (let i = 0; i < 300; i++) {
        const res = await c.stack.app.inject({
          method: 'GET',
          url: `/v1/tenants/${SLUG}`,
          headers: auth(c.stack.tokens.sre),
        });
        if (res.json().activeOperation === null) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await route.continue();
    });
    await page.locator('#rotate-key-button').click();
    await page.locator('#in-flight .live[data-status="succeeded"]').waitFor({ timeout: 60_000 });
    expect(held).toBe(true);
    expect(await page.locator('#in-flight h2').textContent()).toBe('Just finished');
    expect(await page.locator('#in-flight').textContent()).toContain('rotate');
    expectClean(p);
  }, 120_000);

  it('an SRE exports the tenant, sees it ready in the exports list and downloads the archive with the token', async () => {
    const p = await signIn(c, 'sre', `#/tenants/${SLUG}`);
    const { page } = p;
    await page.locator('#exports', { hasText: 'No exports.' }).waitFor();
    await page.locator('#export-button').click();
    await page.locator('#in-flight .live[data-status="succeeded"]').waitFor({ timeout: 60_000 });
    const download = page.locator('#exports button', { hasText: 'Download' });
    await download.waitFor({ timeout: 60_000 });
    await page.locator('#exports .badge-ready').waitFor();
    const [file] = await Promise.all([page.waitForEvent('download'), download.click()]);
    expect(file.suggestedFilename()).toMatch(new RegExp(`^${SLUG}-exp_.+\\.tenantry\\.gz$`));
    const saved = await file.path();
    expect(fs.statSync(saved).size).toBeGreaterThan(0);
    expect(await auditActions(SLUG)).toEqual(expect.arrayContaining([expect.stringMatching(/download/)]));
    expectClean(p);
  }, 120_000);

  it('sales-ops gets no rotate button (but may suspend)', async () => {
    const p = await signIn(c, 'sales-ops', `#/tenants/${SLUG}`);
    const { page } = p;
    await page.locator('#suspend-button').waitFor();
    expect(await page.locator('#rotate-credentials-button').count()).toBe(0);
    expect(await page.locator('#rotate-key-button').count()).toBe(0);
    expect(await page.locator('#export-button').count()).toBe(0);
    expectClean(p);
  });

  it('the Rollouts page renders from the navigation with no serious or critical axe violation', async () => {
    const p = await signIn(c, 'sre', '#/');
    const { page } = p;
    await page.getByRole('link', { name: 'Rollouts' }).click();
    await page.waitForURL('**/ui/#/rollouts');
    await page.locator('h1', { hasText: 'Rollouts' }).waitFor();
    await page.locator('#rollouts-list :is(table, p:not(:has-text("Loading")))').first().waitFor();
    expect(await page.locator('[role="alert"]').count()).toBe(0);
    expect(await axeViolations(page)).toEqual([]);
    expectClean(p);
  });

  it("a rollout's page shows its waves and tenants, Pause and Cancel for an SRE only, and re-reads itself to the end", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    c.stack.runtime.rollouts?.setFaultHook(async (point) => {
      if (point === 'rollout:platform') await gate;
    });
    try {
      const res = await c.stack.app.inject({
        method: 'POST',
        url: '/v1/rollouts',
        headers: auth(c.stack.tokens.sre),
        payload: { toVersion: 1, waves: [{ name: 'canary', slugs: [SLUG] }, { name: 'rest' }] },
      });
      expect(res.statusCode).toBe(202);
      const id = res.json().id as string;

      const sales = await signIn(c, 'sales-ops', `#/rollouts/${id}`);
      await sales.page.locator('#rollout-status', { hasText: 'running' }).waitFor();
      expect(await sales.page.locator('#rollout-actions button').count()).toBe(0);
      expectClean(sales);

      const p = await signIn(c, 'sre', '#/rollouts');
      const { page } = p;
      await page.getByRole('link', { name: id }).click();
      await page.locator('#rollout-status', { hasText: 'running' }).waitFor();
      await page.locator('#rollout-pause').waitFor();
      await page.locator('#rollout-cancel').waitFor();
      await page.locator('#rollout-waves td', { hasText: 'canary' }).waitFor();
      expect(await axeViolations(page)).toEqual([]);
      await screenshot(page, 'rollout');

      // The page re-reads itself (every 2 s while running) and shows the end without a reload.
      release();
      await page.locator('#rollout-status', { hasText: 'completed' }).waitFor({ timeout: 60_000 });
      await page.locator('#rollout-tenants td', { hasText: SLUG }).waitFor();
      expect(await page.locator('#rollout-actions button').count()).toBe(0);
      expectClean(p);
    } finally {
      release();
      c.stack.runtime.rollouts?.setFaultHook(undefined);
    }
  }, 120_000);
});
