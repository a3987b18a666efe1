import type { EngineEvent } from '@pulumi/pulumi/automation/index.js';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { DataPlane } from '../../control-plane/src/dataplane/dataplane.js';
import { tenantObjectName, tenantStackName } from '../../control-plane/src/domain/naming.js';
import type { KeyStore, SecretStore, StepTenant } from '../../control-plane/src/domain/ports.js';
import type { TierCatalog } from '../../control-plane/src/domain/tiers.js';
import {
  AwsDriftDetector,
  AwsDriftRemediator,
  findingsFromStack,
  type StackDriver,
} from '../../control-plane/src/drift/aws.js';
import {
  parseAcl,
  parseTextArray,
  resolveDatabase,
  type SiloCatalog,
  siloDatabase,
} from '../../control-plane/src/drift/catalog.js';
import { slugOfObject } from '../../control-plane/src/drift/diff.js';
import { LocalDriftRemediator } from '../../control-plane/src/drift/local-remediation.js';
import { isIgnored, PolicyBook } from '../../control-plane/src/drift/policy.js';
import type { Snapshot } from '../../control-plane/src/drift/store.js';
import { selectTenantsToCheck } from '../../control-plane/src/drift/sweep.js';
import type { DetectInput, TenantRecord } from '../../control-plane/src/drift/types.js';
import { stackUrnPrefix } from '../helpers/urns.js';

const tenant = (slug: string, over: Partial<TenantRecord> = {}): TenantRecord => ({
  id: `00000000-0000-4000-8000-${slug
    .padStart(12, '0')
    .slice(-12)
    .replace(/[^0-9a-f]/g, '0')}`,
  slug,
  tier: 'bridge',
  status: 'active',
  templateVersion: 1,
  outputs: {},
  ...over,
});

describe('drift policy', () => {
  const a = tenant('acme');
  const book = new PolicyBook([
    { tier: null, tenantId: null, mode: 'report', ignoreFields: ['secret.keyAlias'] },
    { tier: 'bridge', tenantId: null, mode: 'remediate', ignoreFields: ['role.search_path'] },
    { tier: null, tenantId: a.id, mode: null, ignoreFields: ['role.connectionLimit'] },
  ]);

  it('takes the first level that sets a mode (tenant, then tier, then global, then report)', () => {
    expect(book.resolve(a).mode).toBe('remediate'); // tenant inherits from its tier
    expect(book.resolve({ id: 'x', tier: 'silo' }).mode).toBe('report');
    expect(new PolicyBook([]).resolve(a).mode).toBe('report');
    expect(
      new PolicyBook([{ tier: null, tenantId: a.id, mode: 'report', ignoreFields: [] }]).resolve(a).mode,
    ).toBe('report');
  });

  it('adds ignored fields up across levels', () => {
    expect(book.resolve(a).ignoreFields.sort()).toEqual([
      'role.connectionLimit',
      'role.search_path',
      'secret.keyAlias',
    ]);
    expect(book.resolve({ id: 'other', tier: 'bridge' }).ignoreFields.sort()).toEqual([
      'role.search_path',
      'secret.keyAlias',
    ]);
  });

  it('resolves the platform (no tenant) through the pool tier and the global default', () => {
    const p = new PolicyBook([{ tier: 'pool', tenantId: null, mode: 'remediate', ignoreFields: [] }]);
    expect(p.resolve(null).mode).toBe('remediate');
  });

  it('matches exact fields, resource wildcards and prefixes', () => {
    const f = { resource: 'table' as const, field: 'privileges:PUBLIC' };
    expect(isIgnored(f, ['table.privileges:PUBLIC'])).toBe(true);
    expect(isIgnored(f, ['table.*'])).toBe(true);
    expect(isIgnored(f, ['table.privileges:*'])).toBe(true);
    expect(isIgnored(f, ['schema.*', 'table.rlsForced'])).toBe(false);
    expect(isIgnored(f, ['table.privileges'])).toBe(false);
  });
});

/** Tenant login roles, as grantees and owners in the catalogs. */
const [A, B] = [tenantObjectName('acme'), tenantObjectName('beta')];

