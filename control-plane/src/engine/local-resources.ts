import type { DataPlane } from '../dataplane/dataplane.js';
import { TenantryError } from '../domain/errors.js';
import { effectiveLimits } from '../domain/lifecycle.js';
import {
  loginRoleName,
  loginRoleNames,
  nextLogin,
  PLATFORM_KEY_ALIAS,
  POOL_SECRET,
  stagedPasswordSecretName,
  tenantKeyAlias,
  tenantObjectName,
  tenantSecretName,
} from '../domain/naming.js';
import type {
  ConnectionDescriptor,
  KeyRotated,
  KeyStore,
  SecretStore,
  StoredSecret,
  StoreWrite,
} from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import type { LimitOverrides } from '../domain/tenant.js';
import type { RoleLimits, Tier, TierCatalog } from '../domain/tiers.js';
import {
  type ArchivePlacement,
  type ArchiveWritten,
  restoreArchive,
  tableDigests,
  writeArchive,
} from '../export/archive.js';
import type { Manifest, TableManifest } from '../export/format.js';
import { generatePassword } from '../lib/passwords.js';
import { type Placement, placementOf } from '../promotion/placement.js';
import { freezeTenant, unfreezeTenantFor } from '../providers/postgres/freeze.js';
import {
  applyGrants,
  applyLogins,
  applySchema,
  databaseProvider,
  dropLogins,
  endLoginSessions,
  ensureFreezeSupport,
  ensureFreezeTriggers,
  grantsProvider,
  grantsSql,
  guardNewTablesSql,
  guardPrivateSchemaSql,
  hardenDatabase,
  isFreezeSupportMissing,
  poolMembershipProvider,
  requireFreezeSupportSql,
  retireLogins,
  schemaProvider,
  type TenantTemplate,
  templateRelations,
} from '../providers/postgres/index.js';
import { scramVerifierAsync } from '../providers/postgres/scram.js';
import {
  applyRoleLimits,
  resumeLogins,
  rolesThatLogIn,
  suspendLogins,
} from '../providers/postgres/suspension.js';

const RELAXED = { relaxed: true } as const;

/** The tenant a resource belongs to, on a tier the local target provisions. */
export interface ResourceTenant {
  id: string;
  slug: string;
  tier: Exclude<Tier, 'account'>;
  /** Its limit overrides: a rotation's new login gets the same limits as the old one. */
  limits?: LimitOverrides;
}

/** Whose logins a rotation changes: a tenant's own, or (`pool`) the pool's shared login. */
export type LoginOwner = ResourceTenant | 'pool';

/**
 * A login group as the local target keeps it: the NOLOGIN role holding the grants, its two logins
 * (alternating users), the secret whose latest version names the current login and its password, and
 * what every login of it gets (the tier's limits, the placement's search path).
 */
interface LoginGroup {
  group: string;
  logins: [string, string];
  secretName: string;
  keyAlias: string;
  limits: RoleLimits;
  searchPath: string[];
}

/** The login a secret version names (the group itself in the single-login layout) and its password. */
export interface StoredLogin {
  user: string;
  password: string;
  /** Its SCRAM verifier, being made on the thread pool while the step's round trips go on. */
  verifier?: Promise<string>;
}

/** The login with its verifier started (a failure surfaces where it is awaited, never unhandled). */
function withVerifier(login: StoredLogin | null): StoredLogin | null {
  if (!login) return null;
  const verifier = scramVerifierAsync(login.password);
  verifier.catch(() => undefined);
  return { ...login, verifier };
}

function loginOf(value: Record<string, unknown>, g: LoginGroup): StoredLogin | null {
  if (typeof value.password !== 'string') return null;
  return { user: typeof value.user === 'string' ? value.user : g.group, password: value.password };
}

/** A rotation's step: the login it moved from and the one it made current. */
export interface LoginMove {
  from: string;
  to: string;
}

