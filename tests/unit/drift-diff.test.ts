import { describe, expect, it } from 'vitest';
import {
  loginRoleNames,
  tenantKeyAlias,
  tenantObjectName,
  tenantSecretName,
} from '../../control-plane/src/domain/naming.js';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import type {
  ObservedDatabaseContents,
  ObservedFleet,
  ObservedRole,
  ObservedSchema,
  ObservedTable,
} from '../../control-plane/src/drift/catalog.js';
import { diffLocal } from '../../control-plane/src/drift/diff.js';
import type {
  DetectInput,
  DriftCategory,
  DriftKind,
  DriftResource,
  DriftValue,
  Finding,
  TenantRecord,
} from '../../control-plane/src/drift/types.js';
import { PLATFORM_KEY_ALIAS } from '../../control-plane/src/engine/local.js';
import { FREEZE_TRIGGERS } from '../../control-plane/src/providers/postgres/freeze.js';
import { localLayout } from '../helpers/drift-layout.js';

/*
 * diffLocal is pure: one clean layout and observation yield no findings, and each case below changes
 * one thing in it and names every finding that change must produce, exactly.
 */

const EXPR = "(tenant_id = (current_setting('app.tenant_id'::text))::uuid)";
const DML = ['DELETE', 'INSERT', 'SELECT', 'UPDATE'];
const VERSION = 3;

const layout = localLayout('data', {
  limits: {
    pool: { connectionLimit: 100, statementTimeoutMs: 5000, idleInTransactionSessionTimeoutMs: 10000 },
    bridge: { connectionLimit: 10, statementTimeoutMs: 15000, idleInTransactionSessionTimeoutMs: 20000 },
    silo: { connectionLimit: 20, statementTimeoutMs: 30000, idleInTransactionSessionTimeoutMs: 40000 },
  },
  templateTables: ['users'],
  policyExpression: EXPR,
});
const { dataDatabase: DATA, ownerRole: OWNER, poolRole: POOL_ROLE, policyName: POLICY } = layout;

const tenant = (tier: Tier, slug: string): TenantRecord => ({
  id: `id-${slug}`,
  slug,
  tier,
  status: 'active',
  templateVersion: VERSION,
  outputs: { keyId: `key-${slug}` },
});
const POOL_T = tenant('pool', 'acme-pool');
const BRIDGE_T = tenant('bridge', 'acme-bridge');
const SILO_T = tenant('silo', 'acme-silo');
const BRIDGE = tenantObjectName(BRIDGE_T.slug);
const SILO = tenantObjectName(SILO_T.slug);
/** Follows the naming, but no tenant has the slug. */
const GHOST = tenantObjectName('ghost');

type Owner = Pick<Finding, 'tenantId' | 'tenantSlug' | 'affects'>;
const of = (t: { id: string; slug: string }): Owner => ({ tenantId: t.id, tenantSlug: t.slug });
const POOL_PLATFORM: Owner = { tenantId: null, tenantSlug: null, affects: ['pool'] };
const SHARED_DATABASE: Owner = { tenantId: null, tenantSlug: null, affects: ['pool', 'bridge'] };
const EVERY_TIER: Owner = { tenantId: null, tenantSlug: null, affects: ['pool', 'bridge', 'silo'] };
const NOBODY = (slug: string): Owner => ({ tenantId: null, tenantSlug: slug });

const F = (
  o: Owner,
  resource: DriftResource,
  name: string,
  kind: DriftKind,
  field: string,
  desired: DriftValue,
  actual: DriftValue,
  category: DriftCategory = 'state',
): Finding => ({ ...o, resource, name, kind, field, desired, actual, category });

const role = (name: string, tier: 'pool' | 'bridge' | 'silo', searchPath: string): ObservedRole => ({
  name,
  canLogin: true,
  superuser: false,
  bypassRls: false,
  createRole: false,
  createDb: false,
  replication: false,
  connectionLimit: layout.limits[tier].connectionLimit,
  settings: {
    statement_timeout: String(layout.limits[tier].statementTimeoutMs),
    idle_in_transaction_session_timeout: String(layout.limits[tier].idleInTransactionSessionTimeoutMs),
    search_path: searchPath,
  },
  databaseSettings: {},
  memberOf: [],
});

const table = (schema: string, grantee: string, shared: boolean): ObservedTable => ({
  schema,
  name: 'users',
  owner: OWNER,
  rlsEnabled: shared,
  rlsForced: shared,
  acl: [
    {
      grantee: OWNER,
      privileges: ['DELETE', 'INSERT', 'REFERENCES', 'SELECT', 'TRIGGER', 'TRUNCATE', 'UPDATE'],
    },
    { grantee, privileges: DML },
  ],
  guards: [...(shared ? FREEZE_TRIGGERS.shared : FREEZE_TRIGGERS.private)].sort(),
  guardStates: {},
});

const tenantSchema = (schema: string, grantee: string): ObservedSchema => ({
  name: schema,
  owner: OWNER,
  version: VERSION,
  acl: [
    { grantee: OWNER, privileges: ['CREATE', 'USAGE'] },
    { grantee, privileges: ['USAGE'] },
  ],
});
const tablesDefault = (schema: string, grantee: string) => [
  { schema, owner: OWNER, objtype: 'r', acl: [{ grantee, privileges: DML }] },
];

interface World {
  obs: ObservedFleet;
  input: DetectInput & { busy: Set<string>; retained: Map<string, ReadonlySet<Tier>> };
}

