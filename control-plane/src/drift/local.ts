import { randomBytes } from 'node:crypto';
import type { DataPlane } from '../dataplane/dataplane.js';
import { POOL_SECRET, parseLoginRoleName, tenantSecretName } from '../domain/naming.js';
import type { KeyStoreInventory, SecretStore } from '../domain/ports.js';
import type { Queryable } from '../domain/queryable.js';
import type { TierCatalog } from '../domain/tiers.js';
import { mapLimit } from '../lib/concurrency.js';
import { ident, POLICY_NAME, policyExpression, type TenantTemplate } from '../providers/postgres/index.js';
import {
  type DatabaseCatalog,
  type NotChecked,
  type ObservedDatabaseContents,
  type ObservedFleet,
  type ObservedSecret,
  type RolesRead,
  readDatabaseContents,
  readDatabases,
  readKeys,
  readLoginRotations,
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
import type { DetectInput, DetectResult, DriftDetector } from './types.js';

/**
 * Reads the canonical forms Tenantry compares against from the server itself, in a transaction that
 * is rolled back: the template's tables, and the policy expression exactly as pg_get_expr prints the
 * one poolProvider writes (rather than a hard-coded string that a server version could print differently).
 */
export async function probeCanonical(
  db: Queryable,
  template: TenantTemplate,
  setting: string,
): Promise<{ tables: string[]; policyExpression: string; tablesAt: Record<number, string[]> }> {
  const schema = `tenantry_drift_probe_${randomBytes(6).toString('hex')}`;
  await db.query('BEGIN');
  try {
    const s = ident(schema);
    await db.query(`CREATE SCHEMA ${s}; SET LOCAL search_path TO ${s}`);
    const readTables = async () =>
      (
        await db.query<{ t: string }>(
          `SELECT c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`,
          [schema],
        )
      ).rows;
    // The tables at each version: a schema is judged against the version it is recorded at.
    const tablesAt: Record<number, string[]> = {};
    let tables: { t: string }[] = [];
    for (const m of [...template.migrations].sort((a, b) => a.version - b.version)) {
      await db.query(m.sql);
      tables = await readTables();
      tablesAt[m.version] = tables.map((r) => r.t);
    }
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
    return { tables: tables.map((r) => r.t), policyExpression: e, tablesAt };
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
  /** A key store outside the control database (TENANTRY_SECRETS=aws) read whole, instead of its tables. */
  inventory?: () => Promise<KeyStoreInventory>;
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
      // A login of a group is checked against its group's secret (diffLocal judges the current one only).
      const group = parseLoginRoleName(r.name)?.group ?? r.name;
      const slug = group === n.poolRole ? null : slugOfObject(group);
      if (group !== n.poolRole && slug === null) continue;
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
      rotation: {
        ...(this.catalog.tiers.pool.rotation ? { pool: this.catalog.tiers.pool.rotation } : {}),
        ...(this.catalog.tiers.bridge.rotation ? { bridge: this.catalog.tiers.bridge.rotation } : {}),
        ...(this.catalog.tiers.silo.rotation ? { silo: this.catalog.tiers.silo.rotation } : {}),
      },
      newestVersion: this.template.version,
      tablesAt: canonical.tablesAt,
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
    const inventory = this.opts.inventory?.();
    const secretsRead = inventory ? inventory.then((i) => i.secrets) : readSecrets(this.control);
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
    const observedAt = Date.now();
    const shared = Promise.all([
      rolesRead,
      sharedData,
      readPoolMembers(this.dp.data),
      secretsRead,
      inventory ? inventory.then((i) => i.keys) : readKeys(this.control),
      credentials,
      readLoginRotations(this.control),
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
    const [[roles, data, poolMembers, secrets, keys, checked, logins]] = await Promise.all([
      shared,
      siloPass,
    ]);
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
      logins,
      observedAt,
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

export type { ObservedFleet };
