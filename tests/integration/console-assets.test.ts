import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PERMISSIONS, ROLES } from '../../control-plane/src/domain/auth.js';
import { SLUG_PATTERN } from '../../control-plane/src/domain/naming.js';
import { TIERS } from '../../control-plane/src/domain/tiers.js';
import { startStack, type TestStack } from '../helpers/runtime.js';

/**
 * The web console's files as the API process serves them (control-plane/src/console/plugin.ts):
 * only the listed files, each with its content type, a strict Content-Security-Policy and an ETag;
 * nothing else under /ui (no path reaches the disk), no token needed, none of it in the OpenAPI
 * document.
 */
let s: TestStack;
beforeAll(async () => {
  s = await startStack({ TENANTRY_ROLE: 'api' });
});
afterAll(async () => {
  await s?.close();
});

const get = (url: string, headers: Record<string, string> = {}) =>
  s.app.inject({ method: 'GET', url, headers });

describe('console files at /ui', () => {
  it.each([
    ['/ui', 'text/html; charset=utf-8', '<script type="module" src="/ui/js/app.js"></script>'],
    ['/ui/', 'text/html; charset=utf-8', '<main id="main"'],
    ['/ui/js/app.js', 'text/javascript; charset=utf-8', "from './api.js'"],
    ['/ui/js/pages/tenant.js', 'text/javascript; charset=utf-8', 'export async function renderTenant'],
    ['/ui/console.css', 'text/css; charset=utf-8', ':root'],
    ['/ui/vendor/uplot.js', 'text/javascript; charset=utf-8', 'export { uPlot as default }'],
    ['/ui/vendor/uplot.css', 'text/css; charset=utf-8', '.uplot'],
  ])('%s is served as %s, without a token, under a strict CSP', async (url, type, excerpt) => {
    const res = await get(url);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe(type);
    expect(res.body).toContain(excerpt);
    const csp = String(res.headers['content-security-policy']);
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|https?:|\*/);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['cache-control']).toBe('no-cache');
    expect(res.headers.etag).toMatch(/^"[A-Za-z0-9_-]{27}"$/);
  });

  it('answers 304 to a matching If-None-Match, and the whole file to a stale one', async () => {
    const first = await get('/ui/js/api.js');
    const again = await get('/ui/js/api.js', { 'if-none-match': String(first.headers.etag) });
    expect(again.statusCode).toBe(304);
    expect(again.body).toBe('');
    const stale = await get('/ui/js/api.js', { 'if-none-match': '"not-this-one"' });
    expect(stale.statusCode).toBe(200);
    expect(stale.body).toBe(first.body);
  });

  it("serves the server's own rules as a module: the slug pattern, tiers, roles and permissions", async () => {
    const res = await get('/ui/js/rules.js');
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(res.body).toContain(`export const SLUG_PATTERN = ${JSON.stringify(SLUG_PATTERN)};`);
    expect(res.body).toContain(`export const TIERS = ${JSON.stringify(TIERS)};`);
    expect(res.body).toContain(`export const ROLES = ${JSON.stringify(ROLES)};`);
    expect(res.body).toContain(`export const PERMISSIONS = ${JSON.stringify(PERMISSIONS)};`);
  });

  it.each([
    '/ui/index.html',
    '/ui/js/nope.js',
    '/ui/../package.json',
    '/ui/js/../../../../package.json',
    '/ui/%2e%2e/%2e%2e/package.json',
    '/ui/js/%2e%2e%2fplugin.ts',
    '/ui/plugin.ts',
    '/ui/assets/js/app.js',
    '/ui/vendor/uPlot.esm.js',
    '/ui/vendor/../../../../etc/passwd',
  ])('%s is not a file it serves: 404, in the API error shape', async (url) => {
    const res = await get(url);
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('ROUTE_NOT_FOUND');
    expect(res.body).not.toContain('"name": "tenantry"');
  });

  it('none of /ui is in the OpenAPI document', async () => {
    const doc = (await get('/docs/json')).json() as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/ui'))).toEqual([]);
  });
});
