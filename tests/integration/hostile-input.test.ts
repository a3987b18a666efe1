import Fastify, { type InjectOptions } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverOptions } from '../../control-plane/src/app.js';
import type { Role } from '../../control-plane/src/domain/auth.js';
import errorsPlugin from '../../control-plane/src/plugins/errors.js';
import { adminUrl, auth, rand, startStack, type TestStack, waitForOperation } from '../helpers/runtime.js';

/**
 * Hostile input, route by route: every value the API accepts, sent with the wrong JSON type, a NUL or
 * another control character, out of range or too long, is refused with 400 VALIDATION_FAILED and a
 * message naming the field, and nothing is written (no tenant, token, operation, policy or audit entry).
 * Each request is otherwise valid: the last block checks that the same requests with sound values pass
 * validation, so each refusal here is the hostile value's doing.
 */
let s: TestStack;
let control: pg.Client;
beforeAll(async () => {
  s = await startStack();
  control = new pg.Client({ connectionString: adminUrl(s.controlDb) });
  await control.connect();
});
afterAll(async () => {
  await control?.end();
  await s?.close();
});

const NO_OP = `op_${'0'.repeat(28)}`;
const NO_TOKEN = `tok_${'0'.repeat(28)}`;
const NO_RUN = `dr_${'0'.repeat(28)}`;
const NO_SLUG = 'no-such-tenant';

/** Every table a request can write to, as one fingerprint (the stack runs no background work here). */
const TABLES = [
  'tenants',
  'operations',
  'api_tokens',
  'audit_log',
  'idempotency_keys',
  'drift_policies',
  'drift_runs',
];
async function fingerprint(): Promise<Record<string, string>> {
  const cols = TABLES.map(
    (t) => `(SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM ${t} x) AS ${t}`,
  );
  const { rows } = await control.query(`SELECT ${cols.join(', ')}`);
  return rows[0] as Record<string, string>;
}

interface Route {
  name: string;
  role: Role;
  /** The request with sound values; `patch` replaces one part of it. */
  request: (patch: Patch) => InjectOptions;
  /** What the sound request answers (it passed validation). */
  sound: number;
}
interface Patch {
  body?: Record<string, unknown>;
  rawBody?: unknown;
  query?: string;
  slug?: string;
  id?: string;
  operationId?: string;
  headers?: Record<string, string>;
}

const json = (body: unknown): Pick<InjectOptions, 'payload' | 'headers'> => ({
  payload: JSON.stringify(body),
  headers: { 'content-type': 'application/json' },
});
const withBody = (base: Record<string, unknown>, p: Patch) =>
  json('rawBody' in p ? p.rawBody : { ...base, ...p.body });
const q = (p: Patch, sound = '') => (p.query === undefined ? sound : p.query);
const enc = encodeURIComponent;