describe('catalog parsing', () => {
  it('parses aclitem text per grantee, PUBLIC included, grant options ignored', () => {
    expect(parseAcl(['owner=arwdDxtm/owner', '=r/owner', `"${A}"=ar*w/owner`, `${B}=/owner`])).toEqual([
      {
        grantee: 'owner',
        privileges: ['DELETE', 'INSERT', 'MAINTAIN', 'REFERENCES', 'SELECT', 'TRIGGER', 'TRUNCATE', 'UPDATE'],
      },
      { grantee: 'PUBLIC', privileges: ['SELECT'] },
      { grantee: A, privileges: ['INSERT', 'SELECT', 'UPDATE'] },
    ]);
    expect(parseAcl(null)).toBeNull();
  });

  it("parses text[] output exactly as pg's generic parser does, quoted and odd elements included", () => {
    const generic = (pg.types.getTypeParser as (oid: number, f: 'text') => (raw: string) => unknown)(
      1009,
      'text',
    );
    const cases = [
      '{}',
      '{a}',
      `{${A}=r/owner,=c/owner,owner=arwdDxtm/owner}`,
      '{"\\"odd name\\"=r/owner",plain=r/owner}',
      '{"with,comma=r/o","with space=r/o"}',
      '{NULL,"NULL",x}',
      '{"a\\\\b"}',
      '[0:1]={a,b}',
      '{{a,b},{c,d}}',
      '{tenantry_freeze_ins,tenantry_freeze_upd}',
    ];
    for (const raw of cases) expect(parseTextArray(raw), raw).toEqual(generic(raw));
  });

  it('merges a long ACL (a database with a CONNECT grant per tenant) per grantee, in order', () => {
    const items = ['owner=CTc/owner'];
    const login = (i: number) => tenantObjectName(`t${i}-co`);
    for (let i = 0; i < 500; i++) items.push(`${login(i)}=c/owner`);
    // The same grantee granted again by another grantor: one entry, privileges merged.
    items.push(`${login(7)}=T/other`, '=c/owner');
    const acl = parseAcl(items)!;
    expect(acl).toHaveLength(502);
    expect(acl[0]).toEqual({ grantee: 'owner', privileges: ['CONNECT', 'CREATE', 'TEMPORARY'] });
    expect(acl[8]).toEqual({ grantee: login(7), privileges: ['CONNECT', 'TEMPORARY'] });
    expect(acl[501]).toEqual({ grantee: 'PUBLIC', privileges: ['CONNECT'] });
  });

  it("filters a silo pass's whole-catalog rows as the shared reads filter in SQL, owners named by oid", () => {
    const STRAY = tenantObjectName('stray');
    const read: SiloCatalog = {
      namespaces: [
        { oid: 11, name: 'pg_catalog', owner: 10, acl: ['postgres=UC/postgres', '=U/postgres'] },
        { oid: 2200, name: 'public', owner: 10, acl: null },
        { oid: 16400, name: 'tenantry_meta', owner: 10, acl: ['postgres=UC/postgres'] },
        { oid: 16410, name: 'app', owner: 20, acl: ['owner=UC/owner', `${A}=U/owner`] },
        { oid: 16420, name: STRAY, owner: 30, acl: null },
      ],
      relations: [
        {
          oid: 16500,
          ns: 16410,
          name: 'users',
          kind: 'r',
          owner: 20,
          rls: false,
          forced: false,
          acl: ['owner=arwdDxtm/owner', '=r/owner'],
        },
        {
          oid: 16501,
          ns: 16410,
          name: 'users_pkey',
          kind: 'i',
          owner: 20,
          rls: false,
          forced: false,
          acl: null,
        },
        { oid: 16502, ns: 16410, name: 'events', kind: 'p', owner: 30, rls: true, forced: true, acl: null },
        {
          oid: 16503,
          ns: 16400,
          name: 'schema_versions',
          kind: 'r',
          owner: 10,
          rls: false,
          forced: false,
          acl: null,
        },
        { oid: 16504, ns: 16420, name: 'hidden', kind: 'r', owner: 30, rls: false, forced: false, acl: null },
      ],
      triggers: [
        { rel: 16500, name: 'tenantry_freeze_upd', enabled: 'D' },
        { rel: 16500, name: 'RI_ConstraintTrigger_a_1', enabled: 'D' },
        { rel: 16500, name: 'tenantry_freeze_del', enabled: 'O' },
        { rel: 16503, name: 'tenantry_freeze_guard', enabled: 'R' },
        { rel: 16502, name: 'tenantry_freeze_ins', enabled: 'O' },
      ],
      defaults: [
        { ns: 0, owner: 20, objtype: 'r', acl: ['=r/owner'] },
        { ns: 16410, owner: 20, objtype: 'r', acl: [`${A}=arwd/owner`] },
        { ns: 16400, owner: 10, objtype: 'r', acl: ['=r/postgres'] },
      ],
      versions: [{ schema: 'app', version: 3 }],
      frozen: [{ tenant_id: 'x', schema: 'app', reason: 'promotion' }],
    };
    const names = new Map([
      [10, 'postgres'],
      [20, 'owner'],
      [30, A],
    ]);
    const c = resolveDatabase(siloDatabase(read, ['app']), (oid) => names.get(oid) ?? `unknown (OID=${oid})`);
    expect([...c.schemas.keys()].sort()).toEqual(['app', STRAY].sort());
    expect(c.schemas.get('app')).toEqual({
      name: 'app',
      owner: 'owner',
      version: 3,
      acl: [
        { grantee: 'owner', privileges: ['CREATE', 'USAGE'] },
        { grantee: A, privileges: ['USAGE'] },
      ],
    });
    expect(c.schemas.get(STRAY)).toMatchObject({ owner: A, version: null, acl: [] });
    // Tables of the named silo schema only, indexes left out, guards sorted, other triggers ignored.
    expect([...c.tables.keys()]).toEqual(['app']);
    expect(c.tables.get('app')).toEqual([
      {
        schema: 'app',
        name: 'users',
        owner: 'owner',
        rlsEnabled: false,
        rlsForced: false,
        acl: [
          {
            grantee: 'owner',
            privileges: [
              'DELETE',
              'INSERT',
              'MAINTAIN',
              'REFERENCES',
              'SELECT',
              'TRIGGER',
              'TRUNCATE',
              'UPDATE',
            ],
          },
          { grantee: 'PUBLIC', privileges: ['SELECT'] },
        ],
        guards: ['tenantry_freeze_del', 'tenantry_freeze_upd'],
        // Only the guards not as created, with their state; other triggers are not Tenantry's.
        guardStates: { tenantry_freeze_upd: 'D' },
      },
      {
        schema: 'app',
        name: 'events',
        owner: A,
        rlsEnabled: true,
        rlsForced: true,
        acl: null,
        guards: ['tenantry_freeze_ins'],
        guardStates: {},
      },
    ]);
    // Default privileges of named schemas only: not the global ones (namespace 0), not tenantry_meta's.
    expect([...c.defaultAcls.keys()]).toEqual(['app']);
    expect(c.defaultAcls.get('app')).toEqual([
      {
        schema: 'app',
        owner: 'owner',
        objtype: 'r',
        acl: [{ grantee: A, privileges: ['DELETE', 'INSERT', 'SELECT', 'UPDATE'] }],
      },
    ]);
    expect(c.frozen).toEqual([{ tenantId: 'x', schema: 'app', reason: 'promotion' }]);
    expect(c.policies.size).toBe(0);
  });

  it('derives the slug from an object name only when it follows the naming', () => {
    expect(slugOfObject(tenantObjectName('acme-co'))).toBe('acme-co');
    // Not of a slug: too short, upper case, a platform database.
    expect(slugOfObject('tenant_ab')).toBeNull();
    expect(slugOfObject('tenantry_data')).toBeNull();
    expect(slugOfObject('tenant_Acme')).toBeNull();
  });
});