/** A fleet exactly as Tenantry provisions it: one pool, one bridge and one silo tenant. */
function clean(): World {
  const silo = role(SILO, 'silo', 'app');
  // The one per-database setting Tenantry writes: a silo login's search_path in its own database.
  silo.databaseSettings = { [SILO]: { search_path: 'app' } };
  const data: ObservedDatabaseContents = {
    schemas: new Map([
      [
        'pool',
        { name: 'pool', owner: OWNER, version: null, acl: [{ grantee: POOL_ROLE, privileges: ['USAGE'] }] },
      ],
      [BRIDGE, tenantSchema(BRIDGE, BRIDGE)],
    ]),
    tables: new Map([
      ['pool', [table('pool', POOL_ROLE, true)]],
      [BRIDGE, [table(BRIDGE, BRIDGE, false)]],
    ]),
    policies: new Map([
      [
        'pool.users',
        [
          {
            schema: 'pool',
            table: 'users',
            name: POLICY,
            command: '*',
            permissive: true,
            using: EXPR,
            withCheck: EXPR,
            roles: ['PUBLIC'],
          },
        ],
      ],
    ]),
    defaultAcls: new Map([[BRIDGE, tablesDefault(BRIDGE, BRIDGE)]]),
    frozen: [],
  };
  const siloContents: ObservedDatabaseContents = {
    schemas: new Map([['app', tenantSchema('app', SILO)]]),
    tables: new Map([['app', [table('app', SILO, false)]]]),
    policies: new Map(),
    defaultAcls: new Map([['app', tablesDefault('app', SILO)]]),
    frozen: [],
  };
  const tenants = [POOL_T, BRIDGE_T, SILO_T];
  return {
    obs: {
      roles: new Map([
        [POOL_ROLE, role(POOL_ROLE, 'pool', 'pool')],
        [OWNER, { ...role(OWNER, 'pool', ''), canLogin: false }],
        [BRIDGE, role(BRIDGE, 'bridge', BRIDGE)],
        [SILO, silo],
      ]),
      databases: new Map([
        [DATA, { name: DATA, owner: OWNER, allowConnections: true, connect: [POOL_ROLE, BRIDGE] }],
        [SILO, { name: SILO, owner: OWNER, allowConnections: true, connect: [SILO] }],
        ['postgres', { name: 'postgres', owner: 'postgres', allowConnections: true, connect: ['PUBLIC'] }],
      ]),
      contents: new Map([
        [DATA, data],
        [SILO, siloContents],
      ]),
      unreachable: new Map(),
      poolMembers: new Map([[POOL_T.id, POOL_T.slug]]),
      secrets: new Map(
        tenants.map((t) => [
          tenantSecretName(t.slug),
          {
            name: tenantSecretName(t.slug),
            version: 1,
            keyId: `key-${t.slug}`,
            keyAlias: tenantKeyAlias(t.slug),
            keyState: 'enabled',
          },
        ]),
      ),
      keys: new Map([
        ...tenants.map((t): [string, string] => [tenantKeyAlias(t.slug), `key-${t.slug}`]),
        [PLATFORM_KEY_ALIAS, 'key-platform'],
      ]),
      credentials: new Map([
        [POOL_ROLE, 'ok'],
        [BRIDGE, 'ok'],
        [SILO, 'ok'],
      ]),
    },
    input: { tenants: [...tenants], busy: new Set(), known: [...tenants], retained: new Map() },
  };
}

const must = <T>(v: T | undefined): T => {
  if (v === undefined) throw new Error('fixture lookup failed');
  return v;
};
const roleOf = (w: World, name: string) => must(w.obs.roles.get(name));
const contentsOf = (w: World, db: string) => must(w.obs.contents.get(db));
const usersOf = (w: World, db: string, schema: string) => must(contentsOf(w, db).tables.get(schema)?.[0]);
const dbOf = (w: World, name: string) => must(w.obs.databases.get(name));
const poolPolicy = (w: World) => must(contentsOf(w, DATA).policies.get('pool.users')?.[0]);

interface Case {
  rule: string;
  change: (w: World) => void;
  findings: Finding[];
}

const bridgeUsers = `${DATA}.${BRIDGE}.users`;
const poolUsers = `${DATA}.pool.users`;
const siloUsers = `${SILO}.app.users`;