const ROUTES: Record<string, Route> = {
  createTenant: {
    name: 'POST /v1/tenants',
    role: 'sales-ops',
    sound: 202,
    request: (p) => {
      const b = withBody({ slug: `h-${rand(4)}`, name: 'Hostile Inc', tier: 'pool' }, p);
      return {
        method: 'POST',
        url: '/v1/tenants',
        payload: b.payload,
        headers: { ...b.headers, 'idempotency-key': `k-${rand(4)}`, ...p.headers },
      };
    },
  },
  listTenants: {
    name: 'GET /v1/tenants',
    role: 'sales-ops',
    sound: 200,
    request: (p) => ({ method: 'GET', url: `/v1/tenants?${q(p, 'limit=5')}` }),
  },
  getTenant: {
    name: 'GET /v1/tenants/{slug}',
    role: 'sales-ops',
    sound: 404,
    request: (p) => ({ method: 'GET', url: `/v1/tenants/${p.slug ?? NO_SLUG}` }),
  },
  connection: {
    name: 'GET /v1/tenants/{slug}/connection',
    role: 'dataplane',
    sound: 404,
    request: (p) => ({ method: 'GET', url: `/v1/tenants/${p.slug ?? NO_SLUG}/connection` }),
  },
  offboard: {
    name: 'DELETE /v1/tenants/{slug}',
    role: 'sre',
    sound: 404,
    request: (p) => ({
      method: 'DELETE',
      url: `/v1/tenants/${p.slug ?? NO_SLUG}`,
      headers: { confirm: NO_SLUG, ...p.headers },
    }),
  },
  promote: {
    name: 'POST /v1/tenants/{slug}/promotions',
    role: 'sre',
    sound: 404,
    request: (p) => ({
      method: 'POST',
      url: `/v1/tenants/${p.slug ?? NO_SLUG}/promotions`,
      ...withBody({ targetTier: 'bridge' }, p),
    }),
  },
  rollback: {
    name: 'POST /v1/tenants/{slug}/promotions/{operationId}/rollback',
    role: 'sre',
    sound: 404,
    request: (p) => ({
      method: 'POST',
      url: `/v1/tenants/${p.slug ?? NO_SLUG}/promotions/${p.operationId ?? NO_OP}/rollback`,
    }),
  },
  listOperations: {
    name: 'GET /v1/operations',
    role: 'sales-ops',
    sound: 200,
    request: (p) => ({ method: 'GET', url: `/v1/operations?${q(p, 'limit=5')}` }),
  },
  getOperation: {
    name: 'GET /v1/operations/{id}',
    role: 'sre',
    sound: 404,
    request: (p) => ({ method: 'GET', url: `/v1/operations/${p.id ?? NO_OP}` }),
  },
  operationEvents: {
    name: 'GET /v1/operations/{id}/events',
    role: 'sre',
    sound: 404,
    request: (p) => ({ method: 'GET', url: `/v1/operations/${p.id ?? NO_OP}/events` }),
  },
  resume: {
    name: 'POST /v1/operations/{id}/resume',
    role: 'sre',
    sound: 404,
    request: (p) => ({ method: 'POST', url: `/v1/operations/${p.id ?? NO_OP}/resume` }),
  },
  createToken: {
    name: 'POST /v1/tokens',
    role: 'admin',
    sound: 201,
    request: (p) => ({ method: 'POST', url: '/v1/tokens', ...withBody({ name: 'ci', role: 'sre' }, p) }),
  },
  revokeToken: {
    name: 'DELETE /v1/tokens/{id}',
    role: 'admin',
    sound: 404,
    request: (p) => ({ method: 'DELETE', url: `/v1/tokens/${p.id ?? NO_TOKEN}` }),
  },
  audit: {
    name: 'GET /v1/audit',
    role: 'sre',
    sound: 200,
    request: (p) => ({ method: 'GET', url: `/v1/audit?${q(p, 'limit=5')}` }),
  },
  listDriftRuns: {
    name: 'GET /v1/drift-runs',
    role: 'sre',
    sound: 200,
    request: (p) => ({ method: 'GET', url: `/v1/drift-runs?${q(p, 'limit=5')}` }),
  },
  getDriftRun: {
    name: 'GET /v1/drift-runs/{id}',
    role: 'sre',
    sound: 404,
    request: (p) => ({ method: 'GET', url: `/v1/drift-runs/${p.id ?? NO_RUN}` }),
  },
  tenantDrift: {
    name: 'GET /v1/tenants/{slug}/drift',
    role: 'sre',
    sound: 404,
    request: (p) => ({ method: 'GET', url: `/v1/tenants/${p.slug ?? NO_SLUG}/drift` }),
  },
  setPolicy: {
    name: 'PUT /v1/drift-policies',
    role: 'sre',
    sound: 200,
    request: (p) => ({
      method: 'PUT',
      url: '/v1/drift-policies',
      ...withBody({ tier: 'pool', mode: 'report', ignoreFields: [] }, p),
    }),
  },
};

/** Routes that take no input at all (no params, query, headers or body). */
const NO_INPUT = new Set(['POST /v1/drift-runs', 'GET /v1/drift-policies', 'GET /v1/tokens']);
const PUBLIC = new Set(['GET /healthz', 'GET /readyz', 'GET /metrics']);