/**
 * The local target's per-tenant resources, one method each: the key, the credentials, the login
 * roles, the silo database, the schema, the grants and the pool membership; and the rotation of the
 * credentials and the key. The engine's onboarding, offboarding and rotation steps and drift
 * remediation all call these, so each resource is written once. Every method is idempotent (a crash
 * re-runs the step in flight).
 *
 * Logins: a bridge or silo tenant's grants are held by the NOLOGIN role `tenant_<slug>`, and it logs
 * in as one of two members of it (`login_a_…`, `login_b_…`, domain/naming.ts); the pool's shared role
 * likewise. The tenant's secret (the pool's: POOL_SECRET) names the current one. A tenant onboarded
 * before the two logins logs in as `tenant_<slug>` itself until its first rotation moves it.
 */
export class LocalTenantResources {
  constructor(
    private readonly dp: DataPlane,
    private readonly keys: KeyStore & SecretStore,
    private readonly catalog: TierCatalog,
    private readonly template: TenantTemplate,
  ) {}

  /** Where the tenant's tables are (pool: the shared schema; bridge: its schema in the shared database; silo: its own database). */
  placement(t: ResourceTenant): Placement {
    return placementOf(this.dp, t.slug, t.tier);
  }

  async ensureKey(t: ResourceTenant, opts?: StoreWrite): Promise<{ keyId: string; keyAlias: string }> {
    const alias = tenantKeyAlias(t.slug);
    const { keyId } = await this.keys.ensureKey(t.id, alias, opts);
    return { keyId, keyAlias: alias };
  }

  shredKey(t: ResourceTenant): Promise<void> {
    return this.keys.shredKey(tenantKeyAlias(t.slug));
  }

  /**
   * An onboarding's key and credentials: the tenant's key, then the secret as an earlier run of it
   * left it, or its first version written now under the key; with the login and password it names
   * (none for a pool descriptor), which the same run's role step sets without reading the secret back.
   * A store that holds both writes a new tenant's key and secret in one round trip.
   */
  async provisionCredentials(
    t: ResourceTenant,
    opts: StoreWrite,
  ): Promise<{ keyId: string; keyAlias: string; ref: string; version: number; login: StoredLogin | null }> {
    const group = this.loginGroup(t);
    const name = tenantSecretName(t.slug);
    const keyAlias = tenantKeyAlias(t.slug);
    const descriptor = this.descriptorFor(t);
    // Its verifier is made on the thread pool while the writes go on.
    const login = withVerifier(loginOf(descriptor, group));
    const both = await this.keys.createKeyAndSecret?.(t.id, keyAlias, name, { ...descriptor }, opts);
    if (both) return { ...both, keyAlias, login };
    const { keyId } = await this.ensureKey(t, opts);
    const found = async () => {
      const current = await this.keys.getSecret(name);
      return current
        ? { ref: current.ref, version: current.version, login: withVerifier(loginOf(current.value, group)) }
        : null;
    };
    // A store that writes only if absent takes one round trip; another is read first.
    const earlier = this.keys.createSecret ? null : await found();
    if (earlier) return { keyId, keyAlias, ...earlier };
    const written = this.keys.createSecret
      ? await this.keys.createSecret(name, keyAlias, { ...descriptor }, opts)
      : await this.keys.putSecret(name, keyAlias, { ...descriptor }, 1, opts);
    if (written) return { keyId, keyAlias, ...written, login };
    const now = await found(); // an earlier run of this onboarding wrote it
    if (!now)
      throw new TenantryError('SECRET_UNAVAILABLE', `the secret ${name} vanished while it was written`);
    return { keyId, keyAlias, ...now };
  }

  /**
   * Writes the tenant's descriptor as a new version of its secret: for a login of its own, its first
   * login and a new password (the role step then sets it on the role, from this version); a pool
   * descriptor carries no login (`connection` adds the pool's current one).
   */
  async writeCredentials(
    t: ResourceTenant,
    nextVersion?: number,
    opts?: StoreWrite,
  ): Promise<{ ref: string; version: number }> {
    const descriptor = this.descriptorFor(t);
    return this.keys.putSecret(
      tenantSecretName(t.slug),
      tenantKeyAlias(t.slug),
      { ...descriptor },
      nextVersion,
      opts,
    );
  }

