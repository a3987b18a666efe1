import type { DataPlane } from '../dataplane/dataplane.js';
import { TenantryError } from '../domain/errors.js';
import { POOL_SECRET, tenantKeyAlias, tenantObjectName, tenantSecretName } from '../domain/naming.js';
import type { ConnectionDescriptor, KeyStore, SecretStore } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import type { Tier, TierCatalog } from '../domain/tiers.js';
import { generatePassword } from '../lib/passwords.js';
import { type Placement, placementOf } from '../promotion/placement.js';
import {
  applyGrants,
  applyRole,
  applySchema,
  databaseProvider,
  endRoleSessions,
  ensureFreezeSupport,
  ensureFreezeTriggers,
  grantsProvider,
  guardPrivateSchemaSql,
  hardenDatabase,
  poolMembershipProvider,
  roleProvider,
  schemaProvider,
  type TenantTemplate,
} from '../providers/postgres/index.js';

const RELAXED = { relaxed: true } as const;

/** The tenant a resource belongs to, on a tier the local target provisions. */
export interface ResourceTenant {
  id: string;
  slug: string;
  tier: Exclude<Tier, 'account'>;
}

/**
 * The local target's per-tenant resources, one method each: the key, the credentials, the login
 * role, the silo database, the schema, the grants and the pool membership. The engine's onboarding
 * and offboarding steps and drift remediation both call these, so each resource is written once.
 * Every method is idempotent (a crash re-runs the step in flight).
 */
export class LocalTenantResources {
  /** The pool role's password, cached once read: every pool descriptor carries it. */
  private poolPassword: string | undefined;

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

  setPoolPassword(password: string): void {
    this.poolPassword = password;
  }

  async ensureKey(t: ResourceTenant): Promise<{ keyId: string; keyAlias: string }> {
    const alias = tenantKeyAlias(t.slug);
    const { keyId } = await this.keys.ensureKey(t.id, alias);
    return { keyId, keyAlias: alias };
  }

  shredKey(t: ResourceTenant): Promise<void> {
    return this.keys.shredKey(tenantKeyAlias(t.slug));
  }

  /** The tenant's stored credentials, if any. */
  currentCredentials(t: ResourceTenant): Promise<{ ref: string; version: number } | null> {
    return this.keys.getSecret(tenantSecretName(t.slug));
  }

  /**
   * Writes the tenant's descriptor as a new version of its secret: the pool's shared login, or a new
   * password for its own login (the role step then sets it on the role, from this version).
   */
  async writeCredentials(t: ResourceTenant, nextVersion?: number): Promise<{ ref: string; version: number }> {
    const descriptor = await this.descriptorFor(t);
    return this.keys.putSecret(
      tenantSecretName(t.slug),
      tenantKeyAlias(t.slug),
      { ...descriptor },
      nextVersion,
    );
  }

  deleteCredentials(t: ResourceTenant): Promise<void> {
    return this.keys.deleteSecret(tenantSecretName(t.slug));
  }

  /** The password of the secret's latest version (what the role must have). */
  async storedPassword(t: ResourceTenant): Promise<string> {
    const password = (await this.keys.getSecret(tenantSecretName(t.slug)))?.value.password;
    if (typeof password !== 'string')
      throw new TenantryError('SECRET_UNAVAILABLE', 'tenant credentials are missing');
    return password;
  }

  /**
   * The tenant's login role with its tier's limits and search path. With `password`, the secret's
   * latest password is set (as a SCRAM verifier, never in plaintext); `andThen` runs on the same session.
   */
  async applyRole(
    t: ResourceTenant,
    opts: { password: boolean; andThen?: (db: Queryable) => Promise<void> },
  ): Promise<void> {
    const password = opts.password ? await this.storedPassword(t) : undefined;
    const spec = {
      name: tenantObjectName(t.slug),
      ...this.catalog.tiers[t.tier].role,
      searchPath: [this.placement(t).schema],
      ...(password ? { password } : {}),
    };
    // applyRole states NOSUPERUSER NOBYPASSRLS explicitly; drift runs observe it in batch.
    await this.maintenance(async (db) => {
      await applyRole(db, spec);
      await opts.andThen?.(db);
    });
  }

  /**
   * Drops the login role. A bridge role holds privileges in the shared database; a silo's went with
   * its database, but a silo promoted from bridge may still hold some there: both are cleaned.
   */
  dropRole(t: ResourceTenant): Promise<void> {
    const spec = { name: tenantObjectName(t.slug), ...this.catalog.tiers[t.tier].role };
    return this.data((data) =>
      this.maintenance((db) => roleProvider.delete(db, { ...spec, cleanupIn: [data] })),
    );
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
   * A new tenant schema from the template (onboarding). A bridge schema gets its freeze guards in the
   * transaction that creates its tables (nobody writes there yet); a silo is cloned from the hardened
   * template, and one catalog read hardens a silo older than that.
   */
  async createSchema(t: ResourceTenant): Promise<string> {
    const spec = this.schemaSpec(t);
    if (t.tier === 'bridge') {
      await this.data(async (db) => {
        await ensureFreezeSupport(db, spec.owner);
        await applySchema(db, spec, { andThen: [guardPrivateSchemaSql(spec.name)] });
      });
    } else {
      await this.onTenantDatabase(t, async (db) => {
        await schemaProvider.create(db, spec);
        await hardenDatabase(db, { shared: false });
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
    await this.maintenance((db) => endRoleSessions(db, tenantObjectName(t.slug)));
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

  /** What the data plane needs to connect, password included (stored only in the tenant's secret). */
  private async descriptorFor(t: ResourceTenant): Promise<ConnectionDescriptor> {
    const n = this.dp.names;
    const base = {
      tenantId: t.id,
      tier: t.tier,
      host: this.dp.host,
      port: this.dp.port,
      secretRef: `local-secret://${tenantSecretName(t.slug)}`,
    };
    if (t.tier === 'pool') {
      const password = this.poolPassword ?? (await this.keys.getSecret(POOL_SECRET))?.value.password;
      if (typeof password !== 'string')
        throw new TenantryError('SECRET_UNAVAILABLE', 'pool credentials are missing');
      return {
        ...base,
        database: n.database,
        schema: n.poolSchema,
        user: n.poolRole,
        password,
        tenantSetting: n.tenantSetting,
      };
    }
    const { database, schema } = this.placement(t);
    return { ...base, database, schema, user: tenantObjectName(t.slug), password: generatePassword() };
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
      writers: [n.poolRole],
    };
  }
}