// Hostile values, by the kind of field they are sent to.
const NUL = 'a\u0000b';
const ESC = '\u001b[31mred';
const C1 = 'a\u009bb';
const WRONG_TYPES: [string, unknown][] = [
  ['an array', ['x']],
  ['a number', 12345],
  ['a boolean', true],
  ['an object', { x: 'y' }],
];
const bodyString = (max: number | null, nullable = false): [string, unknown][] => [
  ...WRONG_TYPES,
  ...(nullable ? [] : ([['null', null]] as [string, unknown][])),
  ['a NUL character', NUL],
  ['an escape sequence', ESC],
  ['a C1 control character', C1],
  ...(max === null ? [] : ([['an over-long string', 'x'.repeat(max + 1)]] as [string, unknown][])),
];
const bodyEnum = (nullable = false): [string, unknown][] => [
  ...bodyString(null, nullable),
  ['an unknown value', 'gold'],
  ['a known value with a NUL', 'pool\u0000'],
];
const BAD_INTEGERS: [string, string][] = [
  ['an integer beyond 2^53', '99999999999999999999'],
  ['1e300', '1e300'],
  ['an integer beyond a double', '1e400'],
  ['Infinity', 'Infinity'],
  ['-Infinity', '-Infinity'],
  ['a negative number', '-1'],
  ['a fraction', '1.5'],
  ['a non-numeric string', 'abc'],
  ['an empty value', ''],
  ['a NUL character', '%00'],
];
const BAD_QUERY_TEXT: [string, string][] = [
  ['a NUL character', enc(NUL)],
  ['an escape sequence', enc(ESC)],
  ['a C1 control character', enc(C1)],
];
// Longer than any id or slug, within Fastify's maxParamLength (100; beyond it no route matches: see below).
const BAD_PATH: [string, string][] = [
  ['a NUL character', enc(NUL)],
  ['an escape sequence', enc(ESC)],
  ['a C1 control character', enc(C1)],
  ['an over-long value', 'x'.repeat(90)],
];

interface Case {
  title: string;
  route: Route;
  field: string;
  label: string;
  patch: Patch;
}
const cases: Case[] = [];
const add = (route: Route, field: string, values: [string, unknown][], patch: (v: unknown) => Patch) => {
  for (const [label, v] of values)
    cases.push({ title: `${route.name}: ${field} as ${label}`, route, field, label, patch: patch(v) });
};
const R = ROUTES;

