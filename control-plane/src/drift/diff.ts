import {
  loginRoleNames,
  POOL_SECRET,
  parseLoginRoleName,
  tenantKeyAlias,
  tenantObjectName,
  tenantSecretName,
} from '../domain/naming.js';
import { maxPasswordAgeMs } from '../domain/rotation.js';
import type { RotationPolicy, Tier } from '../domain/tiers.js';
import { FREEZE_TRIGGERS } from '../providers/postgres/freeze.js';
import type { RoleLimits } from '../providers/postgres/types.js';
import {
  type AclEntry,
  GUARD_ENABLED,
  type ObservedDatabaseContents,
  type ObservedFleet,
  type ObservedLoginRotation,
  type ObservedRole,
  type ObservedTable,
} from './catalog.js';
import type { CredentialStatus } from './credentials.js';
import { adjustForLifecycle } from './lifecycle.js';
import type { DetectInput, DriftCategory, DriftKind, DriftResource, DriftValue, Finding } from './types.js';

/** What the local target provisions, independent of any one tenant. */
export interface LocalLayout {
  dataDatabase: string;
  ownerRole: string;
  poolRole: string;
  poolSchema: string;
  siloSchema: string;
  policyName: string;
  limits: Record<'pool' | 'bridge' | 'silo', RoleLimits>;
  /** Tables the tenant template creates. */
  templateTables: string[];
  /**
   * The newest template version and the tables at each version: a schema is judged against the
   * tables of the version it is recorded at, and one behind the newest is `pending-rollout`.
   * Without them, every schema is judged against `templateTables` and nothing is pending.
   */
  newestVersion?: number;
  tablesAt?: Record<number, string[]>;
  /** The policy expression exactly as pg_get_expr prints the one Tenantry writes. */
  policyExpression: string;
  /** Scheduled credential rotation per tier (templates/tiers.json): a password older than it allows is drift. */
  rotation?: Partial<Record<'pool' | 'bridge' | 'silo', RotationPolicy>>;
}

/**
 * How long after its grace period an old login may still be enabled before drift reports it: the
 * schedule retires it at its next tick, later when the tenant is busy (its operations run one at a time).
 */
export const RETIRE_SLACK_MS = 15 * 60_000;

/** What a role of a login group must be (see checkRole). */
interface RoleExpectation {
  /** LOGIN required (true), refused (false), or either ('any': an old login inside its grace period). */
  login: boolean | 'any';
  /** The group a login is a member of, its one membership (a group itself: none). */
  group?: string;
  /** Its password is the current version of its secret's (the login its descriptor names). */
  credentials: boolean;
  /** It has no password at all (a login retired or not yet used; a group its tenant no longer logs in as). */
  noPassword: boolean;
  /** Its tier's limits and settings (a group's are not used by any session). */
  limits: boolean;
}
/** The single-login layout's one role, and the current login of a group. */
const LOGGING_IN: RoleExpectation = { login: true, credentials: true, noPassword: false, limits: true };
const DAY_MS = 86_400_000;

const DML = ['DELETE', 'INSERT', 'SELECT', 'UPDATE'];
const USAGE = ['USAGE'];
const TENANT_PREFIX = 'tenant_';
const SECRET_RE = /^tenantry\/([a-z][a-z0-9-]{2,39})\/(connection|promotion)$/;
const KEY_RE = /^alias\/tenantry\/([a-z][a-z0-9-]{2,39})$/;

/** The slug a Tenantry object name derives from (`tenant_a_b` → `a-b`); slugs never contain `_`. */
export const slugOfObject = (name: string): string | null =>
  name.startsWith(TENANT_PREFIX) && /^[a-z][a-z0-9_]{2,39}$/.test(name.slice(TENANT_PREFIX.length))
    ? name.slice(TENANT_PREFIX.length).replaceAll('_', '-')
    : null;

/** The slug a role belongs to: a tenant's group, or one of its two logins. */
const slugOfRole = (name: string): string | null => slugOfObject(parseLoginRoleName(name)?.group ?? name);

const sameList = (a: readonly string[], b: readonly string[]) => {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
};
/** What a login's password is, when it is not its stored secret's. */
const CREDENTIAL_ACTUAL: Record<Exclude<CredentialStatus, 'ok'>, string> = {
  differs: 'another password',
  none: 'no password',
  md5: 'an md5 hash',
  'unknown-format': 'not a SCRAM verifier',
};