  async deleteCredentials(t: ResourceTenant): Promise<void> {
    const name = tenantSecretName(t.slug);
    await this.keys.deleteSecret(stagedPasswordSecretName(name));
    await this.keys.deleteSecret(name);
  }

  /** A tenant's login group, or the pool's. */
  private loginGroup(owner: LoginOwner): LoginGroup {
    if (owner === 'pool') {
      const n = this.dp.names;
      return {
        group: n.poolRole,
        logins: loginRoleNames(n.poolRole),
        secretName: POOL_SECRET,
        keyAlias: PLATFORM_KEY_ALIAS,
        limits: this.catalog.tiers.pool.role,
        searchPath: [n.poolSchema],
      };
    }
    const group = tenantObjectName(owner.slug);
    return {
      group,
      logins: loginRoleNames(group),
      secretName: tenantSecretName(owner.slug),
      keyAlias: tenantKeyAlias(owner.slug),
      limits: effectiveLimits(this.catalog.tiers[owner.tier].role, owner.limits),
      searchPath: [this.placement(owner).schema],
    };
  }

  /**
   * The login the secret's latest version names (the group itself in the single-login layout, and
   * for a pool secret written before the pool had logins) and its password.
   */
  private async storedLogin(
    g: LoginGroup,
    read?: StoredSecret | null,
  ): Promise<StoredLogin & { version: number }> {
    const secret = read ?? (await this.keys.getSecret(g.secretName));
    const login = secret ? loginOf(secret.value, g) : null;
    if (!secret || !login) throw new TenantryError('SECRET_UNAVAILABLE', 'the login credentials are missing');
    return { ...login, version: secret.version };
  }

  /**
   * The tenant's login roles (or, `pool`, the pool's shared login) with the tier's limits and search
   * path: the group holding the grants and its two logins (applyLogins). With `password`, the secret's latest password is set on the login it
   * names (as a SCRAM verifier, never in plaintext); `andThen` runs on the same session. Returns the
   * login the secret names.
   */
  async applyRole(
    t: LoginOwner,
    opts: {
      password: boolean;
      andThen?: (db: Queryable) => Promise<void>;
      login?: StoredLogin;
      /** An onboarding's: the roles are expected not to exist yet (applyRoles' fresh path). */
      fresh?: boolean;
    },
  ): Promise<string> {
    const g = this.loginGroup(t);
    const { user, password, verifier } = opts.login ?? (await this.storedLogin(g));
    const made = opts.password && verifier ? await verifier : undefined;
    // NOSUPERUSER NOBYPASSRLS are stated explicitly; drift runs observe them in batch.
    await this.maintenance(async (db) => {
      await applyLogins(
        db,
        made !== undefined
          ? { ...this.loginsSpec(g, user), verifier: made }
          : this.loginsSpec(g, user, opts.password ? password : undefined),
        { fresh: opts.fresh === true },
      );
      await opts.andThen?.(db);
    });
    return user;
  }

  private loginsSpec(g: LoginGroup, current: string, password?: string) {
    return {
      group: g.group,
      logins: g.logins,
      ...g.limits,
      searchPath: g.searchPath,
      current,
      ...(password !== undefined ? { password } : {}),
    };
  }

  /**
   * Drops the login roles. A bridge tenant's group holds privileges in the shared database; a silo's
   * went with its database, but a silo promoted from bridge may still hold some there: both are cleaned.
   */
  dropRole(t: ResourceTenant): Promise<void> {
    const g = this.loginGroup(t);
    return this.data((data) =>
      this.maintenance((db) =>
        dropLogins(db, { group: g.group, logins: g.logins, ...g.limits, cleanupIn: [data] }),
      ),
    );
  }

  /* ---- rotation */

  /** A rotation's first step: both logins of the group exist, members of it, with the tier's settings. */
  async ensureLogins(owner: LoginOwner): Promise<void> {
    const g = this.loginGroup(owner);
    const { user } = await this.storedLogin(g);
    await this.maintenance((db) => applyLogins(db, this.loginsSpec(g, user)));
  }