const cases: Case[] = [
  /* ---------------- keys and secrets */
  {
    rule: 'a tenant key that is gone',
    change: (w) => w.obs.keys.delete(tenantKeyAlias(BRIDGE_T.slug)),
    findings: [F(of(BRIDGE_T), 'key', tenantKeyAlias(BRIDGE_T.slug), 'missing', 'exists', true, false)],
  },
  {
    rule: 'a key alias pointing at another key than the recorded one',
    change: (w) => w.obs.keys.set(tenantKeyAlias(BRIDGE_T.slug), 'key-other'),
    findings: [
      F(
        of(BRIDGE_T),
        'key',
        tenantKeyAlias(BRIDGE_T.slug),
        'changed',
        'keyId',
        'key-acme-bridge',
        'key-other',
      ),
    ],
  },
  {
    rule: 'a connection secret that is gone',
    change: (w) => w.obs.secrets.delete(tenantSecretName(SILO_T.slug)),
    findings: [F(of(SILO_T), 'secret', tenantSecretName(SILO_T.slug), 'missing', 'exists', true, false)],
  },
  {
    rule: 'a secret whose key is not enabled',
    change: (w) => {
      must(w.obs.secrets.get(tenantSecretName(POOL_T.slug))).keyState = 'disabled';
    },
    findings: [
      F(of(POOL_T), 'secret', tenantSecretName(POOL_T.slug), 'changed', 'keyState', 'enabled', 'disabled'),
    ],
  },
  {
    rule: "a secret encrypted under another tenant's key",
    change: (w) => {
      must(w.obs.secrets.get(tenantSecretName(POOL_T.slug))).keyAlias = tenantKeyAlias(BRIDGE_T.slug);
    },
    findings: [
      F(
        of(POOL_T),
        'secret',
        tenantSecretName(POOL_T.slug),
        'changed',
        'keyAlias',
        tenantKeyAlias(POOL_T.slug),
        tenantKeyAlias(BRIDGE_T.slug),
      ),
    ],
  },
  /* ---------------- pool tenants */
  {
    rule: 'a pool tenant missing from pool membership',
    change: (w) => w.obs.poolMembers.delete(POOL_T.id),
    findings: [
      F(
        of(POOL_T),
        'pool-membership',
        `${DATA}.tenantry_meta.pool_members:acme-pool`,
        'missing',
        'exists',
        true,
        false,
      ),
    ],
  },
  {
    rule: 'a pool membership under another slug',
    change: (w) => w.obs.poolMembers.set(POOL_T.id, 'other-slug'),
    findings: [
      F(
        of(POOL_T),
        'pool-membership',
        `${DATA}.tenantry_meta.pool_members:acme-pool`,
        'changed',
        'slug',
        'acme-pool',
        'other-slug',
      ),
    ],
  },
  {
    rule: 'a freeze standing on a live pool tenant',
    change: (w) =>
      contentsOf(w, DATA).frozen.push({ tenantId: POOL_T.id, schema: 'pool', reason: 'promotion' }),
    findings: [F(of(POOL_T), 'freeze', `${DATA}.pool`, 'unexpected', 'frozen', null, 'promotion')],
  },
  /* ---------------- tenant login roles */
  {
    rule: 'a bridge login that is gone',
    change: (w) => w.obs.roles.delete(BRIDGE),
    findings: [F(of(BRIDGE_T), 'role', BRIDGE, 'missing', 'exists', true, false)],
  },
  {
    rule: 'a login whose password is no longer its stored secret',
    change: (w) => w.obs.credentials?.set(BRIDGE, 'differs'),
    findings: [F(of(BRIDGE_T), 'role', BRIDGE, 'changed', 'password', 'stored secret', 'another password')],
  },
  {
    rule: 'a login with a setting of its own in one database',
    change: (w) => {
      roleOf(w, BRIDGE).databaseSettings = { [DATA]: { work_mem: '1GB' } };
    },
    findings: [
      F(of(BRIDGE_T), 'role', BRIDGE, 'unexpected', `databaseSetting:${DATA}:work_mem`, null, '1GB'),
    ],
  },
  {
    rule: 'a silo login with a search_path of its own in another database than its silo',
    change: (w) => {
      roleOf(w, SILO).databaseSettings = { [DATA]: { search_path: 'app' } };
    },
    findings: [F(of(SILO_T), 'role', SILO, 'unexpected', `databaseSetting:${DATA}:search_path`, null, 'app')],
  },
  {
    rule: 'a tenant login that cannot log in',
    change: (w) => {
      roleOf(w, SILO).canLogin = false;
    },
    findings: [F(of(SILO_T), 'role', SILO, 'changed', 'login', true, false)],
  },
  ...(['superuser', 'bypassRls', 'createRole', 'createDb', 'replication'] as const).map(
    (attr): Case => ({
      rule: `a tenant login given ${attr}`,
      change: (w) => {
        roleOf(w, BRIDGE)[attr] = true;
      },
      findings: [F(of(BRIDGE_T), 'role', BRIDGE, 'changed', attr, false, true, 'isolation')],
    }),
  ),
  {
    rule: "a connection limit other than the tier's",
    change: (w) => {
      roleOf(w, BRIDGE).connectionLimit = -1;
    },
    findings: [F(of(BRIDGE_T), 'role', BRIDGE, 'changed', 'connectionLimit', 10, -1)],
  },
  {
    rule: "a statement timeout other than the tier's, and an idle timeout reset",
    change: (w) => {
      const r = roleOf(w, SILO);
      r.settings = { ...r.settings, statement_timeout: '0' };
      delete r.settings.idle_in_transaction_session_timeout;
    },
    findings: [
      F(of(SILO_T), 'role', SILO, 'changed', 'statement_timeout', '30000', '0'),
      F(of(SILO_T), 'role', SILO, 'changed', 'idle_in_transaction_session_timeout', '40000', null),
    ],
  },
  {
    rule: 'a search_path that reaches another schema',
    change: (w) => {
      roleOf(w, BRIDGE).settings.search_path = `"${BRIDGE}", public`;
    },
    findings: [F(of(BRIDGE_T), 'role', BRIDGE, 'changed', 'search_path', BRIDGE, `${BRIDGE}, public`)],
  },
  {
    rule: 'a quoted search_path naming the same schema (no finding)',
    change: (w) => {
      roleOf(w, BRIDGE).settings.search_path = `"${BRIDGE}"`;
    },
    findings: [],
  },
  {
    rule: 'a tenant login made a member of the owner role, and of some other role',
    change: (w) => {
      roleOf(w, BRIDGE).memberOf = [OWNER, 'reporting'];
    },
    findings: [
      F(of(BRIDGE_T), 'role', BRIDGE, 'unexpected', `memberOf:${OWNER}`, null, true, 'isolation'),
      F(of(BRIDGE_T), 'role', BRIDGE, 'unexpected', 'memberOf:reporting', null, true),
    ],
  },
  /* ---------------- tenant schemas */
  {
    rule: 'a bridge schema that is gone',
    change: (w) => contentsOf(w, DATA).schemas.delete(BRIDGE),
    findings: [F(of(BRIDGE_T), 'schema', `${DATA}.${BRIDGE}`, 'missing', 'exists', true, false)],
  },
  {
    rule: 'a tenant schema owned by its login (isolation) or by some other role (state)',
    change: (w) => {
      must(contentsOf(w, DATA).schemas.get(BRIDGE)).owner = BRIDGE;
      must(contentsOf(w, SILO).schemas.get('app')).owner = 'reporting';
    },
    // The old owner's own grants now read as a stranger's.
    findings: [
      F(of(BRIDGE_T), 'schema', `${DATA}.${BRIDGE}`, 'changed', 'owner', OWNER, BRIDGE, 'isolation'),
      F(of(BRIDGE_T), 'schema', `${DATA}.${BRIDGE}`, 'unexpected', `privileges:${OWNER}`, null, [
        'CREATE',
        'USAGE',
      ]),
      F(of(SILO_T), 'schema', `${SILO}.app`, 'changed', 'owner', OWNER, 'reporting'),
      F(of(SILO_T), 'schema', `${SILO}.app`, 'unexpected', `privileges:${OWNER}`, null, ['CREATE', 'USAGE']),
    ],
  },
  {
    rule: "a schema at another template version than the tenant's",
    change: (w) => {
      must(contentsOf(w, SILO).schemas.get('app')).version = VERSION - 1;
    },
    findings: [F(of(SILO_T), 'schema', `${SILO}.app`, 'changed', 'templateVersion', VERSION, VERSION - 1)],
  },
  {
    rule: 'a schema whose login lost USAGE',
    change: (w) => {
      const s = must(contentsOf(w, DATA).schemas.get(BRIDGE));
      s.acl = s.acl.filter((e) => e.grantee !== BRIDGE);
    },
    findings: [
      F(of(BRIDGE_T), 'schema', `${DATA}.${BRIDGE}`, 'missing', `privileges:${BRIDGE}`, ['USAGE'], null),
    ],
  },
  {
    rule: 'a schema whose login gained CREATE',
    change: (w) => {
      const s = must(contentsOf(w, DATA).schemas.get(BRIDGE));
      s.acl = [s.acl[0]!, { grantee: BRIDGE, privileges: ['CREATE', 'USAGE'] }];
    },
    findings: [
      F(
        of(BRIDGE_T),
        'schema',
        `${DATA}.${BRIDGE}`,
        'changed',
        `privileges:${BRIDGE}`,
        ['USAGE'],
        ['CREATE', 'USAGE'],
        'isolation',
      ),
    ],
  },
  {
    rule: 'a schema granted to PUBLIC (isolation) and to an unmanaged role (state)',
    change: (w) => {
      must(contentsOf(w, SILO).schemas.get('app')).acl.push(
        { grantee: 'PUBLIC', privileges: ['USAGE'] },
        { grantee: 'reporting', privileges: ['USAGE'] },
      );
    },
    findings: [
      F(of(SILO_T), 'schema', `${SILO}.app`, 'unexpected', 'privileges:PUBLIC', null, ['USAGE'], 'isolation'),
      F(of(SILO_T), 'schema', `${SILO}.app`, 'unexpected', 'privileges:reporting', null, ['USAGE']),
    ],
  },
  /* ---------------- tables */
  {
    rule: 'a template table that is gone',
    change: (w) => contentsOf(w, SILO).tables.set('app', []),
    findings: [F(of(SILO_T), 'table', siloUsers, 'missing', 'exists', true, false)],
  },
  {
    rule: 'a table the template does not create',
    change: (w) =>
      must(contentsOf(w, DATA).tables.get(BRIDGE)).push({ ...table(BRIDGE, BRIDGE, false), name: 'extra' }),
    findings: [F(of(BRIDGE_T), 'table', `${DATA}.${BRIDGE}.extra`, 'unexpected', 'exists', false, true)],
  },
  {
    rule: 'a table owned by a tenant login',
    change: (w) => {
      usersOf(w, DATA, BRIDGE).owner = BRIDGE;
    },
    // Its ACL's owner entry is now the role's own grants, and the old owner's entry is a stranger's.
    findings: [
      F(of(BRIDGE_T), 'table', bridgeUsers, 'changed', 'owner', OWNER, BRIDGE, 'isolation'),
      F(of(BRIDGE_T), 'table', bridgeUsers, 'unexpected', `privileges:${OWNER}`, null, [
        'DELETE',
        'INSERT',
        'REFERENCES',
        'SELECT',
        'TRIGGER',
        'TRUNCATE',
        'UPDATE',
      ]),
    ],
  },
  {
    rule: 'a pool table without row-level security, enabled or forced',
    change: (w) => {
      const t = usersOf(w, DATA, 'pool');
      t.rlsEnabled = false;
      t.rlsForced = false;
    },
    findings: [
      F(POOL_PLATFORM, 'table', poolUsers, 'changed', 'rlsEnabled', true, false, 'isolation'),
      F(POOL_PLATFORM, 'table', poolUsers, 'changed', 'rlsForced', true, false, 'isolation'),
    ],
  },
  {
    rule: 'a table whose login lost DELETE (state)',
    change: (w) => {
      const t = usersOf(w, SILO, 'app');
      t.acl = [t.acl![0]!, { grantee: SILO, privileges: ['INSERT', 'SELECT', 'UPDATE'] }];
    },
    findings: [
      F(of(SILO_T), 'table', siloUsers, 'changed', `privileges:${SILO}`, DML, ['INSERT', 'SELECT', 'UPDATE']),
    ],
  },
  {
    rule: 'a table with the default ACL (its login holds nothing)',
    change: (w) => {
      usersOf(w, SILO, 'app').acl = null;
    },
    findings: [F(of(SILO_T), 'table', siloUsers, 'missing', `privileges:${SILO}`, DML, null)],
  },
  {
    rule: 'a table missing a write-freeze guard',
    change: (w) => {
      usersOf(w, DATA, BRIDGE).guards = [];
    },
    findings: [
      F(
        of(BRIDGE_T),
        'table',
        bridgeUsers,
        'changed',
        'freezeGuard',
        ['tenantry_freeze_guard'],
        [],
        'isolation',
      ),
    ],
  },
  {
    rule: 'a write-freeze guard disabled',
    change: (w) => {
      usersOf(w, SILO, 'app').guardStates = { tenantry_freeze_guard: 'D' };
    },
    findings: [
      F(
        of(SILO_T),
        'table',
        siloUsers,
        'changed',
        'freezeGuardEnabled:tenantry_freeze_guard',
        'enabled',
        'disabled',
        'isolation',
      ),
    ],
  },
  /* ---------------- freezes on private placements */
  {
    rule: 'a freeze standing on a bridge schema and on a silo',
    change: (w) => {
      contentsOf(w, DATA).frozen.push({ tenantId: BRIDGE_T.id, schema: BRIDGE, reason: 'offboarding' });
      contentsOf(w, SILO).frozen.push({ tenantId: SILO_T.id, schema: 'app', reason: 'promotion' });
    },
    findings: [
      F(of(BRIDGE_T), 'freeze', `${DATA}.${BRIDGE}`, 'unexpected', 'frozen', null, 'offboarding'),
      F(of(SILO_T), 'freeze', `${SILO}.app`, 'unexpected', 'frozen', null, 'promotion'),
    ],
  },
  /* ---------------- default privileges */
  {
    rule: 'default privileges that no longer give new tables to the login',
    change: (w) => contentsOf(w, DATA).defaultAcls.delete(BRIDGE),
    findings: [
      F(of(BRIDGE_T), 'default-privileges', `${DATA}.${BRIDGE}`, 'missing', `tables:${BRIDGE}`, DML, null),
    ],
  },
  {
    rule: 'default privileges giving the login less than DML',
    change: (w) => {
      must(contentsOf(w, SILO).defaultAcls.get('app'))[0]!.acl = [{ grantee: SILO, privileges: ['SELECT'] }];
    },
    findings: [
      F(of(SILO_T), 'default-privileges', `${SILO}.app`, 'changed', `tables:${SILO}`, DML, ['SELECT']),
    ],
  },
  {
    rule: 'default privileges on sequences for PUBLIC',
    change: (w) => {
      must(contentsOf(w, SILO).defaultAcls.get('app')).push({
        schema: 'app',
        owner: OWNER,
        objtype: 'S',
        acl: [{ grantee: 'PUBLIC', privileges: ['USAGE'] }],
      });
    },
    findings: [
      F(
        of(SILO_T),
        'default-privileges',
        `${SILO}.app`,
        'unexpected',
        'sequences:PUBLIC',
        null,
        ['USAGE'],
        'isolation',
      ),
    ],
  },
  /* ---------------- database access */
  {
    rule: 'a bridge login that lost CONNECT on the shared database',
    change: (w) => {
      dbOf(w, DATA).connect = [POOL_ROLE];
    },
    findings: [F(of(BRIDGE_T), 'database', DATA, 'missing', `privileges:${BRIDGE}`, ['CONNECT'], null)],
  },
  {
    rule: 'a silo database that is gone',
    change: (w) => {
      w.obs.databases.delete(SILO);
      w.obs.contents.delete(SILO);
    },
    findings: [F(of(SILO_T), 'database', SILO, 'missing', 'exists', true, false)],
  },
  {
    rule: 'a silo database owned by its login',
    change: (w) => {
      dbOf(w, SILO).owner = SILO;
    },
    findings: [F(of(SILO_T), 'database', SILO, 'changed', 'owner', OWNER, SILO, 'isolation')],
  },
  {
    rule: 'a silo login without CONNECT on its database',
    change: (w) => {
      dbOf(w, SILO).connect = [];
    },
    findings: [F(of(SILO_T), 'database', SILO, 'missing', `privileges:${SILO}`, ['CONNECT'], null)],
  },
  {
    rule: 'a silo database that PUBLIC, another tenant and the pool login may connect to (an unmanaged role may)',
    change: (w) => {
      dbOf(w, SILO).connect = [SILO, 'PUBLIC', BRIDGE, POOL_ROLE, 'reporting'];
    },
    findings: [
      F(of(SILO_T), 'database', SILO, 'unexpected', 'privileges:PUBLIC', null, ['CONNECT'], 'isolation'),
      F(of(SILO_T), 'database', SILO, 'unexpected', `privileges:${BRIDGE}`, null, ['CONNECT'], 'isolation'),
      F(
        of(SILO_T),
        'database',
        SILO,
        'unexpected',
        `privileges:${POOL_ROLE}`,
        null,
        ['CONNECT'],
        'isolation',
      ),
    ],
  },
  {
    rule: 'a silo that could not be inspected (its contents are not judged)',
    change: (w) => {
      w.obs.unreachable.set(SILO, 'connection refused');
      w.obs.contents.delete(SILO);
    },
    findings: [F(of(SILO_T), 'database', SILO, 'changed', 'reachable', true, 'connection refused')],
  },
  {
    rule: 'a silo login that may still connect to the shared database',
    change: (w) => {
      dbOf(w, DATA).connect.push(SILO);
    },
    findings: [
      F(of(SILO_T), 'database', DATA, 'unexpected', `privileges:${SILO}`, null, ['CONNECT'], 'isolation'),
    ],
  },
  /* ---------------- platform */
  {
    rule: 'the pool login that is gone',
    change: (w) => w.obs.roles.delete(POOL_ROLE),
    findings: [F(POOL_PLATFORM, 'role', POOL_ROLE, 'missing', 'exists', true, false)],
  },
  {
    rule: "the pool login's password changed (every pool tenant is locked out)",
    change: (w) => w.obs.credentials?.set(POOL_ROLE, 'md5'),
    findings: [
      F(POOL_PLATFORM, 'role', POOL_ROLE, 'changed', 'password', 'stored secret', 'an md5 hash', 'isolation'),
    ],
  },
  {
    rule: 'the owner role that is gone',
    change: (w) => w.obs.roles.delete(OWNER),
    findings: [F(EVERY_TIER, 'role', OWNER, 'missing', 'exists', true, false)],
  },
  {
    rule: 'the owner role able to log in, bypass RLS and act as superuser',
    change: (w) => {
      const r = roleOf(w, OWNER);
      r.canLogin = true;
      r.bypassRls = true;
      r.superuser = true;
    },
    findings: [
      F(EVERY_TIER, 'role', OWNER, 'changed', 'login', false, true, 'isolation'),
      F(EVERY_TIER, 'role', OWNER, 'changed', 'bypassRls', false, true, 'isolation'),
      F(EVERY_TIER, 'role', OWNER, 'changed', 'superuser', false, true, 'isolation'),
    ],
  },
  {
    rule: 'the shared database that is gone',
    change: (w) => w.obs.databases.delete(DATA),
    findings: [F(SHARED_DATABASE, 'database', DATA, 'missing', 'exists', true, false)],
  },
  {
    rule: 'the shared database open to PUBLIC',
    change: (w) => {
      dbOf(w, DATA).connect.push('PUBLIC');
    },
    findings: [
      F(SHARED_DATABASE, 'database', DATA, 'unexpected', 'privileges:PUBLIC', null, ['CONNECT'], 'isolation'),
    ],
  },
  {
    rule: 'the pool login without CONNECT on the shared database',
    change: (w) => {
      dbOf(w, DATA).connect = [BRIDGE];
    },
    findings: [F(POOL_PLATFORM, 'database', DATA, 'missing', `privileges:${POOL_ROLE}`, ['CONNECT'], null)],
  },
  {
    rule: 'another database a tenant login or the pool login may connect to',
    change: (w) => {
      dbOf(w, 'postgres').connect = ['PUBLIC', BRIDGE, POOL_ROLE, 'reporting'];
    },
    findings: [
      F(
        of(BRIDGE_T),
        'database',
        'postgres',
        'unexpected',
        `privileges:${BRIDGE}`,
        null,
        ['CONNECT'],
        'isolation',
      ),
      F(
        POOL_PLATFORM,
        'database',
        'postgres',
        'unexpected',
        `privileges:${POOL_ROLE}`,
        null,
        ['CONNECT'],
        'isolation',
      ),
    ],
  },
  {
    rule: 'the pool schema that is gone',
    change: (w) => contentsOf(w, DATA).schemas.delete('pool'),
    findings: [F(POOL_PLATFORM, 'schema', `${DATA}.pool`, 'missing', 'exists', true, false)],
  },
  {
    rule: 'the pool schema owned by the pool login',
    change: (w) => {
      must(contentsOf(w, DATA).schemas.get('pool')).owner = POOL_ROLE;
    },
    findings: [F(POOL_PLATFORM, 'schema', `${DATA}.pool`, 'changed', 'owner', OWNER, POOL_ROLE, 'isolation')],
  },
  {
    rule: 'the pool schema without USAGE for the pool login',
    change: (w) => {
      must(contentsOf(w, DATA).schemas.get('pool')).acl = [];
    },
    findings: [
      F(POOL_PLATFORM, 'schema', `${DATA}.pool`, 'missing', `privileges:${POOL_ROLE}`, ['USAGE'], null),
    ],
  },
  {
    rule: 'a pool table without the isolation policy',
    change: (w) => contentsOf(w, DATA).policies.delete('pool.users'),
    findings: [
      F(POOL_PLATFORM, 'policy', `${poolUsers}.${POLICY}`, 'missing', 'exists', true, false, 'isolation'),
    ],
  },
  {
    rule: 'the isolation policy rewritten in every field',
    change: (w) => {
      Object.assign(poolPolicy(w), {
        using: 'true',
        withCheck: null,
        command: 'r',
        permissive: false,
        roles: [POOL_ROLE],
      });
    },
    findings: [
      F(POOL_PLATFORM, 'policy', `${poolUsers}.${POLICY}`, 'changed', 'using', EXPR, 'true', 'isolation'),
      F(POOL_PLATFORM, 'policy', `${poolUsers}.${POLICY}`, 'changed', 'withCheck', EXPR, null, 'isolation'),
      F(POOL_PLATFORM, 'policy', `${poolUsers}.${POLICY}`, 'changed', 'command', '*', 'r', 'isolation'),
      F(POOL_PLATFORM, 'policy', `${poolUsers}.${POLICY}`, 'changed', 'permissive', true, false, 'isolation'),
      F(
        POOL_PLATFORM,
        'policy',
        `${poolUsers}.${POLICY}`,
        'changed',
        'roles',
        ['PUBLIC'],
        [POOL_ROLE],
        'isolation',
      ),
    ],
  },
  {
    rule: 'another policy on a pool table',
    change: (w) => {
      must(contentsOf(w, DATA).policies.get('pool.users')).push({
        ...poolPolicy(w),
        name: 'open',
        using: 'true',
      });
    },
    findings: [
      F(POOL_PLATFORM, 'policy', `${poolUsers}.open`, 'unexpected', 'exists', null, 'true', 'isolation'),
    ],
  },
  {
    rule: 'default privileges in the pool schema for an unmanaged role',
    change: (w) => {
      contentsOf(w, DATA).defaultAcls.set('pool', [
        {
          schema: 'pool',
          owner: OWNER,
          objtype: 'r',
          acl: [{ grantee: 'reporting', privileges: ['SELECT'] }],
        },
      ]);
    },
    findings: [
      F(POOL_PLATFORM, 'default-privileges', `${DATA}.pool`, 'unexpected', 'tables:reporting', null, [
        'SELECT',
      ]),
    ],
  },
  {
    rule: 'a table elsewhere in the shared database owned by a tenant login or the pool login',
    change: (w) => {
      contentsOf(w, DATA).tables.set('public', [
        { ...table('public', 'reporting', false), name: 'notes', owner: BRIDGE },
        { ...table('public', 'reporting', false), name: 'cache', owner: POOL_ROLE },
        { ...table('public', 'reporting', false), name: 'ok', owner: 'reporting' },
      ]);
    },
    findings: [
      F(of(BRIDGE_T), 'table', `${DATA}.public.notes`, 'changed', 'owner', OWNER, BRIDGE, 'isolation'),
      F(POOL_PLATFORM, 'table', `${DATA}.public.cache`, 'changed', 'owner', OWNER, POOL_ROLE, 'isolation'),
    ],
  },
  /* ---------------- orphans */
  {
    rule: 'a tenant-named role, schema and database no tenant holds',
    change: (w) => {
      w.obs.roles.set(GHOST, role(GHOST, 'bridge', GHOST));
      contentsOf(w, DATA).schemas.set(GHOST, tenantSchema(GHOST, GHOST));
      w.obs.databases.set(GHOST, {
        name: GHOST,
        owner: OWNER,
        allowConnections: true,
        connect: [],
      });
    },
    findings: [
      F(NOBODY('ghost'), 'role', GHOST, 'unexpected', 'exists', false, true, 'orphan'),
      F(NOBODY('ghost'), 'schema', `${DATA}.${GHOST}`, 'unexpected', 'exists', false, true, 'orphan'),
      F(NOBODY('ghost'), 'database', GHOST, 'unexpected', 'exists', false, true, 'orphan'),
    ],
  },
  {
    rule: "an offboarded tenant's leftover login, attributed to it",
    change: (w) => {
      w.input.known.push({ ...tenant('bridge', 'gone-bridge'), status: 'offboarded' });
      const gone = tenantObjectName('gone-bridge');
      w.obs.roles.set(gone, role(gone, 'bridge', gone));
    },
    findings: [
      F(
        of({ id: 'id-gone-bridge', slug: 'gone-bridge' }),
        'role',
        tenantObjectName('gone-bridge'),
        'unexpected',
        'exists',
        false,
        true,
        'orphan',
      ),
    ],
  },
  {
    rule: "an in-flight tenant's objects are not orphans (no finding)",
    change: (w) => {
      const busy = tenant('silo', 'busy-silo');
      w.input.known.push(busy);
      w.input.busy.add(busy.id);
      const name = tenantObjectName(busy.slug);
      w.obs.roles.set(name, role(name, 'silo', layout.siloSchema));
      w.obs.databases.set(name, {
        name,
        owner: OWNER,
        allowConnections: true,
        connect: [],
      });
      w.obs.secrets.set(tenantSecretName('busy-silo'), {
        name: tenantSecretName('busy-silo'),
        version: 1,
        keyId: 'k',
        keyAlias: tenantKeyAlias('busy-silo'),
        keyState: 'enabled',
      });
      w.obs.keys.set(tenantKeyAlias('busy-silo'), 'k');
    },
    findings: [],
  },
  {
    rule: "a promoted tenant's earlier placement kept for its rollback window is not an orphan (no finding)",
    change: (w) => {
      w.input.retained.set(SILO_T.id, new Set<Tier>(['bridge']));
      contentsOf(w, DATA).schemas.set(SILO, tenantSchema(SILO, SILO));
    },
    findings: [],
  },
  {
    rule: 'a pool membership of no pool tenant',
    change: (w) => w.obs.poolMembers.set('id-ghost', 'ghost'),
    findings: [
      F(
        NOBODY('ghost'),
        'pool-membership',
        `${DATA}.tenantry_meta.pool_members:ghost`,
        'unexpected',
        'exists',
        false,
        true,
        'orphan',
      ),
    ],
  },
  {
    rule: 'a secret and a key of no tenant, and a promotion secret left by a finished promotion',
    change: (w) => {
      for (const name of [tenantSecretName('ghost'), `tenantry/${SILO_T.slug}/promotion`])
        w.obs.secrets.set(name, {
          name,
          version: 1,
          keyId: 'k',
          keyAlias: tenantKeyAlias('ghost'),
          keyState: 'enabled',
        });
      w.obs.keys.set(tenantKeyAlias('ghost'), 'k');
    },
    findings: [
      F(NOBODY('ghost'), 'secret', tenantSecretName('ghost'), 'unexpected', 'exists', false, true, 'orphan'),
      F(
        of(SILO_T),
        'secret',
        `tenantry/${SILO_T.slug}/promotion`,
        'unexpected',
        'exists',
        false,
        true,
        'orphan',
      ),
      F(NOBODY('ghost'), 'key', tenantKeyAlias('ghost'), 'unexpected', 'exists', false, true, 'orphan'),
    ],
  },
];