/** pg_trigger.tgenabled as the ALTER TABLE clause that sets it. */
const GUARD_STATE_NAMES: Record<string, string> = {
  O: 'enabled',
  D: 'disabled',
  R: 'enabled replica',
  A: 'enabled always',
};
const SHARED_GUARDS = [...FREEZE_TRIGGERS.shared].sort();
const PRIVATE_GUARDS = [...FREEZE_TRIGGERS.private].sort();
const normalizePath = (v: string | undefined) =>
  v === undefined
    ? null
    : v
        .split(',')
        .map((s) => s.trim().replaceAll('"', ''))
        .join(', ');

interface Owner {
  tenantId: string | null;
  tenantSlug: string | null;
  affects?: Tier[];
}
/** The platform's resources, by the tenants they serve (see Finding.affects). */
const POOL_PLATFORM: Owner = { tenantId: null, tenantSlug: null, affects: ['pool'] };
const SHARED_DATABASE: Owner = { tenantId: null, tenantSlug: null, affects: ['pool', 'bridge'] };
const EVERY_TIER: Owner = { tenantId: null, tenantSlug: null, affects: ['pool', 'bridge', 'silo'] };

/**
 * Desired vs actual for the local target: pure, so every rule is unit-testable. Judged tenants get
 * state and isolation checks; the platform (pool tables, pool and owner roles, the shared database)
 * gets isolation checks; objects named like Tenantry's that no judged or busy tenant owns are orphans.
 */
