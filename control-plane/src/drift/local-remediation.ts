import type { DataPlane } from '../dataplane/dataplane.js';
import { TenantryError } from '../domain/errors.js';
import { effectiveLimits } from '../domain/lifecycle.js';
import { loginRoleNames, tenantObjectName } from '../domain/naming.js';
import type { KeyStore, SecretStore } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import { isLocalReconcileStep, type LocalReconcileStep } from '../domain/steps.js';
import type { TierCatalog } from '../domain/tiers.js';
import { LocalTenantResources, type LoginOwner } from '../engine/local-resources.js';
import {
  ensureFreezeTriggers,
  ident,
  inTransaction,
  lockDownDatabases,
  poolProvider,
  type TenantTemplate,
  templateUpTo,
  unfreezeSchema,
  unfreezeTenant,
} from '../providers/postgres/index.js';
import { lockDatabaseAcl } from '../providers/postgres/sql.js';
import { GUARD_ENABLED } from './catalog.js';
import type { DriftRemediator, Finding, TenantRecord } from './types.js';

/**
 * A name read back from the catalogs (a grantee someone added by hand, another database), not from
 * input: it may be any valid Postgres identifier, so it is quoted as one (quotes doubled) rather than
 * held to Tenantry's own naming, which would leave a stray grant to an oddly named role unrepairable.
 */
function catalogName(name: string): string {
  if (name.length === 0 || name.length > 63 || name.includes('\0')) throw new Error('invalid catalog name');
  return `"${name.replaceAll('"', '""')}"`;
}
const grantee = (g: string) => (g === 'PUBLIC' ? 'PUBLIC' : catalogName(g));

/** A remediation step: its name (recorded on the reconcile operation) and what it does. */
interface Step {
  name: LocalReconcileStep;
  run: () => Promise<void>;
}

const hasField = (findings: Finding[], resource: string, pred: (f: Finding) => boolean = () => true) =>
  findings.some((f) => f.resource === resource && pred(f));

const granteeOf = (field: string): string | null => {
  const m = /^(?:privileges|tables|sequences):(.+)$/.exec(field);
  return m?.[1] ?? null;
};

/**
 * Repairs findings by calling the same resource methods as onboarding (engine/local-resources.ts),
 * in the same order: key, credentials, role, database, schema, grants, pool membership. Orphans are reported, never dropped: deleting
 * data is a decision for a person (offboard the tenant, or drop the object by hand).
 */
export class LocalDriftRemediator implements DriftRemediator {
  private readonly resources: LocalTenantResources;

  constructor(
    private readonly dp: DataPlane,
    private readonly keys: KeyStore & SecretStore,
    private readonly catalog: TierCatalog,
    private readonly template: TenantTemplate,
  ) {
    this.resources = new LocalTenantResources(dp, keys, catalog, template);
  }

  /** Whether remediation can act on a finding at all (the rest stays reported). */
  remediable(f: Finding): boolean {
    if (f.category === 'orphan') return false;
    if (f.category === 'pending-rollout') return false; // a rollout's to bring forward, not a repair's
    if (f.resource === 'table' && f.field === 'exists') return false; // a dropped table's data is gone; needs a person
    if (f.resource === 'key' && f.field === 'keyId') return false; // the record, not the data plane
    if (f.resource === 'database' && f.field === 'reachable') return false;
    // A new password is a rotation's, with its grace period (the schedule's, or POST …/credential-rotations):
    // written here, it would cut off the applications still using the old one.
    if (f.resource === 'secret' && f.field === 'passwordAgeDays') return false;
    return true;
  }

  /** The plan, without running it (the reconcile operation records it before it starts). */
  plan(tenant: TenantRecord | null, findings: Finding[]): LocalReconcileStep[] {
    return this.stepsFor(tenant, findings).map((s) => s.name);
  }

  /**
   * Runs one step of the plan. Each step reads what it needs from the store and the findings, never
   * from an earlier step in memory, so the executor can resume a reconcile operation at any step.
   */
  async runStep(tenant: TenantRecord | null, step: string, findings: Finding[]): Promise<void> {
    const s = isLocalReconcileStep(step)
      ? this.stepsFor(tenant, findings).find((x) => x.name === step)
      : undefined;
    if (!s) throw new TenantryError('PROVIDER_FAILED', `unknown reconcile step ${step}`);
    await s.run();
  }