describe('judging the control plane snapshot', () => {
  const snap = (tenants: TenantRecord[], busy: Snapshot['busy'] = new Map()): Snapshot => ({
    tenants,
    busy,
    retained: new Map(),
  });

  it('judges active tenants and skips busy, provisioning, failed and (locally) account tenants with a reason', () => {
    const t = {
      ok: tenant('ok'),
      busy: tenant('busy'),
      prov: tenant('prov', { status: 'provisioning' }),
      failed: tenant('failed', { status: 'failed' }),
      acct: tenant('acct', { tier: 'account' }),
      gone: tenant('gone', { status: 'offboarded' }),
    };
    const { input, skipped } = selectTenantsToCheck(
      snap(
        Object.values(t),
        new Map([[t.busy.id, { operationId: 'op_1', kind: 'promote', status: 'running' }]]),
      ),
    );
    expect(input.tenants.map((x) => x.slug)).toEqual(['ok']);
    expect(Object.fromEntries(skipped.map((x) => [x.slug, x.reason]))).toEqual({
      busy: 'in-flight-operation',
      prov: 'tenant-status',
      failed: 'tenant-status',
      acct: 'tier-not-on-target',
    });
    expect([...input.busy].sort()).toEqual([t.busy.id, t.prov.id].sort());
    // On the aws target the account tier is judged like any other.
    expect(selectTenantsToCheck(snap([t.acct]), 'aws').input.tenants).toHaveLength(1);
  });
});

