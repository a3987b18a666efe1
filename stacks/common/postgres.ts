import * as pulumi from '@pulumi/pulumi';
import {
  type AdminRef,
  POSTGRES_SECRET_OUTPUTS,
  type PostgresKind,
  postgresProvider,
} from './postgres-provider.js';

export interface PostgresObjectArgs {
  kind: PostgresKind;
  /** An AdminRef (adminReference): where to connect and which secret holds the admin's credentials. */
  admin: pulumi.Input<string>;
  spec: pulumi.Input<Record<string, unknown>>;
  generatePassword?: boolean;
  /** Role only: a given password (always handled as a secret). */
  password?: pulumi.Input<string>;
  /** Role only: make a non-superuser admin able to SET ROLE to it (see PostgresResourceInputs). */
  grantToAdmin?: boolean;
}

/** One Postgres-level object (role, schema, grants, database, pool, pool membership) managed by the dynamic provider. */
export class PostgresObject extends pulumi.dynamic.Resource {
  declare readonly state: pulumi.Output<unknown>;
  /** Role only, when generatePassword or a password is set. A secret output. */
  declare readonly password: pulumi.Output<string | undefined>;

  constructor(name: string, args: PostgresObjectArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      postgresProvider,
      name,
      {
        kind: args.kind,
        admin: args.admin,
        spec: args.spec,
        generatePassword: args.generatePassword ?? false,
        grantToAdmin: args.grantToAdmin ?? false,
        password: args.password === undefined ? undefined : pulumi.secret(args.password),
        state: undefined,
      },
      {
        ...opts,
        additionalSecretOutputs: [...POSTGRES_SECRET_OUTPUTS, ...(opts?.additionalSecretOutputs ?? [])],
      },
    );
  }
}

/** Admin credentials as stored by RDS (`manageMasterUserPassword`) or by the platform for the shared cluster. */
export interface AdminSecret {
  username: string;
  password: string;
  host?: string;
  port?: number | string;
  dbname?: string;
}

/** Which secret holds a server's admin credentials, and how to read it (see AdminRef). */
export interface AdminSecretRef {
  secretId: pulumi.Input<string>;
  region: string;
  endpoint?: string;
  /** The account tier: the role to assume in the tenant's account, where the secret is. */
  roleArn?: pulumi.Input<string>;
}

/**
 * An admin connection as the dynamic resources take it: a reference (AdminRef JSON) to the secret
 * and where to connect. No password: the provider reads the secret each time it connects.
 */
export function adminReference(
  secret: AdminSecretRef,
  where: {
    host?: pulumi.Input<string>;
    port?: pulumi.Input<number>;
    database: pulumi.Input<string>;
    ssl: boolean;
  },
): pulumi.Output<string> {
  return pulumi
    .all([secret.secretId, secret.roleArn, where.host, where.port, where.database])
    .apply(([secretId, roleArn, host, port, database]) => {
      const ref: AdminRef = {
        secretId,
        region: secret.region,
        ...(secret.endpoint ? { endpoint: secret.endpoint } : {}),
        ...(roleArn ? { roleArn } : {}),
        ...(host ? { host } : {}),
        ...(port === undefined ? {} : { port: Number(port) }),
        database,
        ssl: where.ssl,
      };
      return JSON.stringify(ref);
    });
}
