import * as pulumi from '@pulumi/pulumi';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import type { RoleSpec } from '../../control-plane/src/providers/postgres/role.js';
import type { RoleLimits, TenantTemplate } from '../../control-plane/src/providers/postgres/types.js';
import type { PoolSettings } from './config.js';
import { type AdminSecretRef, adminReference, PostgresObject } from './postgres.js';

/** The NOLOGIN-intended owner of a tenant's schema and tables; the login role never owns anything. */
export function tenantOwnerRoleName(slug: string): string {
  return `${tenantObjectName(slug)}_owner`;
}

/** The schema of a silo tenant inside its own database. */
export const SILO_SCHEMA = 'app';

/**
 * The spec of a bridge or silo tenant's own login role, as its stack's dynamic resource applies it:
 * its limits (the tier's, or its overrides) and search path, and NOLOGIN while it is suspended. The
 * role's identity is its name, so a suspension or a new limit updates it in place (ALTER ROLE).
 */
export function tenantLoginRoleSpec(p: {
  slug: string;
  schema: string;
  limits: RoleLimits;
  suspended?: boolean;
}): RoleSpec & Record<string, unknown> {
  return {
    name: tenantObjectName(p.slug),
    ...p.limits,
    searchPath: [p.schema],
    ...(p.suspended ? { login: false } : {}),
  };
}

interface Common {
  slug: string;
  tenantId: string;
  /** Which secret holds the admin's credentials (username/password[/host/port]): read at each connection, never stored. */
  adminSecret: AdminSecretRef;
  host?: pulumi.Input<string>;
  port?: pulumi.Input<number>;
  ssl: boolean;
  template: TenantTemplate;
  /**
   * Keep the tenant's objects in Postgres when they leave the stack (a tier change), instead of
   * dropping them with the tenant's rows. False only for offboarding, whose destroy must delete.
   */
  retainOnDelete: boolean;
}

/** A tenant's own login role: its limits (the tier's with its overrides) and whether it is suspended. */
interface OwnLogin {
  loginLimits?: RoleLimits;
  suspended?: boolean;
}

export type TenantPostgresArgs =
  /** bridge: a schema of its own in the shared database, with a login role. */
  | (Common & OwnLogin & { mode: 'schema'; database: pulumi.Input<string>; limits: RoleLimits })
  /** silo/account: a database of its own on a dedicated instance, schema `app`. */
  | (Common & OwnLogin & { mode: 'database'; limits: RoleLimits })
  /** pool: membership in the shared, RLS-protected pool. */
  | (Common & {
      mode: 'pool';
      database: pulumi.Input<string>;
      pool: PoolSettings;
      limits: RoleLimits;
      /** The pool login role's password, from its platform secret (secret). */
      poolPassword: pulumi.Input<string>;
    });

/** What a data plane needs to connect; the password (a secret) only goes into the tenant's Secret. */
export interface PostgresEndpoint {
  database: pulumi.Output<string>;
  schema: string;
  user: string;
  password?: pulumi.Output<string | undefined>;
  tenantSetting?: string;
}

/**
 * `tenantry:tenant:PostgresResource`: the tenant's Postgres-level objects, each one a
 * dynamic resource backed by the shared providers.
 */
export class TenantPostgres extends pulumi.ComponentResource {
  readonly endpoint: PostgresEndpoint;
  readonly objects: PostgresObject[] = [];

