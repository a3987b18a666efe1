import * as pulumi from '@pulumi/pulumi';
import { POSTGRES_SECRET_OUTPUTS, type PostgresKind, postgresProvider } from './postgres-provider.js';

export interface PostgresObjectArgs {
  kind: PostgresKind;
  /** JSON pg ClientConfig of an admin connection; always handled as a secret. */
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
        admin: pulumi.secret(args.admin),
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

/** A pg ClientConfig as JSON, from an admin secret plus where to connect. */
export function adminConnection(
  secretString: pulumi.Input<string>,
  where: {
    host?: pulumi.Input<string>;
    port?: pulumi.Input<number>;
    database: pulumi.Input<string>;
    ssl: boolean;
  },
): pulumi.Output<string> {
  return pulumi.secret(
    pulumi
      .all([secretString, where.host, where.port, where.database])
      .apply(([raw, host, port, database]) => {
        const s = JSON.parse(raw) as AdminSecret;
        const h = host ?? s.host;
        if (!h) throw new Error('admin secret has no host and none was given');
        return JSON.stringify({
          host: h,
          port: Number(port ?? s.port ?? 5432),
          database,
          user: s.username,
          password: s.password,
          ssl: where.ssl ? { rejectUnauthorized: true } : false,
        });
      }),
  );
}