  private stepsFor(tenant: TenantRecord | null, findings: Finding[]): Step[] {
    return tenant ? this.tenantSteps(tenant, findings) : this.platformSteps(findings);
  }

  private tenantSteps(record: TenantRecord, findings: Finding[]): Step[] {
    if (record.tier === 'account') return [];
    const t = { id: record.id, slug: record.slug, tier: record.tier };
    const r = this.resources;
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const steps: Step[] = [];
    const keyMissing = hasField(findings, 'key', (f) => f.kind === 'missing');
    const secretBad = keyMissing || hasField(findings, 'secret');
    const roleMissing = hasField(findings, 'role', (f) => f.kind === 'missing' && f.name === name);
    const dbMissing = hasField(findings, 'database', (f) => f.kind === 'missing' && f.field === 'exists');
    const schemaMissing = hasField(findings, 'schema', (f) => f.kind === 'missing' && f.field === 'exists');

    if (keyMissing) steps.push({ name: 'key', run: async () => void (await r.ensureKey(t)) });
    // New credentials: for a login of its own, a new password, which the role step sets on the role.
    if (secretBad) steps.push({ name: 'credentials', run: async () => void (await r.writeCredentials(t)) });
    if (t.tier === 'pool') {
      if (hasField(findings, 'freeze'))
        steps.push({
          name: 'unfreeze',
          run: () => this.dp.withData((db) => unfreezeTenant(db, n.poolSchema, t.id)),
        });
      if (hasField(findings, 'pool-membership'))
        steps.push({ name: 'pool-membership', run: async () => void (await r.joinPool(t)) });
      return steps;
    }
    const { schema } = r.placement(t);
    const roles = [name, ...loginRoleNames(name)];
    const roleFindings = findings.filter((f) => f.resource === 'role' && roles.includes(f.name));
    if (roleFindings.length > 0 || secretBad) {
      steps.push({
        name: 'role',
        run: async () => {
          await this.repairLogins(t, roleFindings, secretBad || roleMissing);
          // The tenant's limit overrides on top of its tier's (docs/lifecycle.md): expected state too.
          if (record.limits && Object.keys(record.limits).length > 0)
            await r.applyLimits(t, effectiveLimits(this.catalog.tiers[t.tier].role, record.limits));
        },
      });
    }
    const dbFindings = findings.filter((f) => f.resource === 'database');
    if (t.tier === 'silo' && dbFindings.some((f) => f.name === name)) {
      steps.push({
        name: 'database',
        run: async () =>
          void (await r.createDatabase(t, {
            fromTemplate: dbMissing,
            andThen: async (db) => {
              for (const f of dbFindings) {
                const g = granteeOf(f.field);
                if (f.name === name && f.kind === 'unexpected' && g && g !== 'PUBLIC')
                  await db.query(
                    `REVOKE CONNECT, TEMPORARY ON DATABASE ${ident(name)} FROM ${catalogName(g)}`,
                  );
              }
            },
          })),
      });
    }
    const strayDataConnect = dbFindings.filter(
      (f) => f.name === n.database && f.kind === 'unexpected' && granteeOf(f.field) === name,
    );
    if (strayDataConnect.length > 0) {
      steps.push({
        name: 'revoke-shared-connect',
        run: () =>
          this.dp.withData((db) =>
            inTransaction(db, async () => {
              await lockDatabaseAcl(db);
              await db.query(
                `REVOKE CONNECT, TEMPORARY ON DATABASE ${ident(n.database)} FROM ${ident(name)}`,
              );
            }),
          ),
      });
    }
    const schemaFindings = findings.filter(
      (f) => f.resource === 'schema' && f.field !== 'exists' && !granteeOf(f.field),
    );
    if (schemaMissing || dbMissing || schemaFindings.length > 0) {
      // At the tenant's own version: a newer template version reaches it only through a rollout.
      const atVersion = new LocalTenantResources(
        this.dp,
        this.keys,
        this.catalog,
        templateUpTo(this.template, record.templateVersion),
      );
      steps.push({ name: 'schema', run: () => atVersion.repairSchema(t) });
    } else if (findings.some((f) => f.resource === 'table' && f.field === 'freezeGuard')) {
      steps.push({
        name: 'freeze-guards',
        run: () => r.onTenantDatabase(t, (db) => ensureFreezeTriggers(db, schema, { owner: n.ownerRole })),
      });
    }
    const offGuards = findings.filter(isGuardOff);
    if (offGuards.length > 0)
      steps.push({
        name: 'enable-guards',
        run: () => r.onTenantDatabase(t, (db) => enableGuards(db, offGuards)),
      });
    if (hasField(findings, 'freeze'))
      steps.push({ name: 'unfreeze', run: () => r.onTenantDatabase(t, (db) => unfreezeSchema(db, schema)) });
    const grantFindings = findings.filter(
      (f) => ['schema', 'table', 'default-privileges'].includes(f.resource) && granteeOf(f.field) !== null,
    );
    const ownerFindings = findings.filter((f) => f.resource === 'table' && f.field === 'owner');
    const needGrants =
      grantFindings.length > 0 ||
      ownerFindings.length > 0 ||
      roleMissing ||
      schemaMissing ||
      dbMissing ||
      dbFindings.some((f) => f.kind === 'missing' && granteeOf(f.field) === name);
    if (needGrants) {
      // Owners put back and stray privileges revoked, then the expected set granted, in one transaction.
      steps.push({
        name: 'grants',
        run: () =>
          r.onTenantDatabase(t, (db) =>
            inTransaction(db, async () => {
              for (const f of ownerFindings) {
                const table = f.name.split('.').at(-1) as string;
                await db.query(`ALTER TABLE ${ident(schema)}.${ident(table)} OWNER TO ${ident(n.ownerRole)}`);
              }
              await revokeGrants(db, grantFindings, schema, n.ownerRole, name);
              await r.grantOn(db, t);
            }),
          ),
      });
    }
    return steps;
  }