// Whole bodies of the wrong type.
for (const r of [R.createTenant, R.promote, R.createToken, R.setPolicy] as Route[]) {
  add(
    r,
    'body',
    [
      ['an array body', []],
      ['a string body', 'x'],
      ['a number body', 1],
      ['a null body', null],
    ],
    (v) => ({ rawBody: v }),
  );
}
// POST /v1/tenants
add(R.createTenant!, 'body/slug', bodyString(null), (v) => ({ body: { slug: v } }));
add(R.createTenant!, 'body/name', bodyString(200), (v) => ({ body: { name: v } }));
add(R.createTenant!, 'body/tier', bodyEnum(), (v) => ({ body: { tier: v } }));
add(R.createTenant!, 'body/region', bodyString(30), (v) => ({ body: { region: v } }));
add(R.createTenant!, 'body/plan', bodyString(60), (v) => ({ body: { plan: v } }));
add(R.createTenant!, 'body/contactEmail', bodyString(254), (v) => ({ body: { contactEmail: v } }));
add(
  R.createTenant!,
  'headers/idempotency-key',
  [
    ['a NUL character', NUL],
    ['an escape sequence', ESC],
    ['a C1 control character', C1],
    ['an over-long value', 'k'.repeat(201)],
  ],
  (v) => ({ headers: { 'idempotency-key': v as string } }),
);
// GET /v1/tenants
add(R.listTenants!, 'querystring/limit', [...BAD_INTEGERS, ['a repeated parameter', '1&limit=2']], (v) => ({
  query: `limit=${v}`,
}));
for (const f of ['tier', 'status']) {
  add(
    R.listTenants!,
    `querystring/${f}`,
    [
      ['an unknown value', 'gold'],
      ['a known value with a NUL', 'pool%00'],
      ['a repeated parameter', `pool&${f}=silo`],
    ],
    (v) => ({ query: `${f}=${v}` }),
  );
}
add(
  R.listTenants!,
  'querystring/cursor',
  [...BAD_QUERY_TEXT, ['an over-long value', 'c'.repeat(201)]],
  (v) => ({ query: `cursor=${v}` }),
);
// GET /v1/operations
add(
  R.listOperations!,
  'querystring/limit',
  [...BAD_INTEGERS, ['a repeated parameter', '1&limit=2']],
  (v) => ({
    query: `limit=${v}`,
  }),
);
for (const f of ['kind', 'status']) {
  add(
    R.listOperations!,
    `querystring/${f}`,
    [
      ['an unknown value', 'gold'],
      ['a known value with a NUL', 'queued%00'],
      ['an escape sequence', enc(ESC)],
      ['too many values', Array.from({ length: 10 }, () => 'failed').join(`&${f}=`)],
    ],
    (v) => ({ query: `${f}=${v}` }),
  );
}
add(
  R.listOperations!,
  'querystring/tenant',
  [...BAD_QUERY_TEXT, ['an over-long value', 'x'.repeat(300)]],
  (v) => ({ query: `tenant=${v}` }),
);
add(
  R.listOperations!,
  'querystring/cursor',
  [...BAD_QUERY_TEXT, ['an over-long value', 'c'.repeat(201)]],
  (v) => ({ query: `cursor=${v}` }),
);
// Every route with a slug in its path.
for (const r of [R.getTenant, R.connection, R.offboard, R.promote, R.rollback, R.tenantDrift] as Route[]) {
  add(r, 'params/slug', BAD_PATH, (v) => ({ slug: v as string }));
}
add(
  R.offboard!,
  'headers/confirm',
  [
    ['a NUL character', `${NO_SLUG}\u0000`],
    ['an escape sequence', ESC],
    ['an over-long value', 'c'.repeat(101)],
  ],
  (v) => ({ headers: { confirm: v as string } }),
);
add(R.promote!, 'body/targetTier', bodyEnum(), (v) => ({ body: { targetTier: v } }));
add(R.rollback!, 'params/operationId', BAD_PATH, (v) => ({ operationId: v as string }));
for (const r of [R.getOperation, R.operationEvents, R.resume, R.revokeToken, R.getDriftRun] as Route[]) {
  add(r, 'params/id', BAD_PATH, (v) => ({ id: v as string }));
}
// POST /v1/tokens
add(R.createToken!, 'body/name', bodyString(100), (v) => ({ body: { name: v } }));
add(R.createToken!, 'body/role', bodyEnum(), (v) => ({ body: { role: v } }));
// GET /v1/audit
add(R.audit!, 'querystring/after', BAD_INTEGERS, (v) => ({ query: `after=${v}` }));
add(R.audit!, 'querystring/limit', BAD_INTEGERS, (v) => ({ query: `limit=${v}` }));
add(R.audit!, 'querystring/tenant', [...BAD_QUERY_TEXT, ['an over-long value', 'x'.repeat(300)]], (v) => ({
  query: `tenant=${v}`,
}));
add(
  R.audit!,
  'querystring/tenantId',
  [
    ...BAD_QUERY_TEXT,
    // ajv-formats' uuid format takes a urn:uuid: prefix, which Postgres' uuid type refuses.
    ['a urn:uuid: prefix', 'urn:uuid:6f1d14b0-0000-4000-8000-000000000000'],
    ['a uuid with a NUL', '6f1d14b0-0000-4000-8000-000000000000%00'],
  ],
  (v) => ({ query: `tenantId=${v}` }),
);
// GET /v1/drift-runs
add(R.listDriftRuns!, 'querystring/limit', BAD_INTEGERS, (v) => ({ query: `limit=${v}` }));
// PUT /v1/drift-policies
add(R.setPolicy!, 'body/tier', bodyEnum(), (v) => ({ body: { tier: v } }));
add(R.setPolicy!, 'body/tenant', bodyString(null), (v) => ({ body: { tier: undefined, tenant: v } }));
add(R.setPolicy!, 'body/mode', bodyEnum(true), (v) => ({ body: { mode: v } }));
add(
  R.setPolicy!,
  'body/ignoreFields',
  [
    ['a string', 'role.connectionLimit'],
    ['a number', 1],
    ['an object', { x: 'role.connectionLimit' }],
    ['null', null],
    ['a number item', [1]],
    ['a null item', [null]],
    ['an item with a NUL', ['role.connection\u0000Limit']],
    ['an item with an escape sequence', [`role.${ESC}`]],
    ['too many items', Array.from({ length: 101 }, (_, i) => `role.f${i}`)],
  ],
  (v) => ({ body: { ignoreFields: v } }),
);

