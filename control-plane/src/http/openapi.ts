import type { TSchema } from '@sinclair/typebox';
import type { FastifySchema, RouteOptions } from 'fastify';
import { can, type Permission, ROLES } from '../domain/auth.js';

/**
 * The OpenAPI document as a client generator reads it, shaped in one place (@fastify/swagger's
 * `transform`, applied to every route) from what each route already declares:
 * - who may call it: `x-permission` and `x-roles` (the roles holding the permission, from the same
 *   table the server enforces), also said in the description; a route without a permission is public
 *   (`security: []`, `x-roles: []`);
 * - every response described (a status without a description of its own gets its reason phrase);
 * - a field with a default is not required: Ajv (`useDefaults`) fills it in before `required` is
 *   checked, so the server accepts a request without it, and the document says so;
 * - a union of literals is one `enum`, as generators expect;
 * - a streaming route's events (`config.sseEvents`) as `x-sse-events`: each event name with its payload;
 * - an operationId for every route (the route's own, else one derived from its method and path).
 * The route's own schema, which validates and serializes, is never changed: the document gets a copy.
 */

export interface SseEventDoc {
  description: string;
  schema: TSchema;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A text/event-stream route's events, by name: documented as the operation's `x-sse-events`. */
    sseEvents?: Record<string, SseEventDoc>;
  }
}

export const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  202: 'Accepted',
  204: 'No content',
  400: 'Bad request',
  401: 'Unauthenticated',
  403: 'Forbidden',
  404: 'Not found',
  409: 'Conflict',
  412: 'Precondition failed',
  413: 'Payload too large',
  422: 'Unprocessable',
  428: 'Precondition required',
  500: 'Internal error',
  503: 'Unavailable',
};

/** The tags routes are grouped by, with what each holds (the document's top-level `tags`). */
export const TAGS = [
  { name: 'tenants', description: 'Onboard, read, offboard tenants; read their connection descriptor' },
  { name: 'operations', description: 'Durable operations: list, read, stream their progress, resume' },
  { name: 'promotions', description: 'Online tier moves and their rollback' },
  {
    name: 'credentials',
    description:
      "A tenant's database password rotated (two alternating logins, a grace period) and its data key",
  },
  { name: 'drift', description: 'Drift sweeps, findings and policies' },
  {
    name: 'rollouts',
    description:
      'Fleet schema rollouts: a template version shipped to the tenants in waves, pause, resume, cancel, retry',
  },
  {
    name: 'exports',
    description:
      "A tenant's data in one archive: export, read, download (restore: POST /v1/tenants with fromExport)",
  },
  { name: 'events', description: 'Lifecycle events from the outbox, for consumers that pull' },
  {
    name: 'webhooks',
    description:
      'Lifecycle events pushed to HTTP endpoints (Standard Webhooks signatures), and their delivery log',
  },
  { name: 'tokens', description: 'API tokens and who a token is' },
  { name: 'audit', description: 'The append-only audit log' },
  { name: 'service', description: 'Health, readiness and metrics (no token)' },
];

/** The roles that hold a permission, in the order ROLES lists them. */
export const rolesFor = (p: Permission): string[] => ROLES.filter((r) => can(r, p));

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A deep copy with the document's rules applied to every nested schema (see above). */
function docSchema(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(docSchema);
  if (!isObject(node)) return node;
  const out: Json = {};
  for (const [k, v] of Object.entries(node)) out[k] = docSchema(v);
  const literals = Array.isArray(out.anyOf) ? literalValues(out.anyOf) : null;
  if (literals) {
    const { anyOf: _branches, ...rest } = out;
    return { ...rest, type: 'string', enum: literals };
  }
  // Type.Record's any-key pattern, as generators read a map.
  const patterns = isObject(out.patternProperties) ? Object.entries(out.patternProperties) : [];
  if (patterns.length === 1 && patterns[0]?.[0] === '^(.*)$') {
    const { patternProperties: _any, ...rest } = out;
    const value = patterns[0][1];
    return { ...rest, additionalProperties: isObject(value) && Object.keys(value).length > 0 ? value : true };
  }
  if (isObject(out.properties) && Array.isArray(out.required)) {
    const props = out.properties;
    const required = out.required.filter(
      (k) => !(isObject(props[k as string]) && 'default' in (props[k as string] as Json)),
    );
    if (required.length > 0) out.required = required;
    else delete out.required;
  }
  return out;
}

/** The values of a union whose every branch is one string literal, else null. */
function literalValues(branches: unknown[]): string[] | null {
  const values: string[] = [];
  for (const b of branches) {
    if (!isObject(b)) return null;
    if (typeof b.const === 'string') values.push(b.const);
    else if (Array.isArray(b.enum) && b.enum.length === 1 && typeof b.enum[0] === 'string')
      values.push(b.enum[0]);
    else return null;
  }
  return values.length > 0 ? values : null;
}

/** `get /v1/tenants/:slug/drift` → `getV1TenantsSlugDrift`: unique per route, used when a route names none. */
export function derivedOperationId(method: string, url: string): string {
  const words = url
    .split(/[/:{}_-]+/)
    .filter(Boolean)
    .map((w) => w[0]!.toUpperCase() + w.slice(1));
  return method.toLowerCase() + words.join('');
}

function accessNote(permission: Permission | undefined): string {
  return permission
    ? `Roles: ${rolesFor(permission).join(', ')} (permission \`${permission}\`).`
    : 'Public: no token needed.';
}

/** @fastify/swagger's `transform`: the route's document entry, built from a copy of its schema. */
export function openapiTransform({
  schema,
  url,
  route,
}: {
  schema: FastifySchema;
  url: string;
  route: RouteOptions;
}): { schema: FastifySchema; url: string } {
  if (!schema || schema.hide) return { schema, url };
  const permission = route.config?.permission;
  const doc = docSchema(schema) as Json;
  const responses = isObject(doc.response) ? doc.response : {};
  for (const [status, r] of Object.entries(responses)) {
    if (isObject(r) && typeof r.description !== 'string') {
      r.description = STATUS_TEXT[Number(status)] ?? `HTTP ${status}`;
    }
  }
  const method = (Array.isArray(route.method) ? route.method[0] : route.method) ?? 'get';
  doc.operationId ??= derivedOperationId(String(method), url);
  doc.description = [schema.description, accessNote(permission)].filter(Boolean).join('\n\n');
  doc['x-permission'] = permission ?? null;
  doc['x-roles'] = permission ? rolesFor(permission) : [];
  if (!permission) doc.security = [];
  const events = route.config?.sseEvents;
  if (events) {
    doc['x-sse-events'] = Object.fromEntries(
      Object.entries(events).map(([name, e]) => [
        name,
        { description: e.description, schema: docSchema(e.schema) },
      ]),
    );
  }
  return { schema: doc as FastifySchema, url };
}
