import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { PERMISSIONS, ROLES } from '../domain/auth.js';
import { SUSPENSION_REASONS } from '../domain/lifecycle.js';
import { SLUG_PATTERN } from '../domain/naming.js';
import { ROLLOUT_STATUSES } from '../domain/rollout.js';
import {
  ACTIVE_OPERATION_STATUSES,
  OPERATION_KINDS,
  OPERATION_STATUSES,
  TENANT_STATUSES,
} from '../domain/tenant.js';
import { ALLOWED_PROMOTIONS, TIERS } from '../domain/tiers.js';

/**
 * The web console at /ui: static files served by the API process itself, no build step. Only the
 * files listed here are served (a URL names an entry of this map, never a path on disk), each read
 * once at start, with its content type, an ETag and a strict Content-Security-Policy: scripts,
 * styles and connections to this origin only, no inline script or style, nothing from outside.
 * The console is a client of the public API (it sends the token the user signs in with); these
 * routes serve no data and need no token.
 */

const ASSETS = path.join(import.meta.dirname, 'assets');
const require = createRequire(import.meta.url);

const TYPES = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
} as const;

/** URL (under /ui) → file. The console's own files, then uPlot's from node_modules. */
const FILES: Record<string, string> = {
  '/ui/console.css': path.join(ASSETS, 'console.css'),
  '/ui/js/api.js': path.join(ASSETS, 'js/api.js'),
  '/ui/js/app.js': path.join(ASSETS, 'js/app.js'),
  '/ui/js/chart.js': path.join(ASSETS, 'js/chart.js'),
  '/ui/js/dom.js': path.join(ASSETS, 'js/dom.js'),
  '/ui/js/findings.js': path.join(ASSETS, 'js/findings.js'),
  '/ui/js/live.js': path.join(ASSETS, 'js/live.js'),
  '/ui/js/pages/drift.js': path.join(ASSETS, 'js/pages/drift.js'),
  '/ui/js/pages/onboard.js': path.join(ASSETS, 'js/pages/onboard.js'),
  '/ui/js/pages/overview.js': path.join(ASSETS, 'js/pages/overview.js'),
  '/ui/js/pages/rollouts.js': path.join(ASSETS, 'js/pages/rollouts.js'),
  '/ui/js/pages/signin.js': path.join(ASSETS, 'js/pages/signin.js'),
  '/ui/js/pages/tenant.js': path.join(ASSETS, 'js/pages/tenant.js'),
  '/ui/js/pages/tenants.js': path.join(ASSETS, 'js/pages/tenants.js'),
  '/ui/js/pages/tokens.js': path.join(ASSETS, 'js/pages/tokens.js'),
  '/ui/vendor/uplot.js': require.resolve('uplot/dist/uPlot.esm.js'),
  '/ui/vendor/uplot.css': require.resolve('uplot/dist/uPlot.min.css'),
};

/**
 * The server's own rules, as a module the console imports: the slug pattern the API validates
 * with, the tiers and statuses, the promotions it allows and the permission names. One home for each (the
 * domain); the console never restates them.
 */
export function rulesModule(): string {
  const rules = {
    SLUG_PATTERN,
    TIERS,
    TENANT_STATUSES,
    OPERATION_KINDS,
    OPERATION_STATUSES,
    ACTIVE_OPERATION_STATUSES,
    PROMOTIONS: ALLOWED_PROMOTIONS,
    ROLES,
    PERMISSIONS,
    SUSPENSION_REASONS,
    ROLLOUT_STATUSES,
  };
  return `${Object.entries(rules)
    .map(([k, v]) => `export const ${k} = ${JSON.stringify(v)};`)
    .join('\n')}\n`;
}

export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  // Forms are handled by the scripts; a form that submitted itself (scripts off) must not send a token anywhere.
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

const typeOf = (file: string): string => {
  const ext = path.extname(file).slice(1) as keyof typeof TYPES;
  const type = TYPES[ext];
  if (!type) throw new Error(`console: no content type for ${file}`);
  return type;
};

const asset = (body: Buffer, type: string): Asset => ({
  body,
  type,
  etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
});

/** Every asset by URL, read now: a missing file fails the start, not a page view. */
export function loadAssets(): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  const index = asset(fs.readFileSync(path.join(ASSETS, 'index.html')), TYPES.html);
  assets.set('/ui', index);
  assets.set('/ui/', index);
  for (const [url, file] of Object.entries(FILES))
    assets.set(url, asset(fs.readFileSync(file), typeOf(file)));
  assets.set('/ui/js/rules.js', asset(Buffer.from(rulesModule()), TYPES.js));
  return assets;
}

const consolePlugin: FastifyPluginAsync = async (app) => {
  const assets = loadAssets();
  const serve = (a: Asset) => async (request: FastifyRequest, reply: FastifyReply) => {
    reply
      .header('content-security-policy', CONTENT_SECURITY_POLICY)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cross-origin-opener-policy', 'same-origin')
      .header('cross-origin-resource-policy', 'same-origin')
      .header('x-frame-options', 'DENY')
      // No hashed file names (no build step): the browser revalidates each time, and the ETag
      // answers 304 while the file is unchanged.
      .header('cache-control', 'no-cache')
      .header('etag', a.etag)
      .type(a.type);
    if (request.headers['if-none-match'] === a.etag) return reply.status(304).send();
    return reply.send(a.body);
  };
  for (const [url, a] of assets) {
    app.get(url, { schema: { hide: true } }, serve(a));
  }
};

export default consolePlugin;
