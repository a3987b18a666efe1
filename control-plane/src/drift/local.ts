import { randomBytes } from 'node:crypto';
import type { DataPlane } from '../dataplane/dataplane.js';
import { TenantryError } from '../domain/errors.js';
import { POOL_SECRET, tenantKeyAlias, tenantObjectName, tenantSecretName } from '../domain/naming.js';
import type { KeyStore, SecretStore } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import { isLocalReconcileStep, type LocalReconcileStep } from '../domain/steps.js';
import type { TierCatalog } from '../domain/tiers.js';
import { mapLimit } from '../lib/concurrency.js';
import { generatePassword } from '../lib/passwords.js';
import { placementOf } from '../promotion/placement.js';
import {
  applyGrants,
  applyRole,
  databaseProvider,
  ensureFreezeTriggers,
  ident,
  inTransaction,
  lockDownDatabases,
  POLICY_NAME,
  policyExpression,
  poolMembershipProvider,
  poolProvider,
  roleProvider,
  schemaProvider,
  type TenantTemplate,
  unfreezeSchema,
  unfreezeTenant,
} from '../providers/postgres/index.js';
import { lockDatabaseAcl } from '../providers/postgres/sql.js';
import {
  type DatabaseCatalog,
  GUARD_ENABLED,
  type NotChecked,
  type ObservedDatabaseContents,
  type ObservedFleet,
  type ObservedSecret,
  type RolesRead,
  readDatabaseContents,
  readDatabases,
  readKeys,
  readPoolMembers,
  readRoles,
  readSecrets,
  readSiloCatalog,
  readVerifiers,
  resolveDatabase,
  roleNamer,
  SILO_CONCURRENCY,
  siloDatabase,
} from './catalog.js';
import {
  CredentialChecker,
  type CredentialStatus,
  DEFAULT_CREDENTIAL_CHECKS,
  type Login,
} from './credentials.js';
import { diffLocal, type LocalLayout, slugOfObject } from './diff.js';
import type {
  DetectInput,
  DetectResult,
  DriftDetector,
  DriftRemediator,
  Finding,
  TenantRecord,
} from './types.js';

/**
 * Reads the canonical forms Tenantry compares against from the server itself, in a transaction that
 * is rolled back: the template's tables, and the policy expression exactly as pg_get_expr prints the
 * one poolProvider writes (rather than a hard-coded string that a server version could print differently).
 */
export async function probeCanonical(
  db: Queryable,
  template: TenantTemplate,
  setting: string,
): Promise<{ tables: string[]; policyExpression: string }> {
  const schema = `tenantry_drift_probe_${randomBytes(6).toString('hex')}`;
  await db.query('BEGIN');
  try {
    const s = ident(schema);
    await db.query(
      [
        `CREATE SCHEMA ${s}`,
        `SET LOCAL search_path TO ${s}`,
        ...[...template.migrations].sort((a, b) => a.version - b.version).map((m) => m.sql),
      ].join(';\n'),
    );
    const { rows: tables } = await db.query<{ t: string }>(
      `SELECT c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`,
      [schema],
    );
    const first = tables[0]?.t;
    if (!first) throw new Error('the tenant template creates no tables');
    const expr = policyExpression(setting);
    await db.query(
      `CREATE POLICY ${ident(POLICY_NAME)} ON ${s}.${ident(first)} AS PERMISSIVE FOR ALL TO PUBLIC USING (${expr}) WITH CHECK (${expr})`,
    );
    const { rows } = await db.query<{ e: string }>(
      `SELECT pg_get_expr(p.polqual, p.polrelid) AS e FROM pg_policy p WHERE p.polrelid = $1::regclass`,
      [`${schema}.${first}`],
    );
    const e = rows[0]?.e;
    if (!e) throw new Error('could not read back the probe policy');
    return { tables: tables.map((r) => r.t), policyExpression: e };
  } finally {
    await db.query('ROLLBACK').catch(() => undefined);
  }
}

interface CredentialsChecked {
  statuses?: Map<string, CredentialStatus>;
  notChecked: NotChecked[];
}

