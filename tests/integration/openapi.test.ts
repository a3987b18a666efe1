import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { can, type Permission, ROLES } from '../../control-plane/src/domain/auth.js';
import { ERROR_CODES, type ErrorCode } from '../../control-plane/src/domain/errors.js';
import { httpStatusFor } from '../../control-plane/src/http/errors.js';
import { auth, startStack, type TestStack } from '../helpers/runtime.js';

/**
 * The OpenAPI document, walked as a client generator reads it: every response described, every route
 * tagged (with a declared tag), named (a unique operationId) and stating the roles it needs, every
 * error response naming the codes it can carry under the status they map to, no field both required
 * and defaulted, the event stream's events with their payloads. And what it says holds: a body the
 * document calls complete without a defaulted field is accepted.
 */
let s: TestStack;
let doc: OpenApi;

interface Schema {
  type?: string;
  enum?: unknown[];
  anyOf?: Schema[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  default?: unknown;
  additionalProperties?: Schema | boolean;
  [k: string]: unknown;
}
interface Response {
  description?: string;
  content?: Record<string, { schema: Schema }>;
}
interface Operation {
  operationId?: string;
  tags?: string[];
  description?: string;
  security?: unknown[];
  parameters?: { in: string; name: string; required?: boolean; schema: Schema }[];
  requestBody?: { content: Record<string, { schema: Schema }> };
  responses: Record<string, Response>;
  'x-roles'?: string[];
  'x-permission'?: string | null;
  'x-sse-events'?: Record<string, { description: string; schema: Schema }>;
}
interface OpenApi {
  tags?: { name: string; description?: string }[];
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema> };
}

const operations = (): [string, Operation][] =>
  Object.entries(doc.paths).flatMap(([p, ops]) =>
    Object.entries(ops).map(([m, op]) => [`${m.toUpperCase()} ${p}`, op] as [string, Operation]),
  );

/** Every nested schema of a document part, with where it is. */
function walk(where: string, node: unknown, out: [string, Schema][] = []): [string, Schema][] {
  if (Array.isArray(node)) {
    for (const [i, n] of node.entries()) walk(`${where}/${i}`, n, out);
  } else if (node && typeof node === 'object') {
    out.push([where, node as Schema]);
    for (const [k, v] of Object.entries(node)) walk(`${where}/${k}`, v, out);
  }
  return out;
}

beforeAll(async () => {
  s = await startStack({ TENANTRY_ROLE: 'api' });
  doc = (await s.app.inject({ method: 'GET', url: '/docs/json' })).json();
});
afterAll(async () => {
  await s?.close();
});

