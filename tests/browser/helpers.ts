import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import axe from 'axe-core';
import { type Browser, chromium, type Locator, type Page } from 'playwright-core';
import { expect } from 'vitest';
import type { Role } from '../../control-plane/src/domain/auth.js';
import { startStack, type TestStack } from '../helpers/runtime.js';

/** Debian's Chromium (`apt-get install -y chromium`); never a browser a tool downloads. */
export const CHROMIUM = '/usr/bin/chromium';

/** CI must run these tests: there a missing browser fails them instead of skipping them. */
const required =
  Boolean(process.env.TENANTRY_REQUIRE_BROWSER) || ['1', 'true'].includes(process.env.CI ?? '');

/** Why a browser test file is skipped here, or null when it runs (always in CI). */
export const reasonToSkip =
  fs.existsSync(CHROMIUM) || required
    ? null
    : `no Chromium at ${CHROMIUM} (apt-get install -y chromium; CI installs it and never skips)`;

/** A describe title that states why it is skipped, when it is. */
export const titled = (title: string) =>
  reasonToSkip ? `${title} (skipped, reason: ${reasonToSkip})` : title;

/** As the machine notes prescribe for a closed network, as root. */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export interface ConsoleStack {
  stack: TestStack;
  /** http://127.0.0.1:<port> */
  base: string;
  browser: Browser;
  close(): Promise<void>;
}

/** A control plane (real Postgres, worker in-process) listening on loopback, and a Chromium. */
export async function startConsole(env: Record<string, string> = {}): Promise<ConsoleStack> {
  const stack = await startStack(env);
  try {
    await stack.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = stack.app.server.address() as AddressInfo;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    return {
      stack,
      base: `http://127.0.0.1:${port}`,
      browser,
      async close() {
        await browser.close();
        await stack.close();
      },
    };
  } catch (e) {
    await stack.close();
    throw e;
  }
}

export interface ConsolePage {
  page: Page;
  /** Every request the page made to another origin (must stay empty: nothing fetched from outside). */
  foreignRequests: string[];
  /** Content-Security-Policy violations and uncaught page errors (must stay empty). */
  problems: string[];
}

/** A fresh browser context (no storage) on the console, signed in with `role`'s token. */
export async function signIn(c: ConsoleStack, role: Role, hash = '#/'): Promise<ConsolePage> {
  const context = await c.browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const foreignRequests: string[] = [];
  const problems: string[] = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(`${c.base}/`) && !r.url().startsWith('data:')) foreignRequests.push(r.url());
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  await page.goto(`${c.base}/ui/${hash}`);
  await page.getByLabel('API token').fill(c.stack.tokens[role]);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  return { page, foreignRequests, problems };
}

/** Serious or critical accessibility violations axe-core finds in the page as it is now. */
export async function axeViolations(page: Page): Promise<{ id: string; impact: string; nodes: string[] }[]> {
  // Injected over the DevTools protocol, which the page's CSP does not apply to.
  await page.evaluate(axe.source);
  const results = await page.evaluate(() =>
    (window as unknown as { axe: typeof axe }).axe.run(document, { resultTypes: ['violations'] }),
  );
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({
      id: v.id,
      impact: v.impact as string,
      nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary ?? ''}`),
    }));
}

/**
 * Where the tests' screenshots go: docs/console/ when TENANTRY_SCREENSHOTS=docs (to refresh the
 * documentation's pictures), else a directory of the run's own, so a test run leaves the tree as it was.
 */
export const SCREENSHOT_DIR =
  process.env.TENANTRY_SCREENSHOTS === 'docs'
    ? path.resolve(import.meta.dirname, '../../docs/console')
    : fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-console-'));

/** Removes the run's own screenshot directory (never docs/console). */
export function removeScreenshots(): void {
  if (process.env.TENANTRY_SCREENSHOTS !== 'docs')
    fs.rmSync(SCREENSHOT_DIR, { recursive: true, force: true });
}

/** A full-page screenshot; `mask` covers what must not be pictured (a token's value). */
export async function screenshot(page: Page, name: string, mask: Locator[] = []): Promise<string> {
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true, mask, maskColor: '#8a919b' });
  expect(fs.statSync(file).size).toBeGreaterThan(1000);
  return file;
}

/** No CSP violation, page error or request to another origin happened on this page. */
export function expectClean(p: ConsolePage): void {
  expect(p.problems).toEqual([]);
  expect(p.foreignRequests).toEqual([]);
}