export interface LocalDriftOptions {
  /** Silo databases inspected at once (one short session each; the cost is latency, not CPU). */
  siloConcurrency?: number;
  /**
   * The secret store holding each login's password: with it, every sweep checks that each Tenantry
   * login still has its stored secret's password (credentials.ts). Without it, the check is not made.
   */
  secrets?: Pick<SecretStore, 'getSecret'>;
  /** Logins whose password a sweep derives SCRAM keys for, at most (see credentials.ts). */
  credentialChecksPerSweep?: number;
}

/**
 * The local target's detector: one pass over the shared catalogs (maintenance session), one over
 * the shared data database, one per silo database, and one read each of the key and secret store.
 */
export class LocalDriftDetector implements DriftDetector {
  readonly target = 'local' as const;
  private layout: LocalLayout | undefined;
  private readonly credentials: CredentialChecker | null;

  constructor(
    private readonly dp: DataPlane,
    private readonly control: Queryable,
    private readonly catalog: TierCatalog,
    private readonly template: TenantTemplate,
    private readonly opts: LocalDriftOptions = {},
  ) {
    this.credentials = opts.secrets
      ? new CredentialChecker(
          control,
          opts.secrets,
          (roles) => readVerifiers(dp.maintenance, roles),
          opts.credentialChecksPerSweep,
        )
      : null;
  }

  /**
   * Each Tenantry login (bridge and silo roles, the pool's shared login) against its stored secret,
   * from the roles read (verifier hashes) and the secrets read (versions).
   */
  private async checkCredentials(
    roles: RolesRead,
    secrets: Map<string, ObservedSecret>,
  ): Promise<CredentialsChecked> {
    if (!this.credentials)
      return { notChecked: [{ check: 'credentials', reason: 'no secret store to check logins against' }] };
    if (roles.verifiersUnreadable !== null)
      return { notChecked: [{ check: 'credentials', reason: roles.verifiersUnreadable }] };
    const n = this.dp.names;
    const logins: Login[] = [];
    for (const r of roles.roles.values()) {
      if (!r.canLogin || r.verifierHash === undefined) continue;
      const slug = r.name === n.poolRole ? null : slugOfObject(r.name);
      if (r.name !== n.poolRole && slug === null) continue;
      logins.push({
        role: r.name,
        secretName: slug === null ? POOL_SECRET : tenantSecretName(slug),
        verifierHash: r.verifierHash,
      });
    }
    const versions = new Map<string, number>();
    for (const s of secrets.values()) versions.set(s.name, s.version);
    const { statuses, unchecked } = await this.credentials.check(logins, versions);
    return {
      statuses,
      notChecked:
        unchecked > 0
          ? [
              {
                check: 'credentials',
                reason: `${unchecked} login(s) not checked against their stored secret this sweep (new or changed, beyond the ${this.opts.credentialChecksPerSweep ?? DEFAULT_CREDENTIAL_CHECKS} checked per sweep, or their secret unreadable)`,
              },
            ]
          : [],
    };
  }

  async getLayout(): Promise<LocalLayout> {
    if (this.layout) return this.layout;
    const n = this.dp.names;
    const canonical = await this.dp.withData((db) => probeCanonical(db, this.template, n.tenantSetting));
    this.layout = {
      dataDatabase: n.database,
      ownerRole: n.ownerRole,
      poolRole: n.poolRole,
      poolSchema: n.poolSchema,
      siloSchema: n.siloSchema,
      policyName: POLICY_NAME,
      limits: {
        pool: this.catalog.tiers.pool.role,
        bridge: this.catalog.tiers.bridge.role,
        silo: this.catalog.tiers.silo.role,
      },
      templateTables: canonical.tables,
      policyExpression: canonical.policyExpression,
    };
    return this.layout;
  }