  /**
   * A login group's roles as its secret says (engine/local-resources.ts `applyRole`): the login the
   * secret names gets its password back when it changed (or a role was missing, or the secret was
   * rewritten); what a role holds beyond its spec is revoked; and a login that should log in no more
   * (its grace period over) is retired.
   */
  private async repairLogins(owner: LoginOwner, roleFindings: Finding[], password: boolean): Promise<void> {
    const r = this.resources;
    await r.applyRole(owner, {
      password: password || roleFindings.some((f) => f.field === 'password' && f.desired === 'stored secret'),
      andThen: async (db) => {
        for (const role of new Set(roleFindings.map((f) => f.name)))
          await revokeRoleExtras(
            db,
            role,
            roleFindings.filter((f) => f.name === role),
          );
      },
    });
    const disable = roleFindings.some(
      (f) => (f.field === 'login' && f.desired === false) || (f.field === 'password' && f.desired === 'none'),
    );
    if (disable) await r.retireLogins(owner);
  }

  private platformSteps(findings: Finding[]): Step[] {
    const n = this.dp.names;
    const steps: Step[] = [];
    const poolRoles = [n.poolRole, ...loginRoleNames(n.poolRole)];
    const poolRole = findings.filter((f) => f.resource === 'role' && poolRoles.includes(f.name));
    if (poolRole.length > 0) {
      const missing = poolRole.some((f) => f.kind === 'missing' && f.field === 'exists');
      steps.push({ name: 'pool-role', run: () => this.repairLogins('pool', poolRole, missing) });
    }
    const ownerRole = findings.filter(
      (f) => f.resource === 'role' && f.name === n.ownerRole && f.kind === 'changed',
    );
    if (ownerRole.length > 0) {
      steps.push({
        name: 'owner-role',
        run: () =>
          this.dp.withMaintenance(async (db) => {
            const attrs = ownerRole.map((f) =>
              f.field === 'login' ? 'NOLOGIN' : f.field === 'bypassRls' ? 'NOBYPASSRLS' : 'NOSUPERUSER',
            );
            await db.query(`ALTER ROLE ${ident(n.ownerRole)} WITH ${[...new Set(attrs)].join(' ')}`);
          }),
      });
    }
    const poolPrefix = `${n.database}.${n.poolSchema}`;
    const inPool = (f: Finding) => f.name === poolPrefix || f.name.startsWith(`${poolPrefix}.`);
    const poolGuardsOff = findings.filter((f) => isGuardOff(f) && inPool(f));
    const poolObjects = findings.filter(
      (f) =>
        ['schema', 'table', 'policy', 'default-privileges'].includes(f.resource) &&
        inPool(f) &&
        !isGuardOff(f),
    );
    const dataDb = findings.filter((f) => f.resource === 'database' && f.name === n.database);
    if (poolObjects.length > 0 || dataDb.some((f) => f.kind === 'missing')) {
      steps.push({
        name: 'pool',
        run: () =>
          this.dp.withData(async (db) => {
            await inTransaction(db, async () => {
              for (const f of poolObjects.filter((x) => x.resource === 'table' && x.field === 'owner')) {
                const table = f.name.split('.').at(-1) as string;
                await db.query(
                  `ALTER TABLE ${ident(n.poolSchema)}.${ident(table)} OWNER TO ${ident(n.ownerRole)}`,
                );
              }
              await revokeGrants(db, poolObjects, n.poolSchema, n.ownerRole, n.poolRole);
            });
            // Re-enables and forces RLS, replaces every policy with the one canonical policy, revokes PUBLIC
            // (at the version the shared tables are at: a newer one is a rollout's platform step).
            await poolProvider.create(db, {
              schema: n.poolSchema,
              owner: n.ownerRole,
              appRole: n.poolRole,
              database: n.database,
              setting: n.tenantSetting,
              template: this.template,
            });
          }),
      });
    }
    if (poolGuardsOff.length > 0) {
      // After the pool step, which re-creates a dropped guard (enabled, as created).
      steps.push({
        name: 'enable-guards',
        run: () => this.dp.withData((db) => enableGuards(db, poolGuardsOff)),
      });
    }
    if (dataDb.some((f) => f.kind === 'unexpected' && granteeOf(f.field) === 'PUBLIC')) {
      steps.push({
        name: 'lock-down-shared-database',
        run: () =>
          this.dp.withData((db) =>
            inTransaction(db, async () => {
              await lockDatabaseAcl(db);
              await lockDownDatabases(db, [n.database]);
            }),
          ),
      });
    }
    const elsewhere = findings.filter(
      (f) =>
        f.resource === 'table' &&
        f.field === 'owner' &&
        f.name.startsWith(`${n.database}.`) &&
        !f.name.startsWith(`${poolPrefix}.`),
    );
    if (elsewhere.length > 0) {
      steps.push({
        name: 'table-ownership',
        run: () =>
          this.dp.withData(async (db) => {
            for (const f of elsewhere) {
              const [, schema, table] = f.name.split('.');
              if (schema && table)
                await db.query(`ALTER TABLE ${ident(schema)}.${ident(table)} OWNER TO ${ident(n.ownerRole)}`);
            }
          }),
      });
    }
    const otherDbs = findings.filter(
      (f) =>
        f.resource === 'database' && f.name !== n.database && f.kind === 'unexpected' && granteeOf(f.field),
    );
    if (otherDbs.length > 0) {
      steps.push({
        name: 'revoke-connect',
        run: () =>
          this.dp.withMaintenance(async (db) => {
            for (const f of otherDbs) {
              const g = granteeOf(f.field) as string;
              await db.query(
                `REVOKE CONNECT, TEMPORARY ON DATABASE ${catalogName(f.name)} FROM ${grantee(g)}`,
              );
            }
          }),
      });
    }
    return steps;
  }
}