  /**
   * Sets a new password on the group's idle login and lets it log in (the current one is untouched).
   * The password is staged in the store first, so a run after a crash sets the same one.
   */
  async setNextPassword(owner: LoginOwner): Promise<LoginMove> {
    const g = this.loginGroup(owner);
    const { user } = await this.storedLogin(g);
    const to = nextLogin(g.group, user);
    const staged = stagedPasswordSecretName(g.secretName);
    let password = (await this.keys.getSecret(staged))?.value.password;
    if (typeof password !== 'string') {
      password = generatePassword();
      await this.keys.putSecret(staged, g.keyAlias, { password });
    }
    await this.maintenance((db) => applyLogins(db, this.loginsSpec(g, to, password as string)));
    return { from: user, to };
  }

  /**
   * Publishes the staged password as the secret's new current version, naming `move.to` (the previous
   * version stays, naming the old login). Once published, the staged copy goes.
   */
  async publishNextPassword(owner: LoginOwner, move: LoginMove): Promise<{ user: string; version: number }> {
    const g = this.loginGroup(owner);
    const staged = stagedPasswordSecretName(g.secretName);
    const current = await this.keys.getSecret(g.secretName);
    if (!current) throw new TenantryError('SECRET_UNAVAILABLE', 'the login credentials are missing');
    let version = current.version;
    if (current.value.user !== move.to) {
      const password = (await this.keys.getSecret(staged))?.value.password;
      if (typeof password !== 'string')
        throw new TenantryError('SECRET_UNAVAILABLE', 'the staged password is missing');
      version = (
        await this.keys.putSecret(
          g.secretName,
          g.keyAlias,
          { ...current.value, user: move.to, password },
          current.version + 1,
        )
      ).version;
    }
    await this.keys.deleteSecret(staged);
    return { user: move.to, version };
  }

  /**
   * Ends every login of the group but the one its secret names: no password, no login, sessions
   * terminated (the group itself too, once a rotation moved its tenant off it). A password staged by
   * a rotation that did not publish it goes too. Returns the logins that could still log in.
   */
  async retireLogins(owner: LoginOwner): Promise<string[]> {
    const g = this.loginGroup(owner);
    const { user } = await this.storedLogin(g);
    const retired = await this.maintenance((db) =>
      retireLogins(db, { group: g.group, logins: g.logins, keep: user }),
    );
    await this.keys.deleteSecret(stagedPasswordSecretName(g.secretName));
    return retired;
  }

  /** Whether the key store re-keys data keys (the local one does; KMS keys rotate their own material). */
  get rotatesKeys(): boolean {
    return this.keys.rotateKey !== undefined;
  }

  /** The id of the tenant's data key now (what a key rotation records before it starts). */
  async keyIdOf(t: ResourceTenant): Promise<string> {
    const key = await this.keys.describeKey(tenantKeyAlias(t.slug));
    if (key?.state !== 'enabled') throw new TenantryError('SECRET_UNAVAILABLE', 'the tenant has no data key');
    return key.keyId;
  }

  /**
   * Replaces the tenant's data key `from` (as recorded before the first try), its secrets re-encrypted
   * under the new one (KeyStore.rotateKey): a run after the replacement finished does nothing.
   */
  rotateKey(t: ResourceTenant, from: string): Promise<KeyRotated> {
    if (!this.keys.rotateKey)
      throw new TenantryError(
        'ROTATION_NOT_AVAILABLE_ON_TARGET',
        'this key store does not re-key data keys (a KMS key rotates its own material: enable automatic key rotation on it)',
      );
    return this.keys.rotateKey(tenantKeyAlias(t.slug), t.id, from);
  }

  /**
   * The silo's own database, cloned from the hardened template when it is created (`fromTemplate`:
   * false converges an existing one without a template). `andThen` runs on the same session.
   */
  async createDatabase(
    t: ResourceTenant,
    opts: { fromTemplate: boolean; andThen?: (db: Queryable) => Promise<void> } = { fromTemplate: true },
  ): Promise<string> {
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    await this.maintenance(async (db) => {
      await databaseProvider.create(db, {
        name,
        owner: n.ownerRole,
        ...(opts.fromTemplate ? { template: n.siloTemplate } : {}),
      });
      await opts.andThen?.(db);
    });
    return name;
  }