  /**
   * Reads the whole fleet's actual state: shared catalogs, the shared database, every silo database,
   * the store. The silo pass starts as soon as the database list is in, beside the shared reads.
   */
  async observe(timings: Record<string, number> = {}): Promise<ObservedFleet> {
    const n = this.dp.names;
    const t0 = performance.now();
    const platformRoles = [n.poolRole, n.ownerRole];
    const since = (k: string) => () => {
      timings[k] = performance.now() - t0;
    };
    // Owners come back as oids: the tenant and platform roles are known, any other is looked up.
    const named = (roles: RolesRead, dbs: DatabaseCatalog[]) =>
      roleNamer(this.dp.maintenance, roles.namesByOid, dbs);
    const rolesRead = readRoles(this.dp.maintenance, platformRoles);
    const secretsRead = readSecrets(this.control);
    // Beside the silo pass: mostly a lookup; key derivations only for new or changed logins.
    const credentials = Promise.all([rolesRead, secretsRead]).then(([roles, secrets]) =>
      this.checkCredentials(roles, secrets)
        .catch(
          (e: Error): CredentialsChecked => ({
            notChecked: [{ check: 'credentials', reason: `failed: ${e.message.slice(0, 200)}` }],
          }),
        )
        .finally(since('credentialsMs')),
    );
    // The shared database is named as soon as it is read, beside the silo pass.
    const sharedData = Promise.all([
      rolesRead,
      readDatabaseContents(this.dp.data, {
        schemas: [n.poolSchema],
        policySchemas: [n.poolSchema],
        ownerRoles: [n.poolRole],
        parallel: true,
      }),
    ]).then(async ([roles, c]) => resolveDatabase(c, await named(roles, [c])));
    const shared = Promise.all([
      rolesRead,
      sharedData,
      readPoolMembers(this.dp.data),
      secretsRead,
      readKeys(this.control),
      credentials,
    ]).finally(since('sharedMs'));
    // Awaited below, after the silo pass; until then a failed read must not go unhandled (Node would
    // end the process), nor when listing the databases fails first and it is never awaited.
    shared.catch(() => undefined);
    const databases = await readDatabases(this.dp.maintenance);
    const contents = new Map<string, ObservedDatabaseContents>();
    const silosRead = new Map<string, DatabaseCatalog>();
    const unreachable = new Map<string, string>();
    // In-database state of a silo lives in its own database: one short session each, bounded.
    const silos = [...databases.keys()].filter((d) => slugOfObject(d) !== null);
    const siloPass = mapLimit(silos, this.opts.siloConcurrency ?? SILO_CONCURRENCY, async (name) => {
      if (databases.get(name)?.allowConnections === false) {
        unreachable.set(name, 'connections not allowed');
        return;
      }
      try {
        silosRead.set(name, siloDatabase(await this.dp.withDatabase(name, readSiloCatalog), [n.siloSchema]));
      } catch (e) {
        unreachable.set(name, (e as Error).message.slice(0, 200));
      }
    }).finally(since('silosMs'));
    const [[roles, data, poolMembers, secrets, keys, checked]] = await Promise.all([shared, siloPass]);
    contents.set(n.database, data);
    const siloRole = await named(roles, [...silosRead.values()]);
    for (const [name, c] of silosRead) contents.set(name, resolveDatabase(c, siloRole));
    const { roles: roleMap } = roles;
    timings.silos = silos.length;
    return {
      roles: roleMap,
      databases,
      contents,
      unreachable,
      poolMembers,
      secrets,
      keys,
      ...(checked.statuses ? { credentials: checked.statuses } : {}),
      notChecked: checked.notChecked,
    };
  }

  async detect(snapshot: () => Promise<DetectInput>): Promise<DetectResult> {
    const layout = await this.getLayout();
    const t0 = performance.now();
    const parts: Record<string, number> = {};
    const obs = await this.observe(parts);
    const t1 = performance.now();
    // The control plane's view is read after the catalogs: an operation that ran meanwhile marks its tenant busy.
    const input = await snapshot();
    const t2 = performance.now();
    const findings = diffLocal(layout, input, obs);
    const t3 = performance.now();
    return {
      input,
      findings,
      ...(obs.notChecked && obs.notChecked.length > 0 ? { notChecked: obs.notChecked } : {}),
      timings: {
        observeMs: t1 - t0,
        observeSharedMs: parts.sharedMs ?? 0,
        observeSilosMs: parts.silosMs ?? 0,
        observeCredentialsMs: parts.credentialsMs ?? 0,
        snapshotMs: t2 - t1,
        diffMs: t3 - t2,
      },
    };
  }
}

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
 * Repairs findings with the same providers (and the same order) as provisioning: credentials,
 * role, database, schema, grants, pool membership. Orphans are reported, never dropped: deleting
 * data is a decision for a person (offboard the tenant, or drop the object by hand).
 */