/**
 * What a role holds beyond its spec: memberships (revoked), and settings of its own in one database
 * (`ALTER ROLE … IN DATABASE … SET`, reset one by one).
 */
async function revokeRoleExtras(db: Queryable, role: string, findings: Finding[]): Promise<void> {
  for (const f of findings) {
    // An unexpected membership goes; a missing one (a login out of its group) the role step put back.
    const member = f.kind === 'unexpected' ? /^memberOf:(.+)$/.exec(f.field)?.[1] : undefined;
    if (member) await db.query(`REVOKE ${catalogName(member)} FROM ${ident(role)}`);
    // A setting's name as pg_db_role_setting spells it: validated, then spliced bare (`app.x` is two parts).
    const setting = /^databaseSetting:(.+):([A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)*)$/.exec(
      f.field,
    );
    if (setting?.[1] && setting[2])
      await db.query(`ALTER ROLE ${ident(role)} IN DATABASE ${catalogName(setting[1])} RESET ${setting[2]}`);
  }
}

const GUARD_OFF = 'freezeGuardEnabled:';
/** The ALTER TABLE clause that puts a trigger in GUARD_ENABLED's state. */
const ENABLE_CLAUSE = ({ O: 'ENABLE', A: 'ENABLE ALWAYS', R: 'ENABLE REPLICA' } as Record<string, string>)[
  GUARD_ENABLED
] as string;
const isGuardOff = (f: Finding) => f.resource === 'table' && f.field.startsWith(GUARD_OFF);