export function diffLocal(layout: LocalLayout, input: DetectInput, obs: ObservedFleet): Finding[] {
  const out: Finding[] = [];
  const push = (
    o: Owner,
    resource: DriftResource,
    name: string,
    kind: DriftKind,
    field: string,
    desired: DriftValue,
    actual: DriftValue,
    category: DriftCategory = 'state',
  ) => out.push({ ...o, resource, name, kind, field, desired, actual, category });

  const isManagedLoginRole = (r: string) => {
    const group = parseLoginRoleName(r)?.group ?? r;
    return group.startsWith(TENANT_PREFIX) || group === layout.poolRole;
  };
  const ownerOfRole = (r: string): Owner =>
    (parseLoginRoleName(r)?.group ?? r) === layout.poolRole ? POOL_PLATFORM : ownerOf(slugOfRole(r));
  const now = obs.observedAt;
  const grantCategory = (grantee: string): DriftCategory =>
    grantee === 'PUBLIC' || isManagedLoginRole(grantee) ? 'isolation' : 'state';

  /**
   * The ACL of one object: the `expected` grantee holds exactly `privs`; nobody else but the owner
   * holds any. (One grantee per object, passed flat: this runs for every tenant object of the fleet.)
   */
  const checkAcl = (
    o: Owner,
    resource: DriftResource,
    name: string,
    acl: AclEntry[] | null,
    owner: string,
    expected: string,
    privs: string[],
  ) => {
    const entries = acl ?? [];
    let actual: string[] | undefined;
    for (const e of entries) {
      if (e.grantee === expected) {
        actual = e.privileges;
        break;
      }
    }
    if (!actual) push(o, resource, name, 'missing', `privileges:${expected}`, privs, null);
    else if (!sameList(actual, privs)) {
      const extra = actual.some((p) => !privs.includes(p));
      push(
        o,
        resource,
        name,
        'changed',
        `privileges:${expected}`,
        privs,
        actual,
        extra ? 'isolation' : 'state',
      );
    }
    for (const { grantee, privileges } of entries) {
      if (grantee === owner || grantee === expected) continue;
      push(
        o,
        resource,
        name,
        'unexpected',
        `privileges:${grantee}`,
        null,
        privileges,
        grantCategory(grantee),
      );
    }
  };

  /** The role settings a tier's limits ask for, once per tier rather than once per role. */
  const tierSettings = new Map<RoleLimits, [string, string][]>();
  const settingsOf = (limits: RoleLimits) => {
    let s = tierSettings.get(limits);
    if (!s) {
      s = [
        ['statement_timeout', String(limits.statementTimeoutMs)],
        ['idle_in_transaction_session_timeout', String(limits.idleInTransactionSessionTimeoutMs)],
      ];
      tierSettings.set(limits, s);
    }
    return s;
  };

  const checkRole = (
    o: Owner,
    name: string,
    limits: RoleLimits,
    searchPath: string,
    e: RoleExpectation = LOGGING_IN,
  ) => {
    const r: ObservedRole | undefined = obs.roles.get(name);
    if (!r) {
      push(o, 'role', name, 'missing', 'exists', true, false);
      return;
    }
    const pool = (e.group ?? name) === layout.poolRole;
    // Any login may change its own password: its stored secret (its descriptor) no longer works.
    // The pool's shared login changed by one tenant locks every other pool tenant out.
    const cred = e.credentials ? obs.credentials?.get(name) : undefined;
    if (cred !== undefined && cred !== 'ok')
      push(
        o,
        'role',
        name,
        'changed',
        'password',
        'stored secret',
        CREDENTIAL_ACTUAL[cred],
        pool ? 'isolation' : 'state',
      );
    // A login that should be disabled and is not: an old password still works.
    if (e.noPassword && typeof r.verifierHash === 'string')
      push(o, 'role', name, 'changed', 'password', 'none', 'a password', pool ? 'isolation' : 'state');
    // …and its own settings in one database (ALTER ROLE … IN DATABASE … SET), which win over its
    // role-wide ones there. Tenantry sets one: a silo's search_path in its own database (promotion).
    const siloDb = e.group ?? name;
    for (const db in r.databaseSettings) {
      const config = r.databaseSettings[db] as Record<string, string>;
      for (const k in config) {
        const v = config[k] as string;
        if (db === siloDb && k === 'search_path' && normalizePath(v) === layout.siloSchema) continue;
        push(o, 'role', name, 'unexpected', `databaseSetting:${db}:${k}`, null, v);
      }
    }
    if (e.login !== 'any' && r.canLogin !== e.login)
      push(o, 'role', name, 'changed', 'login', e.login, r.canLogin);
    if (r.superuser || r.bypassRls || r.createRole || r.createDb || r.replication) {
      for (const [field, value] of [
        ['superuser', r.superuser],
        ['bypassRls', r.bypassRls],
        ['createRole', r.createRole],
        ['createDb', r.createDb],
        ['replication', r.replication],
      ] as const) {
        if (value) push(o, 'role', name, 'changed', field, false, true, 'isolation');
      }
    }
    if (e.limits) {
      if (r.connectionLimit !== limits.connectionLimit)
        push(o, 'role', name, 'changed', 'connectionLimit', limits.connectionLimit, r.connectionLimit);
      for (const [k, v] of settingsOf(limits)) {
        const actual = r.settings[k] ?? null;
        if (actual !== v) push(o, 'role', name, 'changed', k, v, actual);
      }
      const raw = r.settings.search_path;
      const sp = raw === searchPath ? raw : normalizePath(raw);
      if (sp !== searchPath) push(o, 'role', name, 'changed', 'search_path', searchPath, sp);
    }
    if (e.group && !r.memberOf.includes(e.group))
      push(o, 'role', name, 'missing', `memberOf:${e.group}`, true, false);
    for (const m of r.memberOf) {
      if (m === e.group) continue;
      const cat: DriftCategory = isManagedLoginRole(m) || m === layout.ownerRole ? 'isolation' : 'state';
      push(o, 'role', name, 'unexpected', `memberOf:${m}`, null, true, cat);
    }
  };

  /**
   * A login group (docs/credentials.md): the NOLOGIN role holding the grants, logging in as
   * `current`, one of its two logins, whose password is its secret's; the other login, and the group
   * itself once its tenant moved off it, log in no more, with no password, unless a rotation's grace
   * period keeps it (login_rotations says, until RETIRE_SLACK_MS after its end). A group that is still
   * its tenant's login (`current` is the group: the single-login layout, before a first rotation) is
   * judged as that login, and logins of it, if any, as not yet used.
   */
  const checkLoginGroup = (
    o: Owner,
    group: string,
    current: string,
    limits: RoleLimits,
    searchPath: string,
    rotation: ObservedLoginRotation | undefined,
  ) => {
    const idle: RoleExpectation = { login: false, group, credentials: false, noPassword: true, limits: true };
    if (current === group) {
      checkRole(o, group, limits, searchPath);
      for (const l of loginRoleNames(group)) if (obs.roles.has(l)) checkRole(o, l, limits, searchPath, idle);
      return;
    }
    const inGrace = (role: string) =>
      rotation?.previous === role &&
      rotation.retiredAt === null &&
      (now === undefined ||
        (rotation.graceUntil !== null && now <= rotation.graceUntil.getTime() + RETIRE_SLACK_MS));
    const was = inGrace(group);
    checkRole(o, group, limits, searchPath, {
      login: was ? 'any' : false,
      credentials: false,
      noPassword: !was,
      limits: false,
    });
    for (const l of loginRoleNames(group)) {
      if (l === current) checkRole(o, l, limits, searchPath, { ...LOGGING_IN, group });
      else if (inGrace(l)) checkRole(o, l, limits, searchPath, { ...idle, login: 'any', noPassword: false });
      else checkRole(o, l, limits, searchPath, idle);
    }
  };

  /**
   * A password older than its tier's schedule allows (its last rotation, or, never rotated, its
   * secret's current version): the schedule is not keeping up, or the tier's rotation is stuck.
   */
  const checkPasswordAge = (
    o: Owner,
    tier: 'pool' | 'bridge' | 'silo',
    secretName: string,
    rotation: ObservedLoginRotation | undefined,
  ) => {
    const policy = layout.rotation?.[tier];
    const since = rotation?.rotatedAt.getTime() ?? obs.secrets.get(secretName)?.createdAt?.getTime();
    if (!policy || since === undefined || now === undefined) return;
    const max = maxPasswordAgeMs(policy);
    if (now - since > max)
      push(
        o,
        'secret',
        secretName,
        'changed',
        'passwordAgeDays',
        Math.round(max / DAY_MS),
        Math.round(((now - since) / DAY_MS) * 10) / 10,
      );
  };

  /** A tenant schema (bridge, or a silo's `app`): owner, version, ACLs, tables and default privileges. */
  const checkTenantSchema = (
    o: Owner,
    db: string,
    contents: ObservedDatabaseContents | undefined,
    schema: string,
    role: string,
    templateVersion: number,
  ) => {
    const sname = `${db}.${schema}`;
    const s = contents?.schemas.get(schema);
    if (!contents || !s) {
      push(o, 'schema', sname, 'missing', 'exists', true, false);
      return;
    }
    if (s.owner !== layout.ownerRole)
      push(o, 'schema', sname, 'changed', 'owner', layout.ownerRole, s.owner, grantCategory(s.owner));
    if (s.version !== templateVersion)
      push(o, 'schema', sname, 'changed', 'templateVersion', templateVersion, s.version);
    checkAcl(o, 'schema', sname, s.acl, s.owner, role, USAGE);
    checkTables(o, db, schema, contents.tables.get(schema) ?? [], role, false, tablesAt(templateVersion));
    checkDefaultAcl(o, db, contents, schema, role);
  };

  /** The template's tables at a version (the newest's when the layout does not say). */
  const tablesAt = (version: number | null | undefined): string[] =>
    (version !== null && version !== undefined ? layout.tablesAt?.[version] : undefined) ??
    layout.templateTables;
  /** A tenant (or the pool) recorded behind the newest template version: its rollout is pending. */
  const pendingRollout = (o: Owner, name: string, version: number) => {
    if (layout.newestVersion !== undefined && version < layout.newestVersion)
      push(o, 'schema', name, 'changed', 'rollout', layout.newestVersion, version, 'pending-rollout');
  };

  const checkTables = (
    o: Owner,
    db: string,
    schema: string,
    tables: ObservedTable[],
    grantee: string,
    rls: boolean,
    expected: string[],
  ) => {
    for (const t of expected) {
      if (!tables.some((x) => x.name === t))
        push(o, 'table', `${db}.${schema}.${t}`, 'missing', 'exists', true, false);
    }
    for (const t of tables) {
      const tname = `${db}.${schema}.${t.name}`;
      if (!expected.includes(t.name)) {
        push(o, 'table', tname, 'unexpected', 'exists', false, true);
        continue;
      }
      if (t.owner !== layout.ownerRole)
        push(o, 'table', tname, 'changed', 'owner', layout.ownerRole, t.owner, grantCategory(t.owner));
      if (rls) {
        if (!t.rlsEnabled) push(o, 'table', tname, 'changed', 'rlsEnabled', true, false, 'isolation');
        if (!t.rlsForced) push(o, 'table', tname, 'changed', 'rlsForced', true, false, 'isolation');
      }
      checkAcl(o, 'table', tname, t.acl, t.owner, grantee, DML);
      // Without its write-freeze guards, a promotion's or an offboarding's freeze of this table could be bypassed.
      const guards = rls ? SHARED_GUARDS : PRIVATE_GUARDS;
      if (!sameList(t.guards, guards))
        push(o, 'table', tname, 'changed', 'freezeGuard', guards, t.guards, 'isolation');
      // A guard that exists but does not fire is as good as dropped; an 'A' (always) one would
      // refuse a promotion's copy into this placement instead.
      for (const g in t.guardStates) {
        const state = t.guardStates[g] as string;
        push(
          o,
          'table',
          tname,
          'changed',
          `freezeGuardEnabled:${g}`,
          GUARD_STATE_NAMES[GUARD_ENABLED] as string,
          GUARD_STATE_NAMES[state] ?? state,
          state === 'A' ? 'state' : 'isolation',
        );
      }
    }
  };

  /**
   * A freeze standing on a tenant's live placement refuses all its writes: only a running operation
   * may hold one. (Offboarded pool tenants keep theirs as markers, so the rows are indexed, not scanned.)
   */
  const frozenIndex = new Map<
    ObservedDatabaseContents,
    Map<string, { tenantId: string; reason: string }[]>
  >();
  const frozenIn = (contents: ObservedDatabaseContents) => {
    let index = frozenIndex.get(contents);
    if (!index) {
      index = new Map();
      // By schema (a private schema's every freeze is its tenant's) and by schema and tenant (pool).
      for (const f of contents.frozen) {
        for (const key of [f.schema, `${f.schema}|${f.tenantId}`]) {
          const list = index.get(key) ?? [];
          list.push(f);
          index.set(key, list);
        }
      }
      frozenIndex.set(contents, index);
    }
    return (key: string) => index.get(key) ?? [];
  };
  const checkFrozen = (
    o: Owner,
    tenantId: string,
    db: string,
    contents: ObservedDatabaseContents | undefined,
    schema: string,
  ) => {
    if (!contents || contents.frozen.length === 0) return;
    const rows = frozenIn(contents)(schema === layout.poolSchema ? `${schema}|${tenantId}` : schema);
    for (const f of rows) push(o, 'freeze', `${db}.${schema}`, 'unexpected', 'frozen', null, f.reason);
  };

  const checkDefaultAcl = (
    o: Owner,
    db: string,
    contents: ObservedDatabaseContents,
    schema: string,
    role: string | null,
  ) => {
    const name = `${db}.${schema}`;
    const rows = contents.defaultAcls.get(schema) ?? [];
    if (role) {
      const tables = rows.find((r) => r.owner === layout.ownerRole && r.objtype === 'r');
      const mine = tables?.acl.find((e) => e.grantee === role);
      if (!mine) push(o, 'default-privileges', name, 'missing', `tables:${role}`, DML, null);
      else if (!sameList(mine.privileges, DML))
        push(o, 'default-privileges', name, 'changed', `tables:${role}`, DML, mine.privileges);
    }
    for (const r of rows) {
      for (const e of r.acl) {
        if (e.grantee === role || e.grantee === r.owner) continue;
        push(
          o,
          'default-privileges',
          name,
          'unexpected',
          `${r.objtype === 'r' ? 'tables' : r.objtype === 'S' ? 'sequences' : r.objtype}:${e.grantee}`,
          null,
          e.privileges,
          grantCategory(e.grantee),
        );
      }
    }
  };

  /* ---------------- who may hold what */
  const known = new Map<string, (typeof input.known)[number]>();
  // Prefer a live tenant over an offboarded one with the same slug (slugs are reused after offboarding).
  for (const t of input.known) {
    const prev = known.get(t.slug);
    if (!prev || prev.status === 'offboarded' || prev.status === 'failed') known.set(t.slug, t);
  }
  const ownerOf = (slug: string | null): Owner => {
    const t = slug ? known.get(slug) : undefined;
    return t ? { tenantId: t.id, tenantSlug: t.slug } : { tenantId: null, tenantSlug: slug };
  };
  const busySlugs = new Set(input.known.filter((t) => input.busy.has(t.id)).map((t) => t.slug));
  const judgedSlugs = new Set(input.tenants.map((t) => t.slug));
  const judgedBySlug = new Map(input.tenants.map((t) => [t.slug, t]));
  const holds = (slug: string | null, tiers: Tier[]): boolean => {
    if (!slug) return false;
    if (busySlugs.has(slug)) return true;
    const t = judgedBySlug.get(slug);
    if (!t) return false;
    const retained = input.retained.get(t.id);
    return tiers.includes(t.tier) || tiers.some((x) => retained?.has(x));
  };

  /* ---------------- tenants */
  const data = obs.contents.get(layout.dataDatabase);
  const dataDb = obs.databases.get(layout.dataDatabase);
  const dataConnect = new Set(dataDb?.connect ?? []);
  for (const t of input.tenants) {
    if (t.tier === 'account') continue;
    const o: Owner = { tenantId: t.id, tenantSlug: t.slug };
    const name = tenantObjectName(t.slug);
    const alias = tenantKeyAlias(t.slug);
    const keyId = obs.keys.get(alias);
    if (!keyId) push(o, 'key', alias, 'missing', 'exists', true, false);
    else if (typeof t.outputs.keyId === 'string' && t.outputs.keyId !== keyId)
      push(o, 'key', alias, 'changed', 'keyId', t.outputs.keyId, keyId);
    const secretName = tenantSecretName(t.slug);
    const secret = obs.secrets.get(secretName);
    if (!secret) push(o, 'secret', secretName, 'missing', 'exists', true, false);
    else if (secret.keyState !== 'enabled')
      push(o, 'secret', secretName, 'changed', 'keyState', 'enabled', secret.keyState);
    else if (secret.keyAlias !== alias)
      push(o, 'secret', secretName, 'changed', 'keyAlias', alias, secret.keyAlias);

    const placementName =
      t.tier === 'pool'
        ? `${layout.dataDatabase}.${layout.poolSchema}`
        : t.tier === 'bridge'
          ? `${layout.dataDatabase}.${name}`
          : `${name}.${layout.siloSchema}`;
    pendingRollout(o, placementName, t.templateVersion);
    if (t.tier === 'pool') {
      // A pool tenant's rows live in the shared tables: they must be at its version at least.
      const poolVersion = data?.schemas.get(layout.poolSchema)?.version;
      if (typeof poolVersion === 'number' && poolVersion < t.templateVersion)
        push(o, 'schema', placementName, 'changed', 'templateVersion', t.templateVersion, poolVersion);
      const member = obs.poolMembers.get(t.id);
      const mname = `${layout.dataDatabase}.tenantry_meta.pool_members:${t.slug}`;
      if (member === undefined) push(o, 'pool-membership', mname, 'missing', 'exists', true, false);
      else if (member !== t.slug) push(o, 'pool-membership', mname, 'changed', 'slug', t.slug, member);
      checkFrozen(o, t.id, layout.dataDatabase, data, layout.poolSchema);
      continue;
    }
    const limits = layout.limits[t.tier];
    // The login its descriptor names (the role step's and each rotation's output); before the two
    // logins, its group itself.
    const current = typeof t.outputs.user === 'string' ? t.outputs.user : name;
    const rotation = obs.logins?.rotations.get(t.id);
    checkPasswordAge(o, t.tier, secretName, rotation);
    if (t.tier === 'bridge') {
      checkLoginGroup(o, name, current, limits, name, rotation);
      checkTenantSchema(o, layout.dataDatabase, data, name, name, t.templateVersion);
      checkFrozen(o, t.id, layout.dataDatabase, data, name);
      if (dataDb && !dataConnect.has(name))
        push(o, 'database', layout.dataDatabase, 'missing', `privileges:${name}`, ['CONNECT'], null);
      continue;
    }
    // silo
    checkLoginGroup(o, name, current, limits, layout.siloSchema, rotation);
    const db = obs.databases.get(name);
    if (!db) {
      push(o, 'database', name, 'missing', 'exists', true, false);
    } else {
      if (db.owner !== layout.ownerRole)
        push(o, 'database', name, 'changed', 'owner', layout.ownerRole, db.owner, grantCategory(db.owner));
      const connect = new Set(db.connect);
      if (!connect.has(name)) push(o, 'database', name, 'missing', `privileges:${name}`, ['CONNECT'], null);
      for (const g of connect) {
        if (g === name || g === db.owner) continue;
        if (g === 'PUBLIC' || isManagedLoginRole(g))
          push(o, 'database', name, 'unexpected', `privileges:${g}`, null, ['CONNECT'], 'isolation');
      }
      const why = obs.unreachable.get(name);
      if (why !== undefined) push(o, 'database', name, 'changed', 'reachable', true, why);
      else {
        checkTenantSchema(o, name, obs.contents.get(name), layout.siloSchema, name, t.templateVersion);
        checkFrozen(o, t.id, name, obs.contents.get(name), layout.siloSchema);
      }
    }
    // A silo role reaches only its own database.
    // (A bridge role loses its grants and CONNECT on the shared database at the cutover to silo.)
    if (dataConnect.has(name))
      push(
        o,
        'database',
        layout.dataDatabase,
        'unexpected',
        `privileges:${name}`,
        null,
        ['CONNECT'],
        'isolation',
      );
  }

  /* ---------------- platform: the shared pool and the roles every tenant relies on */
  // The pool's shared login: not judged while a rotation of it is in flight (between two states).
  if (!obs.logins?.poolRotating) {
    const rotation = obs.logins?.rotations.get('pool');
    const current = rotation?.current ?? layout.poolRole;
    checkLoginGroup(POOL_PLATFORM, layout.poolRole, current, layout.limits.pool, layout.poolSchema, rotation);
    checkPasswordAge(POOL_PLATFORM, 'pool', POOL_SECRET, rotation);
  }
  const owner = obs.roles.get(layout.ownerRole);
  if (!owner) push(EVERY_TIER, 'role', layout.ownerRole, 'missing', 'exists', true, false);
  else {
    if (owner.canLogin)
      push(EVERY_TIER, 'role', layout.ownerRole, 'changed', 'login', false, true, 'isolation');
    if (owner.bypassRls)
      push(EVERY_TIER, 'role', layout.ownerRole, 'changed', 'bypassRls', false, true, 'isolation');
    if (owner.superuser)
      push(EVERY_TIER, 'role', layout.ownerRole, 'changed', 'superuser', false, true, 'isolation');
  }
  if (!dataDb) push(SHARED_DATABASE, 'database', layout.dataDatabase, 'missing', 'exists', true, false);
  else {
    if (dataConnect.has('PUBLIC'))
      push(
        SHARED_DATABASE,
        'database',
        layout.dataDatabase,
        'unexpected',
        'privileges:PUBLIC',
        null,
        ['CONNECT'],
        'isolation',
      );
    if (!dataConnect.has(layout.poolRole))
      push(
        POOL_PLATFORM,
        'database',
        layout.dataDatabase,
        'missing',
        `privileges:${layout.poolRole}`,
        ['CONNECT'],
        null,
      );
  }
  // Any other database a managed login role may connect to (the control plane, postgres, another silo).
  for (const db of obs.databases.values()) {
    if (db.name === layout.dataDatabase || slugOfObject(db.name)) continue;
    for (const g of db.connect) {
      if (!isManagedLoginRole(g)) continue;
      push(
        ownerOfRole(g),
        'database',
        db.name,
        'unexpected',
        `privileges:${g}`,
        null,
        ['CONNECT'],
        'isolation',
      );
    }
  }
  const pool = data?.schemas.get(layout.poolSchema);
  const pname = `${layout.dataDatabase}.${layout.poolSchema}`;
  if (data && !pool) push(POOL_PLATFORM, 'schema', pname, 'missing', 'exists', true, false);
  if (data && pool) {
    if (pool.owner !== layout.ownerRole)
      push(
        POOL_PLATFORM,
        'schema',
        pname,
        'changed',
        'owner',
        layout.ownerRole,
        pool.owner,
        grantCategory(pool.owner),
      );
    checkAcl(POOL_PLATFORM, 'schema', pname, pool.acl, pool.owner, layout.poolRole, USAGE);
    if (pool.version !== null) pendingRollout(POOL_PLATFORM, pname, pool.version);
    const tables = data.tables.get(layout.poolSchema) ?? [];
    const poolTables = tablesAt(pool.version);
    checkTables(
      POOL_PLATFORM,
      layout.dataDatabase,
      layout.poolSchema,
      tables,
      layout.poolRole,
      true,
      poolTables,
    );
    for (const t of tables) {
      if (!poolTables.includes(t.name)) continue;
      const policies = data.policies.get(`${layout.poolSchema}.${t.name}`) ?? [];
      const base = `${layout.dataDatabase}.${layout.poolSchema}.${t.name}`;
      const ours = policies.find((p) => p.name === layout.policyName);
      if (!ours)
        push(
          POOL_PLATFORM,
          'policy',
          `${base}.${layout.policyName}`,
          'missing',
          'exists',
          true,
          false,
          'isolation',
        );
      else {
        const pn = `${base}.${layout.policyName}`;
        const check: [string, DriftValue, DriftValue][] = [
          ['using', layout.policyExpression, ours.using],
          ['withCheck', layout.policyExpression, ours.withCheck],
          ['command', '*', ours.command],
          ['permissive', true, ours.permissive],
          ['roles', ['PUBLIC'], ours.roles],
        ];
        for (const [field, want, got] of check) {
          if (JSON.stringify(want) !== JSON.stringify(got))
            push(POOL_PLATFORM, 'policy', pn, 'changed', field, want, got, 'isolation');
        }
      }
      // Any other permissive policy ORs itself into ours; a restrictive one changes what tenants see.
      for (const p of policies) {
        if (p.name === layout.policyName) continue;
        push(
          POOL_PLATFORM,
          'policy',
          `${base}.${p.name}`,
          'unexpected',
          'exists',
          null,
          p.using,
          'isolation',
        );
      }
    }
    checkDefaultAcl(POOL_PLATFORM, layout.dataDatabase, data, layout.poolSchema, null);
  }
  // Tables owned by a login role anywhere else in the shared database (the pool role must own nothing).
  if (data) {
    for (const [schema, tables] of data.tables) {
      if (schema === layout.poolSchema || schema.startsWith(TENANT_PREFIX)) continue;
      for (const t of tables) {
        if (!isManagedLoginRole(t.owner)) continue;
        const o = ownerOfRole(t.owner);
        push(
          o,
          'table',
          `${layout.dataDatabase}.${schema}.${t.name}`,
          'changed',
          'owner',
          layout.ownerRole,
          t.owner,
          'isolation',
        );
      }
    }
  }

  /* ---------------- orphans: Tenantry's naming, no live owner */
  const orphan = (resource: DriftResource, name: string, slug: string | null) => {
    const o = ownerOf(slug);
    push(o, resource, name, 'unexpected', 'exists', false, true, 'orphan');
  };
  for (const r of obs.roles.keys()) {
    // A tenant's group and its two logins go with it (the pool's logins are the platform's).
    const group = parseLoginRoleName(r)?.group ?? r;
    const slug = slugOfObject(group);
    if (group.startsWith(TENANT_PREFIX) && !holds(slug, ['bridge', 'silo'])) orphan('role', r, slug);
  }
  if (data) {
    for (const s of data.schemas.keys()) {
      const slug = slugOfObject(s);
      if (s.startsWith(TENANT_PREFIX) && !holds(slug, ['bridge']))
        orphan('schema', `${layout.dataDatabase}.${s}`, slug);
    }
  }
  for (const d of obs.databases.keys()) {
    const slug = slugOfObject(d);
    if (d.startsWith(TENANT_PREFIX) && !holds(slug, ['silo'])) orphan('database', d, slug);
  }
  const judgedById = new Map(input.tenants.map((t) => [t.id, t]));
  const knownById = new Map(input.known.map((t) => [t.id, t]));
  for (const [id, slug] of obs.poolMembers) {
    if (input.busy.has(id)) continue;
    const t = judgedById.get(id);
    if (t && (t.tier === 'pool' || input.retained.get(id)?.has('pool'))) continue;
    const k = knownById.get(id);
    push(
      k ? { tenantId: k.id, tenantSlug: k.slug } : { tenantId: null, tenantSlug: slug },
      'pool-membership',
      `${layout.dataDatabase}.tenantry_meta.pool_members:${slug}`,
      'unexpected',
      'exists',
      false,
      true,
      'orphan',
    );
  }
  for (const s of obs.secrets.values()) {
    const m = SECRET_RE.exec(s.name);
    if (!m?.[1]) continue;
    const slug = m[1];
    const live = m[2] === 'connection' ? judgedSlugs.has(slug) : false;
    if (!live && !busySlugs.has(slug)) orphan('secret', s.name, slug);
  }
  for (const alias of obs.keys.keys()) {
    const slug = KEY_RE.exec(alias)?.[1];
    if (slug && slug !== 'platform' && !judgedSlugs.has(slug) && !busySlugs.has(slug))
      orphan('key', alias, slug);
  }
  // A suspended tenant's state and a tenant's limit overrides (drift/lifecycle.ts).
  return adjustForLifecycle(layout, input, obs, out);
}