export class LocalDriftRemediator implements DriftRemediator {
  constructor(
    private readonly dp: DataPlane,
    private readonly keys: KeyStore & SecretStore,
    private readonly catalog: TierCatalog,
    private readonly template: TenantTemplate,
  ) {}

  /** Whether remediation can act on a finding at all (the rest stays reported). */
  remediable(f: Finding): boolean {
    if (f.category === 'orphan') return false;
    if (f.resource === 'table' && f.field === 'exists') return false; // a dropped table's data is gone; needs a person
    if (f.resource === 'key' && f.field === 'keyId') return false; // the record, not the data plane
    if (f.resource === 'database' && f.field === 'reachable') return false;
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

  private tenantSteps(t: TenantRecord, findings: Finding[]): Step[] {
    if (t.tier === 'account') return [];
    const n = this.dp.names;
    const name = tenantObjectName(t.slug);
    const alias = tenantKeyAlias(t.slug);
    const secretName = tenantSecretName(t.slug);
    const limits = this.catalog.tiers[t.tier].role;
    const bridge = t.tier === 'bridge';
    // Where the tenant's tables are (pool: the shared schema; bridge: its schema in the shared
    // database; silo: its own database).
    const { database, schema } = placementOf(this.dp, t.slug, t.tier);
    const steps: Step[] = [];
    const keyMissing = hasField(findings, 'key', (f) => f.kind === 'missing');
    const secretBad = keyMissing || hasField(findings, 'secret');
    const roleMissing = hasField(findings, 'role', (f) => f.kind === 'missing' && f.name === name);
    const dbMissing = hasField(findings, 'database', (f) => f.kind === 'missing' && f.field === 'exists');
    const schemaMissing = hasField(findings, 'schema', (f) => f.kind === 'missing' && f.field === 'exists');

    if (keyMissing)
      steps.push({ name: 'key', run: async () => void (await this.keys.ensureKey(t.id, alias)) });
    if (secretBad) {
      steps.push({
        name: 'credentials',
        run: async () => {
          const base = {
            tenantId: t.id,
            tier: t.tier,
            host: this.dp.host,
            port: this.dp.port,
            secretRef: `local-secret://${secretName}`,
          };
          if (t.tier === 'pool') {
            const pw = (await this.keys.getSecret(POOL_SECRET))?.value.password;
            if (typeof pw !== 'string') throw new Error('pool credentials are missing');
            await this.keys.putSecret(secretName, alias, {
              ...base,
              database: n.database,
              schema: n.poolSchema,
              user: n.poolRole,
              password: pw,
              tenantSetting: n.tenantSetting,
            });
            return;
          }
          // A new password: the role step reads it back from this version and sets it on the role.
          await this.keys.putSecret(secretName, alias, {
            ...base,
            database,
            schema,
            user: name,
            password: generatePassword(),
          });
        },
      });
    }
    if (t.tier === 'pool') {
      if (hasField(findings, 'freeze'))
        steps.push({
          name: 'unfreeze',
          run: () => this.dp.withData((db) => unfreezeTenant(db, n.poolSchema, t.id)),
        });
      if (hasField(findings, 'pool-membership'))
        steps.push({
          name: 'pool-membership',
          run: () =>
            this.dp.withData(async (db) => {
              await poolMembershipProvider.create(db, {
                schema: n.poolSchema,
                tenantId: t.id,
                slug: t.slug,
                setting: n.tenantSetting,
              });
            }),
        });
      return steps;
    }
    const roleFindings = findings.filter((f) => f.resource === 'role' && f.name === name);
    // The login's password is no longer its stored secret's (the tenant changed it): set it back.
    const passwordBad = roleFindings.some((f) => f.field === 'password');
    if (roleFindings.length > 0 || secretBad) {
      steps.push({
        name: 'role',
        run: async () => {
          // New credentials (or a re-created role) take the password of the secret's latest version,
          // sent as a SCRAM verifier (applyRole), never in plaintext.
          let password: string | undefined;
          if (secretBad || roleMissing || passwordBad) {
            const pw = (await this.keys.getSecret(secretName))?.value.password;
            if (typeof pw !== 'string')
              throw new TenantryError('SECRET_UNAVAILABLE', 'tenant credentials are missing');
            password = pw;
          }
          const searchPath = [schema];
          await this.dp.withMaintenance(async (db) => {
            await applyRole(db, { name, ...limits, searchPath, ...(password ? { password } : {}) });
            await revokeRoleExtras(db, name, roleFindings);
          });
        },
      });
    }
    const dbFindings = findings.filter((f) => f.resource === 'database');
    if (!bridge && dbFindings.some((f) => f.name === name)) {
      steps.push({
        name: 'database',
        run: () =>
          this.dp.withMaintenance(async (db) => {
            await databaseProvider.create(db, {
              name,
              owner: n.ownerRole,
              ...(dbMissing ? { template: n.siloTemplate } : {}),
            });
            for (const f of dbFindings) {
              const g = granteeOf(f.field);
              if (f.name === name && f.kind === 'unexpected' && g && g !== 'PUBLIC')
                await db.query(`REVOKE CONNECT, TEMPORARY ON DATABASE ${ident(name)} FROM ${catalogName(g)}`);
            }
          }),
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
    const onDb = <T>(fn: (db: Queryable) => Promise<T>) =>
      database === n.database ? this.dp.withData(fn) : this.dp.withDatabase(database, fn);
    const schemaFindings = findings.filter(
      (f) => f.resource === 'schema' && f.field !== 'exists' && !granteeOf(f.field),
    );
    if (schemaMissing || dbMissing || schemaFindings.length > 0) {
      steps.push({
        name: 'schema',
        run: () =>
          onDb(async (db) => {
            await schemaProvider.create(db, { name: schema, owner: n.ownerRole, template: this.template });
            await ensureFreezeTriggers(db, schema, { owner: n.ownerRole });
          }),
      });
    } else if (findings.some((f) => f.resource === 'table' && f.field === 'freezeGuard')) {
      steps.push({
        name: 'freeze-guards',
        run: () => onDb((db) => ensureFreezeTriggers(db, schema, { owner: n.ownerRole })),
      });
    }
    const offGuards = findings.filter(isGuardOff);
    if (offGuards.length > 0)
      steps.push({ name: 'enable-guards', run: () => onDb((db) => enableGuards(db, offGuards)) });
    if (hasField(findings, 'freeze'))
      steps.push({ name: 'unfreeze', run: () => onDb((db) => unfreezeSchema(db, schema)) });
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
      steps.push({
        name: 'grants',
        run: () =>
          onDb((db) =>
            inTransaction(db, async () => {
              for (const f of ownerFindings) {
                const table = f.name.split('.').at(-1) as string;
                await db.query(`ALTER TABLE ${ident(schema)}.${ident(table)} OWNER TO ${ident(n.ownerRole)}`);
              }
              await revokeGrants(db, grantFindings, schema, n.ownerRole, name);
              await applyGrants(db, {
                database,
                schema,
                role: name,
                owner: n.ownerRole,
              });
            }),
          ),
      });
    }
    return steps;
  }

  private platformSteps(findings: Finding[]): Step[] {
    const n = this.dp.names;
    const steps: Step[] = [];
    const poolRole = findings.filter((f) => f.resource === 'role' && f.name === n.poolRole);
    if (poolRole.length > 0) {
      steps.push({
        name: 'pool-role',
        run: () =>
          this.dp.withMaintenance(async (db) => {
            const exists = !poolRole.some((f) => f.kind === 'missing');
            let password: string | undefined;
            if (!exists || poolRole.some((f) => f.field === 'password')) {
              const pw = (await this.keys.getSecret(POOL_SECRET))?.value.password;
              password = typeof pw === 'string' ? pw : undefined;
            }
            await roleProvider.create(db, {
              name: n.poolRole,
              ...this.catalog.tiers.pool.role,
              searchPath: [n.poolSchema],
              ...(password ? { password } : {}),
            });
            await revokeRoleExtras(db, n.poolRole, poolRole);
          }),
      });
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
            // Re-enables and forces RLS, replaces every policy with the one canonical policy, revokes PUBLIC.
            await poolProvider.update(db, {
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
    const member = /^memberOf:(.+)$/.exec(f.field)?.[1];
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

export type { ObservedFleet };