/**
 * Re-enables freeze guards found not firing (disabled, replica-only, or always), back to the state
 * freeze.ts creates them in (`ENABLE TRIGGER`: 'O'). Each table in its own short transaction, like
 * ensureFreezeTriggers, and only the guards still off: the step is idempotent, and a guard dropped
 * meanwhile is the freezeGuard finding's business.
 */
async function enableGuards(db: Queryable, findings: Finding[]): Promise<void> {
  const byTable = new Map<string, { schema: string; table: string; triggers: string[] }>();
  for (const f of findings) {
    const [, schema, table] = f.name.split('.');
    if (!schema || !table) continue;
    const key = `${schema}.${table}`;
    const t = byTable.get(key) ?? { schema, table, triggers: [] };
    t.triggers.push(f.field.slice(GUARD_OFF.length));
    byTable.set(key, t);
  }
  for (const { schema, table, triggers } of byTable.values()) {
    const q = `${ident(schema)}.${ident(table)}`;
    await inTransaction(db, async () => {
      await db.query(`SET LOCAL lock_timeout = '5s'`);
      const { rows } = await db.query<{ name: string }>(
        `SELECT tgname AS name FROM pg_trigger
          WHERE tgrelid = to_regclass($1) AND tgname = ANY ($2::text[]) AND tgenabled <> $3`,
        [q, triggers, GUARD_ENABLED],
      );
      for (const r of rows) await db.query(`ALTER TABLE ${q} ${ENABLE_CLAUSE} TRIGGER ${ident(r.name)}`);
    });
  }
}

/**
 * Revokes what no one should hold on a schema's objects (PUBLIC, another tenant's role, anyone else),
 * and resets the expected grantee's privileges on objects where it holds more than it should, before
 * the provider grants the expected set again (all in the caller's transaction).
 */
async function revokeGrants(
  db: Queryable,
  findings: Finding[],
  schema: string,
  owner: string,
  role: string,
): Promise<void> {
  for (const f of findings) {
    const g = granteeOf(f.field);
    if (!g || (g === role && f.kind !== 'changed')) continue;
    if (f.resource === 'table') {
      const table = f.name.split('.').at(-1) as string;
      await db.query(`REVOKE ALL ON TABLE ${ident(schema)}.${ident(table)} FROM ${grantee(g)}`);
    } else if (f.resource === 'schema') {
      await db.query(`REVOKE ALL ON SCHEMA ${ident(schema)} FROM ${grantee(g)}`);
    } else if (f.resource === 'default-privileges') {
      const kind = f.field.startsWith('sequences:') ? 'SEQUENCES' : 'TABLES';
      await db.query(
        `ALTER DEFAULT PRIVILEGES FOR ROLE ${ident(owner)} IN SCHEMA ${ident(schema)} REVOKE ALL ON ${kind} FROM ${grantee(g)}`,
      );
    }
  }
}