const send = (route: Route, patch: Patch) => {
  const req = route.request(patch);
  return s.app.inject({
    ...req,
    headers: { ...(req.headers as Record<string, string>), ...auth(s.tokens[route.role]) },
  });
};

describe.each(cases)('$title', (c) => {
  it('is refused with 400 VALIDATION_FAILED naming the field, and writes nothing', async () => {
    const before = await fingerprint();
    const res = await send(c.route, c.patch);
    const body = res.json();
    expect({ status: res.statusCode, code: body.error?.code }).toEqual({
      status: 400,
      code: 'VALIDATION_FAILED',
    });
    expect(body.error.message).toContain(c.field);
    expect(body.error.requestId).toEqual(expect.any(String));
    expect(await fingerprint()).toEqual(before);
    const audited = await control.query('SELECT 1 FROM audit_log WHERE request_id = $1', [
      body.error.requestId,
    ]);
    expect(audited.rows).toEqual([]);
  });
});

describe('the schemas behind those answers', () => {
  interface JsonSchema {
    type?: string;
    pattern?: string;
    format?: string;
    maxLength?: number;
    const?: unknown;
    enum?: unknown[];
    properties?: Record<string, JsonSchema>;
    items?: JsonSchema;
    anyOf?: JsonSchema[];
  }
  interface OpenApi {
    paths: Record<
      string,
      Record<
        string,
        {
          parameters?: { in: string; name: string; schema: JsonSchema }[];
          requestBody?: { content: Record<string, { schema: JsonSchema }> };
        }
      >
    >;
  }
  const strings = (where: string, schema: JsonSchema, out: [string, JsonSchema][] = []) => {
    if (schema.type === 'string') out.push([where, schema]);
    for (const [k, v] of Object.entries(schema.properties ?? {})) strings(`${where}/${k}`, v, out);
    if (schema.items) strings(`${where}/0`, schema.items, out);
    for (const v of schema.anyOf ?? []) strings(where, v, out);
    return out;
  };

  it('has a case above for every route that takes input', async () => {
    const doc = (await s.app.inject({ method: 'GET', url: '/docs/json' })).json() as OpenApi;
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    const tested = new Set(cases.map((c) => c.route.name));
    expect(documented.filter((r) => !tested.has(r) && !NO_INPUT.has(r) && !PUBLIC.has(r))).toEqual([]);
  });

  it('bounds every string the API accepts and refuses control characters in it', async () => {
    const doc = (await s.app.inject({ method: 'GET', url: '/docs/json' })).json() as OpenApi;
    const found: [string, JsonSchema][] = [];
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const at = `${method.toUpperCase()} ${path}`;
        for (const p of op.parameters ?? []) strings(`${at} ${p.in}/${p.name}`, p.schema, found);
        for (const c of Object.values(op.requestBody?.content ?? {})) strings(`${at} body`, c.schema, found);
      }
    }
    expect(found.length).toBeGreaterThan(20);
    const unsafe = found
      .filter(([, sch]) => sch.const === undefined && sch.enum === undefined)
      .filter(([, sch]) => {
        if (sch.pattern === undefined) return true;
        const re = new RegExp(sch.pattern, 'u');
        return [NUL, ESC, C1, '\u0000', `${'a'.repeat(8)}\u0000`].some((v) => re.test(v));
      })
      .map(([where]) => where);
    // The authorization header is matched by the auth plugin's own pattern before any schema.
    expect(unsafe.filter((w) => !w.endsWith('header/authorization'))).toEqual([]);
    const unbounded = found
      .filter(([, sch]) => sch.const === undefined && sch.enum === undefined && sch.maxLength === undefined)
      .filter(([, sch]) => !sch.pattern?.match(/\{\d+(,\d+)?\}\$$/) && sch.format !== 'uuid')
      .map(([where]) => where);
    expect(unbounded.filter((w) => !w.endsWith('header/authorization'))).toEqual([]);
  });

  it('names the allowed values of an enumeration', async () => {
    const res = await send(R.createTenant!, { body: { tier: 'gold' } });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.message).toBe('body/tier must be one of pool, bridge, silo, account');
    const mode = await send(R.setPolicy!, { body: { mode: 'fix' } });
    expect(mode.json().error.message).toBe('body/mode must be one of report, remediate, null');
    const list = await send(R.listTenants!, { query: 'status=gone' });
    expect(list.json().error.message).toBe(
      'querystring/status must be one of provisioning, active, failed, offboarding, offboarded',
    );
  });

  it('says what is wrong with a control character rather than quoting a pattern', async () => {
    const res = await send(R.createTenant!, { body: { name: NUL } });
    expect(res.json().error.message).toBe('body/name must not contain control characters');
  });

  it("answers a path segment beyond Fastify's maxParamLength, or a malformed URL, in the API's error shape", async () => {
    for (const url of [`/v1/tenants/${'x'.repeat(101)}`, '/v1/tenants/%zz']) {
      const res = await s.app.inject({ method: 'GET', url, headers: auth(s.tokens.sre) });
      expect({ url, status: res.statusCode, code: res.json().error?.code }).toEqual({
        url,
        status: 400,
        code: 'VALIDATION_FAILED',
      });
      expect(res.json().error.requestId).toEqual(expect.any(String));
    }
  });

  it('still coerces query strings: a numeric limit arrives as a number', async () => {
    const res = await send(R.audit!, { query: 'limit=2' });
    expect(res.statusCode).toBe(200);
    expect(res.json().items.length).toBeLessThanOrEqual(2);
  });
});

