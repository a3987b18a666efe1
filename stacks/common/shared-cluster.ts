import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { need } from './config.js';
import type { AdminSecret } from './postgres.js';
import {
  adminSecretRef,
  type Placement,
  type ProgramContext,
  placementDescriptor,
  type StagedPlacementOutputs,
  type StagedStackOutputs,
  type StagePlacement,
  type TenantStackOutputs,
  tenantStackOutputs,
} from './program.js';
import { newTenantKey, newTenantSecret, TIER_COMPONENT_TYPES } from './tenant.js';
import { TenantPostgres } from './tenant-postgres.js';

/** A secret's JSON string, as a secret Output. */
function secretString(secretId: string, parent: pulumi.Resource): pulumi.Output<string> {
  return pulumi.secret(aws.secretsmanager.getSecretVersionOutput({ secretId }, { parent }).secretString);
}

/**
 * `tenantry:tenant:Pool` / `tenantry:tenant:Bridge`: a tenant's placement on the shared cluster,
 * its rows (pool) or schema (bridge) in Postgres. The key and the connection secret are the
 * stack's own (see tenant.ts), so they outlive a change of tier.
 */
export class SharedClusterTenant extends pulumi.ComponentResource {
  readonly placement: Placement;

  constructor(
    name: string,
    ctx: ProgramContext,
    mode: 'pool' | 'bridge',
    opts?: pulumi.ComponentResourceOptions,
  ) {
    super(TIER_COMPONENT_TYPES[mode], name, {}, opts);
    const { input, settings } = ctx;
    const cluster = need(settings.sharedCluster, mode, 'sharedClusterSecretName');

    const adminSecret = secretString(cluster.adminSecretName, this);
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
      // The secret's name, not its value: the dynamic resources read it when they connect.
      adminSecret: adminSecretRef(ctx, cluster.adminSecretName),
      host: where.host,
      port: where.port,
      ssl: cluster.ssl,
      template: ctx.template,
      database: where.dbname,
      limits: ctx.tier.role,
      retainOnDelete: ctx.retainData,
      loginLimits: ctx.loginLimits,
      suspended: ctx.suspended,
    };
    const pg =
      mode === 'pool'
        ? new TenantPostgres(
            `${name}-pg`,
            {
              ...common,
              mode: 'pool',
              pool: settings.pool,
              poolPassword: secretString(settings.pool.roleSecretName, this).apply((raw) => {
                const password = (JSON.parse(raw) as { password?: unknown }).password;
                if (typeof password !== 'string' || password === '')
                  throw new Error(`${settings.pool.roleSecretName} must hold {"password": "…"}`);
                return password;
              }),
            },
            { parent: this },
          )
        : new TenantPostgres(`${name}-pg`, { ...common, mode: 'schema' }, { parent: this });

    this.placement = {
      host: where.host,
      port: where.port,
      database: pg.endpoint.database,
      schema: pg.endpoint.schema,
      user: pg.endpoint.user,
      ...(pg.endpoint.password ? { password: pg.endpoint.password } : {}),
      ...(pg.endpoint.tenantSetting ? { tenantSetting: pg.endpoint.tenantSetting } : {}),
    };
    this.registerOutputs({ database: pg.endpoint.database, schema: pg.endpoint.schema });
  }
}

/**
 * The staged placement as flat stack outputs (`stagedTier`, `stagedHost` …): the engine receives
 * only plain string, number and boolean outputs (plainOutputs), never an object.
 */
function stagedOutputs(staged: pulumi.Output<StagedPlacementOutputs>): StagedStackOutputs {
  return {
    stagedTier: staged.apply((s) => s.tier),
    stagedHost: staged.apply((s) => s.host),
    stagedPort: staged.apply((s) => s.port),
    stagedDatabase: staged.apply((s) => s.database),
    stagedSchema: staged.apply((s) => s.schema),
    stagedUser: staged.apply((s) => s.user),
    // An ARN, not a credential; absent for a bridge (its admin is the shared cluster's).
    stagedAdminSecretArn: staged.apply((s) => s.adminSecretArn ?? ''),
  };
}

/**
 * The pool and bridge programs: the stack's key, the placement on the shared cluster, the secret.
 * While a promotion is staged (`ctx.input.stagedTier`), `stage` (stagedPlacement, in staged.ts) also
 * builds the target tier's placement and the stack exports it as `staged`; the secret still holds the
 * routed placement's descriptor, this one's.
 */
export function sharedClusterStack(
  ctx: ProgramContext,
  mode: 'pool' | 'bridge',
  stage?: StagePlacement,
): TenantStackOutputs {
  if (ctx.input.stagedTier !== undefined && stage === undefined) {
    throw new Error(`the ${mode} program was asked to stage a placement it cannot build`);
  }
  // No snapshot outlives a shared-cluster tenant: its key is deleted with it (crypto-shredding).
  const key = newTenantKey(ctx, { retainKeyOnDelete: false });
  const { placement } = new SharedClusterTenant(`tenant-${ctx.input.slug}`, ctx, mode);
  const secret = newTenantSecret(ctx, key, placementDescriptor(ctx, placement));
  const staged = stage?.(ctx.input, key);
  return { ...tenantStackOutputs(ctx, key, secret, placement), ...(staged ? stagedOutputs(staged) : {}) };
}