describe('diffLocal', () => {
  it('finds nothing in a fleet exactly as provisioned', () => {
    const w = clean();
    expect(diffLocal(layout, w.input, w.obs)).toEqual([]);
  });

  it.each(cases)('$rule', ({ change, findings }) => {
    const w = clean();
    change(w);
    expect(diffLocal(layout, w.input, w.obs)).toEqual(findings);
  });

  it('judges no Postgres objects of an account-tier tenant', () => {
    const w = clean();
    const acct = tenant('account', 'acme-account');
    w.input.tenants.push(acct);
    w.input.known.push(acct);
    expect(diffLocal(layout, w.input, w.obs)).toEqual([]);
  });
});

/*
 * Login groups (docs/credentials.md): the bridge tenant and the pool moved to two logins each, the
 * bridge tenant's last rotation from login a to login b. One clean world, and one change per rule.
 */
const NOW = Date.UTC(2026, 5, 1, 12);
const HOUR = 3_600_000;
const rotationPolicy = { everyDays: 30, spreadHours: 24, graceMinutes: 60 };
const layoutRotating = {
  ...layout,
  rotation: { pool: rotationPolicy, bridge: rotationPolicy, silo: rotationPolicy },
};
const [BRIDGE_A, BRIDGE_B] = loginRoleNames(BRIDGE) as [string, string];
const [POOL_A, POOL_B] = loginRoleNames(POOL_ROLE) as [string, string];