const ACME = stackUrnPrefix('acme');
const KEY = `${ACME}tenantry:tenant:Silo$tenantry:tenant:Key$aws:kms/key:Key::tenant-acme-key-key`;
const RDS = `${ACME}tenantry:tenant:Silo$tenantry:tenant:Database$aws:rds/instance:Instance::tenant-acme-db`;
const SECRET = `${ACME}tenantry:tenant:Silo$tenantry:tenant:Secret$aws:secretsmanager/secret:Secret::tenant-acme-s`;

function step(urn: string, op: string, diffs: string[] = []): EngineEvent {
  const type = urn.split('::')[2]?.split('$').at(-1) ?? '';
  const state = { type, urn, custom: true, id: 'x', parent: '', inputs: {}, outputs: {}, provider: '' };
  return {
    sequence: 1,
    timestamp: 1,
    resourcePreEvent: { metadata: { op, urn, type, provider: '', old: state, new: state, diffs } },
  } as unknown as EngineEvent;
}

describe('aws drift from refreshing previews', () => {
  it('maps each drifted resource and property to a finding, isolation properties flagged', () => {
    const acme = tenant('acme', { tier: 'silo' });
    const out = findingsFromStack(acme, [
      {
        urn: RDS,
        type: 'aws:rds/instance:Instance',
        name: 'tenant-acme-db',
        kind: 'changed',
        op: 'update',
        properties: ['publiclyAccessible', 'tags'],
      },
      {
        urn: KEY,
        type: 'aws:kms/key:Key',
        name: 'tenant-acme-key-key',
        kind: 'missing',
        op: 'create',
        properties: [],
      },
    ]);
    expect(out).toEqual([
      expect.objectContaining({
        resource: 'stack',
        kind: 'changed',
        field: 'publiclyAccessible',
        category: 'isolation',
        tenantSlug: 'acme',
      }),
      expect.objectContaining({ resource: 'stack', kind: 'changed', field: 'tags', category: 'state' }),
      expect.objectContaining({
        resource: 'stack',
        name: `${tenantStackName('acme')}/aws:kms/key:Key::tenant-acme-key-key`,
        kind: 'missing',
        field: 'exists',
      }),
    ]);
  });

  function driver(events: Record<string, EngineEvent[] | Error>, log: string[] = []): StackDriver {
    return {
      async previewRefresh(t) {
        log.push(`preview:${t.slug}`);
        const e = events[t.slug];
        if (e instanceof Error) throw e;
        return e ?? [];
      },
      async runStep(ctx) {
        log.push(`${ctx.kind}:${ctx.step}:${ctx.tenant.slug}`);
        return undefined;
      },
    };
  }

  it('previews every judged stack, reports unreachable stacks, and drops tenants that became busy meanwhile', async () => {
    const [acme, beta, gamma] = [tenant('acme', { tier: 'silo' }), tenant('beta'), tenant('gamma')];
    const log: string[] = [];
    const d = new AwsDriftDetector(
      driver(
        {
          acme: [step(RDS, 'update', ['storageEncrypted']), step(SECRET, 'same')],
          beta: new Error('stack tenant-beta not found'),
          gamma: [step(KEY, 'update', ['description'])],
        },
        log,
      ),
      { concurrency: 2 },
    );
    let call = 0;
    const snapshot = async (): Promise<DetectInput> => {
      call++;
      // gamma starts an operation while its preview runs: the second read marks it busy.
      const tenants = call === 1 ? [acme, beta, gamma] : [acme, beta];
      return {
        tenants,
        busy: new Set(call === 1 ? [] : [gamma.id]),
        known: [acme, beta, gamma],
        retained: new Map(),
      };
    };
    const r = await d.detect(snapshot);
    expect(log.sort()).toEqual(['preview:acme', 'preview:beta', 'preview:gamma']);
    expect(r.input.tenants.map((t) => t.slug)).toEqual(['acme', 'beta']);
    expect(r.findings).toEqual([
      expect.objectContaining({ tenantSlug: 'acme', field: 'storageEncrypted', category: 'isolation' }),
      expect.objectContaining({
        tenantSlug: 'beta',
        field: 'reachable',
        actual: 'stack tenant-beta not found',
      }),
    ]);
  });

  it('judges a suspended pool tenant against its freeze, which no stack shows, and hands the previews each tenant’s state', async () => {
    const frozen = tenant('frozen', { tier: 'pool', status: 'suspended' });
    const thawed = tenant('thawed', { tier: 'pool', status: 'suspended' });
    const bridge = tenant('held', { tier: 'bridge', status: 'suspended', limits: { connectionLimit: 3 } });
    const active = tenant('active', { tier: 'pool' });
    const seen: StepTenant[] = [];
    const asked: string[][] = [];
    const base = driver({});
    const d = new AwsDriftDetector(
      {
        ...base,
        async previewRefresh(t) {
          seen.push(t);
          return [];
        },
        async suspendedPoolFreezes(ids) {
          asked.push(ids);
          return { name: 'tenantry_data.pool', frozen: new Set([frozen.id]) };
        },
      },
      { concurrency: 2 },
    );
    const all = [frozen, thawed, bridge, active];
    const r = await d.detect(async () => ({
      tenants: all,
      busy: new Set(),
      known: all,
      retained: new Map(),
    }));
    // Only the suspended pool tenants are asked about, and only the one without its freeze is reported.
    expect(asked.map((ids) => [...ids].sort())).toEqual([[frozen.id, thawed.id].sort()]);
    expect(r.findings).toEqual([
      {
        tenantId: thawed.id,
        tenantSlug: 'thawed',
        resource: 'freeze',
        name: 'tenantry_data.pool',
        kind: 'missing',
        field: 'frozen',
        desired: 'suspended',
        actual: null,
        category: 'isolation',
      },
    ]);
    // The preview's config is the one every up writes: the bridge tenant's suspension and overrides.
    expect(seen.find((t) => t.slug === 'held')).toMatchObject({
      suspended: true,
      limits: { connectionLimit: 3 },
    });
    expect(seen.find((t) => t.slug === 'active')).not.toHaveProperty('suspended');
  });

  it('repairs a tenant with an up of its stack, and never acts on unreachable stacks or the platform', async () => {
    const log: string[] = [];
    const rem = new AwsDriftRemediator(driver({}, log));
    const acme = tenant('acme', { tier: 'silo' });
    expect(rem.plan(acme)).toEqual(['stack-up']);
    expect(rem.plan(null)).toEqual([]);
    await rem.runStep(acme, 'stack-up', []);
    expect(log).toEqual(['reconcile:stack-up:acme']);
    await expect(rem.runStep(acme, 'drop-everything', [])).rejects.toThrow(/unknown reconcile step/);
    const base = {
      tenantId: acme.id,
      tenantSlug: 'acme',
      resource: 'stack' as const,
      name: 'n',
      kind: 'changed' as const,
      desired: null,
      actual: null,
    };
    expect(rem.remediable({ ...base, field: 'tags', category: 'state' })).toBe(true);
    expect(rem.remediable({ ...base, field: 'reachable', category: 'state' })).toBe(false);
  });
});

describe('the local remediator and credential findings', () => {
  // No I/O: remediable() judges a finding alone.
  const rem = new LocalDriftRemediator(
    {} as DataPlane,
    {} as KeyStore & SecretStore,
    { templateVersion: 1, tiers: {} } as unknown as TierCatalog,
    { version: 1, migrations: [] },
  );
  const base = {
    tenantId: 'id-acme',
    tenantSlug: 'acme',
    kind: 'changed' as const,
    category: 'state' as const,
  };

  it('reports a password older than its tier allows and leaves it to a rotation (a grace period), never rewrites it', () => {
    expect(
      rem.remediable({
        ...base,
        resource: 'secret',
        name: 'tenantry/acme/connection',
        field: 'passwordAgeDays',
        desired: 32,
        actual: 40,
      }),
    ).toBe(false);
  });

  it('repairs a login that should be disabled and is not, and a login out of its group', () => {
    for (const f of [
      { field: 'login', desired: false, actual: true },
      { field: 'password', desired: 'none', actual: 'a password' },
      { field: 'memberOf:tenant_acme', desired: true, actual: false },
    ])
      expect(rem.remediable({ ...base, resource: 'role', name: 'login_b_tenant_acme', ...f })).toBe(true);
  });
});