  dropDatabase(t: ResourceTenant): Promise<void> {
    const n = this.dp.names;
    return this.maintenance((db) =>
      databaseProvider.delete(db, { name: tenantObjectName(t.slug), owner: n.ownerRole }),
    );
  }

  /** Provisioning sessions on the data plane commit relaxed where that is safe (DataPlane.allowRelaxedCommits). */
  private data<T>(fn: (db: Queryable) => Promise<T>): Promise<T> {
    return this.dp.withData(fn, RELAXED);
  }

  private maintenance<T>(fn: (db: Queryable) => Promise<T>): Promise<T> {
    return this.dp.withMaintenance(fn, RELAXED);
  }

  /** Runs `fn` on the database holding the tenant's tables. */
  onTenantDatabase<T>(t: ResourceTenant, fn: (db: Queryable) => Promise<T>): Promise<T> {
    const { database } = this.placement(t);
    return database === this.dp.names.database ? this.data(fn) : this.dp.withDatabase(database, fn, RELAXED);
  }

  /**
   * A new tenant schema from the template (onboarding), with the tenant role's grants on it (the role
   * step ran before). A bridge schema gets its freeze guards and its grants in the transaction that
   * creates its tables (nobody writes there yet, and nothing sees the schema without its grants); a
   * silo is cloned from the hardened template, one catalog read hardens a silo older than that, and
   * the grants follow on the same session.
   */
  async createSchema(t: ResourceTenant): Promise<string> {
    const spec = this.schemaSpec(t);
    if (t.tier === 'bridge') {
      await this.data(async (db) => {
        // The template's relations, read once per process: the guards and grants name them.
        const rels = await templateRelations(db, spec.template);
        const grants = this.grantsSpec(t);
        // Freeze support is checked inside the schema's transaction, and made only if it is missing.
        // The grants go last: they end with the database-ACL lock, held only until the commit after.
        const opts = {
          andThen: [
            requireFreezeSupportSql(),
            ...guardNewTablesSql(spec.name, rels.tables),
            ...grantsSql(grants, rels),
          ],
          // A schema found already there (a rerun): its relations found in the catalog, guarded where not yet.
          andThenExisting: [
            requireFreezeSupportSql(),
            guardPrivateSchemaSql(spec.name),
            ...grantsSql(grants),
          ],
        };
        try {
          await applySchema(db, spec, opts);
        } catch (e) {
          if (!isFreezeSupportMissing(e)) throw e;
          await ensureFreezeSupport(db, spec.owner);
          await applySchema(db, spec, opts);
        }
      });
    } else {
      await this.onTenantDatabase(t, async (db) => {
        await schemaProvider.create(db, spec);
        await hardenDatabase(db, { shared: false });
        await this.grantOn(db, t);
      });
    }
    return spec.name;
  }

  /**
   * Converges an existing tenant's schema (drift): the template's tables, owner and version, then the
   * freeze guards one table per transaction, since the tenant may be writing.
   */
  repairSchema(t: ResourceTenant): Promise<void> {
    const spec = this.schemaSpec(t);
    return this.onTenantDatabase(t, async (db) => {
      await schemaProvider.create(db, spec);
      await ensureFreezeTriggers(db, spec.name, { owner: spec.owner });
    });
  }

  /** Drops a bridge schema, after ending the tenant's own sessions (an open transaction would hold a lock the DROP waits on). A silo's schema goes with its database. */
  async dropSchema(t: ResourceTenant): Promise<void> {
    if (t.tier !== 'bridge') return;
    const g = this.loginGroup(t);
    await this.maintenance((db) => endLoginSessions(db, { group: g.group, logins: g.logins }));
    await this.data((db) => schemaProvider.delete(db, this.schemaSpec(t)));
  }

  /** The tenant role's grants on its placement. */
  applyGrants(t: ResourceTenant): Promise<void> {
    return this.onTenantDatabase(t, (db) => this.grantOn(db, t));
  }