  constructor(name: string, args: TenantPostgresArgs, opts?: pulumi.ComponentResourceOptions) {
    super('tenantry:tenant:PostgresResource', name, {}, opts);
    const conn = (database: pulumi.Input<string>) =>
      adminReference(args.adminSecret, { host: args.host, port: args.port, database, ssl: args.ssl });
    const add = (o: PostgresObject) => {
      this.objects.push(o);
      return o;
    };

    const tenantOwned = { parent: this, retainOnDelete: args.retainOnDelete };

    if (args.mode === 'pool') {
      const admin = conn(args.database);
      const p = args.pool;
      // The shared pool and its roles belong to no tenant: ensured here, never deleted with a tenant.
      const shared = { parent: this, retainOnDelete: true };
      const owner = add(
        new PostgresObject(
          `${name}-pool-owner`,
          {
            kind: 'role',
            admin,
            spec: { name: p.ownerRole, ...args.limits, connectionLimit: 0, login: false },
            grantToAdmin: true,
          },
          shared,
        ),
      );
      // Every pool descriptor carries this password: it comes from the platform secret, never generated here.
      const app = add(
        new PostgresObject(
          `${name}-pool-app`,
          {
            kind: 'role',
            admin,
            spec: { name: p.appRole, ...args.limits, searchPath: [p.schema] },
            password: args.poolPassword,
          },
          shared,
        ),
      );
      const pool = add(
        new PostgresObject(
          `${name}-pool`,
          {
            kind: 'pool',
            admin,
            spec: pulumi.output(args.database).apply((database) => ({
              schema: p.schema,
              owner: p.ownerRole,
              appRole: p.appRole,
              database,
              setting: p.tenantSetting,
              template: args.template,
            })),
          },
          { ...shared, dependsOn: [owner, app] },
        ),
      );
      add(
        new PostgresObject(
          `${name}-membership`,
          {
            kind: 'pool-membership',
            admin,
            spec: { schema: p.schema, tenantId: args.tenantId, slug: args.slug, setting: p.tenantSetting },
          },
          { ...tenantOwned, dependsOn: [pool] },
        ),
      );
      this.endpoint = {
        database: pulumi.output(args.database),
        schema: p.schema,
        user: p.appRole,
        password: pulumi.secret(pulumi.output(args.poolPassword)),
        tenantSetting: p.tenantSetting,
      };
      this.registerOutputs({ database: this.endpoint.database, schema: p.schema, user: p.appRole });
      return;
    }

    const objectName = tenantObjectName(args.slug);
    const ownerName = tenantOwnerRoleName(args.slug);
    const schemaName = args.mode === 'schema' ? objectName : SILO_SCHEMA;
    const database = args.mode === 'schema' ? pulumi.output(args.database) : pulumi.output(objectName);
    const clusterAdmin = conn(args.mode === 'schema' ? args.database : 'postgres');

    // NOLOGIN, and the (non-superuser) admin may act as it: CREATE DATABASE … OWNER, CREATE SCHEMA
    // … AUTHORIZATION and the template's SET ROLE need that, as in LocalEngine.bootstrap.
    const owner = add(
      new PostgresObject(
        `${name}-owner`,
        {
          kind: 'role',
          admin: clusterAdmin,
          spec: { name: ownerName, ...args.limits, connectionLimit: 0, login: false },
          grantToAdmin: true,
        },
        tenantOwned,
      ),
    );
    const login = add(
      new PostgresObject(
        `${name}-role`,
        {
          kind: 'role',
          admin: clusterAdmin,
          spec: tenantLoginRoleSpec({
            slug: args.slug,
            schema: schemaName,
            limits: args.loginLimits ?? args.limits,
            suspended: args.suspended === true,
          }),
          generatePassword: true,
        },
        tenantOwned,
      ),
    );
    const deps: pulumi.Resource[] = [owner, login];
    if (args.mode === 'database') {
      deps.push(
        add(
          new PostgresObject(
            `${name}-database`,
            { kind: 'database', admin: clusterAdmin, spec: { name: objectName, owner: ownerName } },
            { ...tenantOwned, dependsOn: [owner] },
          ),
        ),
      );
    }
    const tenantAdmin = conn(database);
    const schema = add(
      new PostgresObject(
        `${name}-schema`,
        {
          kind: 'schema',
          admin: tenantAdmin,
          spec: { name: schemaName, owner: ownerName, template: args.template },
        },
        { ...tenantOwned, dependsOn: deps },
      ),
    );
    add(
      new PostgresObject(
        `${name}-grants`,
        {
          kind: 'grants',
          admin: tenantAdmin,
          spec: database.apply((db) => ({
            database: db,
            schema: schemaName,
            role: objectName,
            owner: ownerName,
          })),
        },
        { ...tenantOwned, dependsOn: [schema, login] },
      ),
    );
    this.endpoint = { database, schema: schemaName, user: objectName, password: login.password };
    this.registerOutputs({ database, schema: schemaName, user: objectName });
  }
}
