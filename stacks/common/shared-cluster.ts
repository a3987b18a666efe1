import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { tenantSecretName } from '../../control-plane/src/domain/naming.js';
import { need } from './config.js';
import { TenantKey } from './key.js';
import type { AdminSecret } from './postgres.js';
import { descriptor, type ProgramContext, type TenantStackOutputs } from './program.js';
import { TenantSecret } from './secret.js';
import { TenantPostgres } from './tenant-postgres.js';

/**
 * `tenantry:tenant:Pool` / `tenantry:tenant:Bridge`: a tenant on the shared cluster.
 * Its own key and connection secret in AWS; its rows (pool) or schema (bridge) in Postgres.
 */
export class SharedClusterTenant extends pulumi.ComponentResource {
  readonly outputs: TenantStackOutputs;

  constructor(
    name: string,
    ctx: ProgramContext,
    mode: 'pool' | 'bridge',
    opts?: pulumi.ComponentResourceOptions,
  ) {
    super(mode === 'pool' ? 'tenantry:tenant:Pool' : 'tenantry:tenant:Bridge', name, {}, opts);
    const { input, settings, tags } = ctx;
    const cluster = need(settings.sharedCluster, mode, 'sharedClusterSecretName');

    const key = new TenantKey(
      `${name}-key`,
      {
        slug: input.slug,
        region: ctx.region,
        adminPrincipalArns: [settings.adminRoleArn],
        dataPlaneRoleArn: ctx.dataPlaneRoleArn,
        deletionWindowInDays: settings.keyDeletionWindowDays,
        tags,
      },
      { parent: this },
    );

    const adminSecret = pulumi.secret(
      aws.secretsmanager.getSecretVersionOutput({ secretId: cluster.adminSecretName }, { parent: this })
        .secretString,
    );
    // Where the cluster is is not a credential: unwrap host/port/dbname so they can be outputs.
    const where = pulumi.unsecret(
      adminSecret.apply((raw) => {
        const s = JSON.parse(raw) as AdminSecret;
        if (!s.host || !s.dbname) throw new Error(`${cluster.adminSecretName} must hold host and dbname`);
        return { host: s.host, port: Number(s.port ?? 5432), dbname: s.dbname };
      }),
    );

    const common = {
      slug: input.slug,
      tenantId: input.tenantId,
      adminSecret,
      host: where.host,
      port: where.port,
      ssl: cluster.ssl,
      template: ctx.template,
      database: where.dbname,
      limits: ctx.tier.role,
    };
    const pg = new TenantPostgres(
      `${name}-pg`,
      mode === 'pool' ? { ...common, mode: 'pool', pool: settings.pool } : { ...common, mode: 'schema' },
      { parent: this },
    );

    const secret = new TenantSecret(
      `${name}-connection`,
      {
        slug: input.slug,
        kmsKeyArn: key.keyArn,
        recoveryWindowInDays: settings.secretRecoveryWindowDays,
        tags,
        value: descriptor({
          tenantId: input.tenantId,
          tier: mode,
          host: where.host,
          port: where.port,
          database: pg.endpoint.database,
          schema: pg.endpoint.schema,
          user: pg.endpoint.user,
          password: pg.endpoint.password,
          secretRef: tenantSecretName(input.slug),
          tenantSetting: pg.endpoint.tenantSetting,
        }),
      },
      { parent: this },
    );

    this.outputs = {
      tenantId: input.tenantId,
      tier: mode,
      keyArn: key.keyArn,
      keyAlias: key.aliasName,
      secretArn: secret.secretArn,
      secretName: secret.secretName,
      host: where.host,
      port: where.port,
      database: pg.endpoint.database,
      schema: pg.endpoint.schema,
      user: pg.endpoint.user,
    };
    this.registerOutputs({ keyArn: key.keyArn, secretArn: secret.secretArn });
  }
}