/** A role of a login group: the group (no membership) or a login in it, logging in with a password or not. */
const loginRole = (
  name: string,
  tier: 'pool' | 'bridge',
  searchPath: string,
  opts: { group?: string; login: boolean },
): ObservedRole => ({
  ...role(name, tier, searchPath),
  canLogin: opts.login,
  memberOf: opts.group ? [opts.group] : [],
  verifierHash: opts.login ? `hash-${name}` : null,
});

function twoLogins(): World {
  const w = clean();
  const roles = w.obs.roles;
  roles.set(BRIDGE, loginRole(BRIDGE, 'bridge', BRIDGE, { login: false }));
  roles.set(BRIDGE_A, loginRole(BRIDGE_A, 'bridge', BRIDGE, { group: BRIDGE, login: false }));
  roles.set(BRIDGE_B, loginRole(BRIDGE_B, 'bridge', BRIDGE, { group: BRIDGE, login: true }));
  roles.set(POOL_ROLE, loginRole(POOL_ROLE, 'pool', 'pool', { login: false }));
  roles.set(POOL_A, loginRole(POOL_A, 'pool', 'pool', { group: POOL_ROLE, login: true }));
  roles.set(POOL_B, loginRole(POOL_B, 'pool', 'pool', { group: POOL_ROLE, login: false }));
  must(w.input.tenants.find((t) => t.id === BRIDGE_T.id)).outputs.user = BRIDGE_B;
  w.obs.credentials = new Map([
    [POOL_A, 'ok'],
    [BRIDGE_B, 'ok'],
    [SILO, 'ok'],
  ]);
  w.obs.observedAt = NOW;
  w.obs.logins = {
    poolRotating: false,
    rotations: new Map([
      [
        BRIDGE_T.id,
        {
          group: BRIDGE,
          current: BRIDGE_B,
          previous: BRIDGE_A,
          rotatedAt: new Date(NOW - 10 * 24 * HOUR),
          graceUntil: new Date(NOW - 10 * 24 * HOUR + HOUR),
          retiredAt: new Date(NOW - 10 * 24 * HOUR + HOUR),
        },
      ],
      [
        'pool',
        {
          group: POOL_ROLE,
          current: POOL_A,
          previous: POOL_ROLE,
          rotatedAt: new Date(NOW - 2 * 24 * HOUR),
          graceUntil: new Date(NOW - 2 * 24 * HOUR + HOUR),
          retiredAt: new Date(NOW - 2 * 24 * HOUR + HOUR),
        },
      ],
    ]),
  };
  for (const s of w.obs.secrets.values()) s.createdAt = new Date(NOW - 5 * 24 * HOUR);
  return w;
}