  /** The same, on a session already open on the tenant's database (inside the caller's transaction). */
  grantOn(db: Queryable, t: ResourceTenant): Promise<void> {
    return applyGrants(db, this.grantsSpec(t));
  }

  revokeGrants(t: ResourceTenant): Promise<void> {
    const spec = this.grantsSpec(t);
    return this.onTenantDatabase(t, (db) => grantsProvider.delete(db, spec));
  }

  /** The pool tenant's membership row (removal freezes it first, waiting for the shared role's older transactions). */
  async joinPool(t: ResourceTenant): Promise<string> {
    const spec = this.membershipSpec(t);
    await this.data((db) => poolMembershipProvider.create(db, spec));
    return spec.schema;
  }

  leavePool(t: ResourceTenant): Promise<void> {
    const spec = this.membershipSpec(t);
    return this.data((db) => poolMembershipProvider.delete(db, spec));
  }

  /**
   * The descriptor the data plane reads. A pool tenant's secret names no login: the pool's shared one
   * (its current login and password, POOL_SECRET) is added here, so a rotation of the pool login is
   * one secret version, not one per pool tenant.
   */
  async connection(t: ResourceTenant): Promise<ConnectionDescriptor> {
    const name = tenantSecretName(t.slug);
    const pool = this.loginGroup('pool');
    // A pool tenant's secret and the pool's login in one round trip. The secret, not the tenant's
    // tier, says which login it uses (a promotion flips it first), so the login is read alone when
    // the secret names the pool and the tier did not.
    const read =
      t.tier === 'pool' && this.keys.getSecrets
        ? await this.keys.getSecrets([name, pool.secretName])
        : new Map([[name, await this.keys.getSecret(name)]]);
    const secret = read.get(name);
    if (!secret) throw new TenantryError('SECRET_UNAVAILABLE', 'the tenant has no connection secret');
    const v = secret.value as unknown as ConnectionDescriptor;
    const login =
      v.tier === 'pool'
        ? await this.storedLogin(pool, read.get(pool.secretName))
        : { user: v.user, password: v.password };
    return {
      tenantId: v.tenantId,
      tier: v.tier,
      host: v.host,
      port: v.port,
      database: v.database,
      ...(v.schema ? { schema: v.schema } : {}),
      user: login.user,
      ...(login.password ? { password: login.password } : {}),
      secretRef: secret.ref,
      ...(v.tenantSetting ? { tenantSetting: v.tenantSetting } : {}),
    };
  }

  /** What the data plane needs to connect, password included (stored only in the tenant's secret). */
  private descriptorFor(t: ResourceTenant): Omit<ConnectionDescriptor, 'user'> & { user?: string } {
    const n = this.dp.names;
    const base = {
      tenantId: t.id,
      tier: t.tier,
      host: this.dp.host,
      port: this.dp.port,
      secretRef: `local-secret://${tenantSecretName(t.slug)}`,
    };
    if (t.tier === 'pool')
      return { ...base, database: n.database, schema: n.poolSchema, tenantSetting: n.tenantSetting };
    const { database, schema } = this.placement(t);
    const user = loginRoleName(tenantObjectName(t.slug), 'a');
    return { ...base, database, schema, user, password: generatePassword() };
  }

  private schemaSpec(t: ResourceTenant) {
    return { name: this.placement(t).schema, owner: this.dp.names.ownerRole, template: this.template };
  }

  private grantsSpec(t: ResourceTenant) {
    const { database, schema } = this.placement(t);
    return { database, schema, role: tenantObjectName(t.slug), owner: this.dp.names.ownerRole };
  }

  private membershipSpec(t: ResourceTenant) {
    const n = this.dp.names;
    return {
      schema: n.poolSchema,
      tenantId: t.id,
      slug: t.slug,
      setting: n.tenantSetting,
      writers: [n.poolRole, ...loginRoleNames(n.poolRole)],
    };
  }

  /* ---- lifecycle (domain/lifecycle.ts, docs/lifecycle.md): limits, suspension, export, restore */