describe('the OpenAPI document', () => {
  it('has routes to check', () => {
    expect(operations().length).toBeGreaterThan(20);
  });

  it('describes every response: no "Default Response"', () => {
    expect(JSON.stringify(doc)).not.toContain('Default Response');
    const undescribed = operations().flatMap(([at, op]) =>
      Object.entries(op.responses)
        .filter(([, r]) => !r.description?.trim())
        .map(([status]) => `${at} ${status}`),
    );
    expect(undescribed).toEqual([]);
  });

  it('tags every route, with a tag the document declares and describes', () => {
    const declared = new Map((doc.tags ?? []).map((t) => [t.name, t.description]));
    expect([...declared.values()].every((d) => typeof d === 'string' && d.length > 0)).toBe(true);
    const untagged = operations()
      .filter(([, op]) => !op.tags?.length || op.tags.some((t) => !declared.has(t)))
      .map(([at]) => at);
    expect(untagged).toEqual([]);
  });

  it('names every route with a unique operationId', () => {
    const ids = operations().map(([, op]) => op.operationId);
    expect(ids.every((id) => typeof id === 'string' && /^[a-z][A-Za-z0-9]+$/.test(id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('states the roles every route needs: the ones the server lets through, in x-roles and the description', () => {
    const without = operations()
      .filter(([, op]) => !Array.isArray(op['x-roles']) || op['x-permission'] === undefined)
      .map(([at]) => at);
    expect(without).toEqual([]);
    for (const [at, op] of operations()) {
      const permission = op['x-permission'];
      if (permission === null) {
        // Public on purpose (health, readiness, metrics): no token, and the document says so.
        expect({ at, roles: op['x-roles'], security: op.security }).toEqual({ at, roles: [], security: [] });
        expect(op.description, at).toContain('Public: no token needed.');
        continue;
      }
      const roles = ROLES.filter((r) => can(r, permission as Permission));
      expect({ at, roles: op['x-roles'] }).toEqual({ at, roles });
      expect(roles.length, at).toBeGreaterThan(0);
      expect(op.description, at).toContain(`Roles: ${roles.join(', ')}`);
      expect(op.security, at).toEqual([{ bearer: [] }]);
    }
  });

  it('names the error codes each error response can carry, each under the status it maps to', () => {
    for (const [at, op] of operations()) {
      const codes: ErrorCode[] = [];
      for (const [status, r] of Object.entries(op.responses)) {
        if (Number(status) < 400) continue;
        const schema = r.content?.['application/json']?.schema;
        const listed = schema?.properties?.error?.properties?.code?.enum as ErrorCode[] | undefined;
        expect(listed?.length, `${at} ${status}`).toBeGreaterThan(0);
        for (const code of listed ?? []) {
          expect(ERROR_CODES, `${at} ${status}`).toContain(code);
          expect({ at, code, status: httpStatusFor(code) }).toEqual({ at, code, status: Number(status) });
          expect(r.description, `${at} ${status}`).toContain(code);
        }
        codes.push(...(listed ?? []));
      }
      expect(codes, at).toEqual(expect.arrayContaining(['INTERNAL', 'DATABASE_UNAVAILABLE']));
      if (op['x-permission'])
        expect(codes, at).toEqual(expect.arrayContaining(['UNAUTHENTICATED', 'FORBIDDEN']));
      const takesInput = (op.parameters?.length ?? 0) > 0 || op.requestBody !== undefined;
      if (takesInput) expect(codes, at).toContain('VALIDATION_FAILED');
      if (op.requestBody) expect(codes, at).toContain('PAYLOAD_TOO_LARGE');
      // Fastify's body handling answers these on any route of a body-carrying method, read or not.
      if (/^(POST|PUT|PATCH|DELETE) /.test(at))
        expect(codes, at).toEqual(expect.arrayContaining(['VALIDATION_FAILED', 'PAYLOAD_TOO_LARGE']));
    }
  });

  it('answers a route that reads no body, sent one too large or not JSON, with a code its document names', async () => {
    const doc413 = doc.paths['/v1/drift-runs']!.post!.responses['413'];
    expect(doc413?.description).toContain('PAYLOAD_TOO_LARGE');
    const big = await s.app.inject({
      method: 'POST',
      url: '/v1/drift-runs',
      headers: { ...auth(s.tokens.sre), 'content-type': 'application/json' },
      payload: JSON.stringify({ pad: 'x'.repeat(70 * 1024) }),
    });
    expect(big.statusCode).toBe(413);
    expect(big.json().error.code).toBe('PAYLOAD_TOO_LARGE');
    const notJson = await s.app.inject({
      method: 'POST',
      url: '/v1/drift-runs',
      headers: { ...auth(s.tokens.sre), 'content-type': 'application/json' },
      payload: '{not json',
    });
    expect(notJson.statusCode).toBe(400);
    expect(notJson.json().error.code).toBe('VALIDATION_FAILED');
  });

  it('requires no field it defaults (the server fills a missing one in)', () => {
    const both: string[] = [];
    for (const [at, op] of operations()) {
      for (const p of op.parameters ?? []) {
        if (p.required && p.schema.default !== undefined) both.push(`${at} ${p.in}/${p.name}`);
      }
      for (const [where, sch] of walk(at, op.requestBody)) {
        for (const name of Array.isArray(sch.required) ? sch.required : []) {
          if (sch.properties?.[name]?.default !== undefined) both.push(`${where}/${name}`);
        }
      }
    }
    expect(both).toEqual([]);
  });

  it('writes a union of literals as one enum', () => {
    const tier =
      doc.paths['/v1/tenants']!.post!.requestBody!.content['application/json']!.schema.properties!.tier;
    expect(tier).toMatchObject({ type: 'string', enum: ['pool', 'bridge', 'silo', 'account'] });
    const literalUnions = operations().flatMap(([at, op]) =>
      walk(at, op)
        .filter(
          ([, sch]) =>
            sch.anyOf?.length && sch.anyOf.every((b) => b.enum?.length === 1 && b.type === 'string'),
        )
        .map(([where]) => where),
    );
    expect(literalUnions).toEqual([]);
  });

  it("documents the event stream's events and their payloads", () => {
    const op = doc.paths['/v1/operations/{id}/events']!.get!;
    expect(Object.keys(op.responses['200']!.content ?? {})).toEqual(['text/event-stream']);
    expect(op.responses['404']!.content?.['application/json']).toBeDefined();
    const events = op['x-sse-events'] ?? {};
    expect(Object.keys(events).sort()).toEqual(['end', 'progress', 'resource', 'step']);
    for (const [name, e] of Object.entries(events)) {
      expect(e.description.length, name).toBeGreaterThan(10);
      expect(e.schema.type, name).toBe('object');
      expect(op.description, name).toContain(`\`${name}\``);
    }
    expect(events.step!.schema.required).toEqual(expect.arrayContaining(['name', 'status']));
    expect(events.end!.schema.required).toEqual(
      expect.arrayContaining(['id', 'status', 'steps', 'progress']),
    );
    expect(events.progress!.schema.properties).toHaveProperty('progress');
    // A promotion's progress fields are typed, so a generated client reads them without guessing.
    const progress = events.progress!.schema.properties!.progress!;
    expect(Object.keys(progress.properties ?? {})).toEqual(
      expect.arrayContaining(['rowsCopied', 'replicationLagBytes', 'writeFreezeMs', 'rollbackUntil']),
    );
    expect(op.description).toContain('closes without `end` after 30 minutes');
  });

  it('names the shared error shape by its own name', () => {
    expect(Object.keys(doc.components.schemas)).toContain('ErrorBody');
    expect(Object.keys(doc.components.schemas).filter((k) => /^def-\d+$/.test(k))).toEqual([]);
  });
});

describe('PUT /v1/drift-policies: the schema says what the server does about ignoreFields', () => {
  it('documents ignoreFields as optional, defaulting to [], and accepts a body without it', async () => {
    const body = doc.paths['/v1/drift-policies']!.put!.requestBody!.content['application/json']!.schema;
    expect(body.required ?? []).not.toContain('ignoreFields');
    expect(body.properties?.ignoreFields?.default).toEqual([]);
    expect(body.required).toEqual(['mode']);
    const res = await s.app.inject({
      method: 'PUT',
      url: '/v1/drift-policies',
      headers: auth(s.tokens.sre),
      payload: { tier: 'bridge', mode: 'remediate' },
    });
    expect(res.statusCode, res.body).toBe(200);
    const bridge = res.json().items.find((p: { scope: string; tier: string }) => p.tier === 'bridge');
    expect(bridge).toMatchObject({ scope: 'tier', mode: 'remediate', ignoreFields: [] });
    // mode stays required, as documented.
    const noMode = await s.app.inject({
      method: 'PUT',
      url: '/v1/drift-policies',
      headers: auth(s.tokens.sre),
      payload: { tier: 'bridge' },
    });
    expect(noMode.statusCode).toBe(400);
    expect(noMode.json().error.message).toBe("body must have required property 'mode'");
  });
});

describe('a bad enum value', () => {
  it('names the allowed values, on a body, a query string and a nullable field', async () => {
    const tier = await s.app.inject({
      method: 'POST',
      url: '/v1/tenants',
      headers: auth(s.tokens['sales-ops']),
      payload: { slug: 'enum-check', name: 'x', tier: 'gold' },
    });
    expect(tier.json().error).toMatchObject({
      code: 'VALIDATION_FAILED',
      message: 'body/tier must be one of pool, bridge, silo, account',
    });
    const role = await s.app.inject({
      method: 'POST',
      url: '/v1/tokens',
      headers: auth(s.tokens.admin),
      payload: { name: 'x', role: 'root' },
    });
    expect(role.json().error.message).toBe(`body/role must be one of ${ROLES.join(', ')}`);
    const status = await s.app.inject({
      method: 'GET',
      url: '/v1/tenants?status=gone',
      headers: auth(s.tokens['sales-ops']),
    });
    expect(status.json().error.message).toBe(
      'querystring/status must be one of provisioning, active, failed, offboarding, offboarded, suspended',
    );
  });
});