const bridgeRotation = (w: World) => must(w.obs.logins?.rotations.get(BRIDGE_T.id));

const loginCases: Case[] = [
  {
    rule: 'the old login still logs in, with its password, past its grace period (not retired)',
    change: (w) => {
      Object.assign(bridgeRotation(w), {
        rotatedAt: new Date(NOW - 3 * HOUR),
        graceUntil: new Date(NOW - 2 * HOUR),
        retiredAt: null,
      });
      roleOf(w, BRIDGE_A).canLogin = true;
      roleOf(w, BRIDGE_A).verifierHash = 'old';
    },
    findings: [
      F(of(BRIDGE_T), 'role', BRIDGE_A, 'changed', 'password', 'none', 'a password'),
      F(of(BRIDGE_T), 'role', BRIDGE_A, 'changed', 'login', false, true),
    ],
  },
  {
    rule: 'the old login logs in inside its grace period: as it should (nothing found)',
    change: (w) => {
      Object.assign(bridgeRotation(w), {
        rotatedAt: new Date(NOW - HOUR / 2),
        graceUntil: new Date(NOW + HOUR / 2),
        retiredAt: null,
      });
      roleOf(w, BRIDGE_A).canLogin = true;
      roleOf(w, BRIDGE_A).verifierHash = 'old';
      // Its password is the previous version's, not the current: not judged against the secret.
      w.obs.credentials?.set(BRIDGE_A, 'differs');
    },
    findings: [],
  },
  {
    rule: 'the group its tenant left can log in again (someone ALTER ROLE … LOGIN PASSWORD)',
    change: (w) => {
      roleOf(w, BRIDGE).canLogin = true;
      roleOf(w, BRIDGE).verifierHash = 'set-by-hand';
    },
    findings: [
      F(of(BRIDGE_T), 'role', BRIDGE, 'changed', 'password', 'none', 'a password'),
      F(of(BRIDGE_T), 'role', BRIDGE, 'changed', 'login', false, true),
    ],
  },
  {
    rule: "the current login's password is no longer its secret's",
    change: (w) => w.obs.credentials?.set(BRIDGE_B, 'differs'),
    findings: [F(of(BRIDGE_T), 'role', BRIDGE_B, 'changed', 'password', 'stored secret', 'another password')],
  },
  {
    rule: 'a login that is no longer a member of its group (it would reach nothing), another that joined a role',
    change: (w) => {
      roleOf(w, BRIDGE_B).memberOf = [];
      roleOf(w, BRIDGE_A).memberOf = [BRIDGE, SILO];
    },
    findings: [
      F(of(BRIDGE_T), 'role', BRIDGE_A, 'unexpected', `memberOf:${SILO}`, null, true, 'isolation'),
      F(of(BRIDGE_T), 'role', BRIDGE_B, 'missing', `memberOf:${BRIDGE}`, true, false),
    ],
  },
  {
    rule: 'a password older than its tier schedule allows (never rotated: its secret version is the age)',
    change: (w) => {
      w.obs.logins?.rotations.delete(BRIDGE_T.id);
      must(w.obs.secrets.get(tenantSecretName(BRIDGE_T.slug))).createdAt = new Date(NOW - 40 * 24 * HOUR);
    },
    findings: [
      F(of(BRIDGE_T), 'secret', tenantSecretName(BRIDGE_T.slug), 'changed', 'passwordAgeDays', 32, 40),
    ],
  },
  {
    rule: "the pool's logins are not judged while a rotation of the pool's login is in flight",
    change: (w) => {
      must(w.obs.logins).poolRotating = true;
      roleOf(w, POOL_B).canLogin = true;
      roleOf(w, POOL_B).verifierHash = 'staged';
    },
    findings: [],
  },
  {
    rule: "the pool's old login (the group itself) still logs in after its grace period",
    change: (w) => {
      roleOf(w, POOL_ROLE).canLogin = true;
      roleOf(w, POOL_ROLE).verifierHash = 'old';
    },
    findings: [
      F(POOL_PLATFORM, 'role', POOL_ROLE, 'changed', 'password', 'none', 'a password', 'isolation'),
      F(POOL_PLATFORM, 'role', POOL_ROLE, 'changed', 'login', false, true),
    ],
  },
  {
    rule: 'the logins of a tenant nobody has are orphans, as its group is',
    change: (w) => {
      for (const l of loginRoleNames(GHOST))
        w.obs.roles.set(l, loginRole(l, 'bridge', GHOST, { group: GHOST, login: false }));
    },
    findings: loginRoleNames(GHOST).map((l) =>
      F(NOBODY('ghost'), 'role', l, 'unexpected', 'exists', false, true, 'orphan'),
    ),
  },
];

describe('diffLocal: login groups and rotation', () => {
  it('finds nothing in a fleet on two logins, exactly as rotated', () => {
    const w = twoLogins();
    expect(diffLocal(layoutRotating, w.input, w.obs)).toEqual([]);
  });

  it.each(loginCases)('$rule', ({ change, findings }) => {
    const w = twoLogins();
    change(w);
    expect(diffLocal(layoutRotating, w.input, w.obs)).toEqual(findings);
  });
});