  /**
   * Every login role a bridge or silo tenant may have: its group (the login itself in the single-login
   * layout) and the group's two logins (domain/naming.ts `loginRoleNames`). A pool tenant has none of
   * its own (the pool's shared login serves every pool tenant).
   */
  tenantLoginRoles(t: ResourceTenant): string[] {
    if (t.tier === 'pool') return [];
    const group = tenantObjectName(t.slug);
    return [group, ...loginRoleNames(group)];
  }

  /** The tenant's limits (its tier's, with its overrides) on each of its login roles; LOGIN untouched. */
  applyLimits(t: ResourceTenant, limits: RoleLimits): Promise<string[]> {
    return this.maintenance((db) => applyRoleLimits(db, this.tenantLoginRoles(t), limits));
  }

  /** The tenant's login roles that may log in now (what a suspension records before it cuts them off). */
  loginsThatCanLogIn(t: ResourceTenant): Promise<string[]> {
    return this.maintenance((db) => rolesThatLogIn(db, this.tenantLoginRoles(t)));
  }

  /** Suspension, bridge and silo: every login role of the tenant NOLOGIN, its open sessions ended. */
  suspendLogins(t: ResourceTenant): Promise<string[]> {
    return this.maintenance((db) => suspendLogins(db, this.tenantLoginRoles(t)));
  }

  /** Reactivation, bridge and silo: LOGIN given back to the roles the suspension took it from. */
  resumeLogins(t: ResourceTenant, logins: readonly string[]): Promise<string[]> {
    const mine = new Set(this.tenantLoginRoles(t));
    return this.maintenance((db) =>
      resumeLogins(
        db,
        logins.filter((l) => mine.has(l)),
      ),
    );
  }

  /**
   * Suspension, pool: the tenant's rows frozen by the freeze guards (reason `suspended`, no deadline),
   * once every transaction the pool's logins began before it has ended. A wait that times out keeps the
   * freeze (writes are refused from the start) and is retried.
   */
  suspendWrites(t: ResourceTenant): Promise<void> {
    const n = this.dp.names;
    return this.data((db) =>
      freezeTenant(
        db,
        {
          schema: n.poolSchema,
          tenantId: t.id,
          reason: 'suspended',
          owner: n.ownerRole,
          writers: [n.poolRole, ...loginRoleNames(n.poolRole)],
        },
        { keepOnTimeout: true },
      ),
    );
  }

  /** Reactivation, pool: the suspension's freeze lifted (a freeze for any other reason is left alone). */
  resumeWrites(t: ResourceTenant): Promise<void> {
    const n = this.dp.names;
    return this.data((db) => unfreezeTenantFor(db, n.poolSchema, t.id, 'suspended'));
  }

  /** How an archive reaches the tenant's rows in its placement. */
  private archivePlacement(t: ResourceTenant): ArchivePlacement {
    const p = this.placement(t);
    return {
      schema: p.schema,
      shared: p.shared,
      ...(p.shared ? { tenantSetting: this.dp.names.tenantSetting } : {}),
    };
  }

  /** Every table of the tenant's placement, its rows only, to one archive at `file` (export/). */
  exportArchive(
    t: ResourceTenant,
    file: string,
    meta: { exportId: string; schemaVersion: number },
  ): Promise<ArchiveWritten> {
    return this.onTenantDatabase(t, (db) =>
      writeArchive(db, this.archivePlacement(t), file, {
        exportId: meta.exportId,
        tenant: { id: t.id, slug: t.slug, tier: t.tier },
        schemaVersion: meta.schemaVersion,
      }),
    );
  }

  /** An archive's rows loaded as the tenant's (an onboarding from an export), once its manifest is the expected one. */
  restoreArchive(
    t: ResourceTenant,
    file: string,
    manifestSha256: string,
  ): Promise<{ manifest: Manifest; skipped: boolean }> {
    return this.onTenantDatabase(t, (db) =>
      restoreArchive(db, this.archivePlacement(t), file, t.id, manifestSha256),
    );
  }

  /** The tenant's rows now, table by table, as an export would write them (count and SHA-256). */
  tableDigests(t: ResourceTenant): Promise<TableManifest[]> {
    return this.onTenantDatabase(t, (db) => tableDigests(db, this.archivePlacement(t), t.id));
  }
}