describe('a value the database refuses that validation let through', () => {
  // The last resort: whatever a schema misses, a data exception of Postgres is the client's error,
  // not a 500. A bare app with the error handler runs the real statements.
  const probe = Fastify({ ...serverOptions, logger: false });
  const statements: [string, string, unknown[]][] = [
    ['a NUL in text (22021)', 'SELECT $1::text', ['a\u0000b']],
    ['a bigint out of range (22003)', 'SELECT $1::bigint', ['99999999999999999999']],
    ['not a uuid (22P02)', 'SELECT $1::uuid', ['urn:uuid:x']],
    ['an invalid date (22007)', 'SELECT $1::date', ['2024-02-31x']],
    ['a date out of range (22008)', 'SELECT $1::timestamptz', ['294277-01-01']],
  ];
  beforeAll(async () => {
    await probe.register(errorsPlugin);
    probe.get<{ Querystring: { i: string } }>('/probe', async (request) => {
      const [, sql, params] = statements[Number(request.query.i)]!;
      await s.runtime.services.db.query(sql, params);
      return 'stored';
    });
    await probe.ready();
  });
  afterAll(async () => {
    await probe.close();
  });

  it.each(statements.map(([label], i) => [label, i] as const))(
    'answers %s with 400 VALIDATION_FAILED, echoing nothing of Postgres',
    async (_label, i) => {
      const res = await probe.inject({ method: 'GET', url: `/probe?i=${i}` });
      expect({ status: res.statusCode, code: res.json().error?.code }).toEqual({
        status: 400,
        code: 'VALIDATION_FAILED',
      });
      // The message only: the body also carries a random request id, whose hex may contain "22ddd".
      const { message } = res.json().error;
      expect(message).toBe('the request carries a value the database cannot accept');
      expect(message).not.toMatch(/invalid input|out of range|syntax|bigint|uuid|0x00|SQLSTATE|22[0-9P]{3}/i);
    },
  );
});

describe('the same requests with sound values', () => {
  it.each(Object.values(ROUTES).map((r) => [r.name, r] as const))(
    '%s passes validation',
    async (_name, route) => {
      const res = await send(route, {});
      expect(res.statusCode, res.body).toBe(route.sound);
      if (res.statusCode === 202) {
        const op = await waitForOperation(s, res.json().operation.id);
        expect(op.status).toBe('succeeded');
      }
    },
  );
});
