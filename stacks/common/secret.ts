import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { tenantSecretName } from '../../control-plane/src/domain/naming.js';
import type { TenantTags } from './tags.js';

export interface TenantSecretArgs {
  slug: string;
  /** ARN of the tenant's key: the secret is encrypted with it, never with aws/secretsmanager. */
  kmsKeyArn: pulumi.Input<string>;
  /** The connection descriptor (may carry a password): stored as a secret, never exported. */
  value: pulumi.Input<object>;
  recoveryWindowInDays: number;
  /**
   * Offboarding: the destroy deletes the secret without a recovery window, so that the slug can be
   * onboarded again at once (Secrets Manager keeps a deleted secret's name for its whole window). The
   * final snapshot (silo) and the exported copy (account) are taken by the same offboarding first; the
   * descriptor's login is dropped with the tenant, so nothing is lost with it.
   */
  forceDeleteOnDestroy?: boolean;
  tags: TenantTags;
  /**
   * Principals of another account that may read the secret (the account tier: the platform's
   * data-plane role reads the descriptor in the tenant's own account). A resource policy; the
   * key policy already lets them decrypt through Secrets Manager.
   */
  crossAccountReaders?: pulumi.Input<string>[];
}

/** The secret's resource policy: read-only, for the named principals, nothing public. */
export function secretReadPolicy(readers: string[]): string {
  return JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'DataPlaneReadsDescriptor',
        Effect: 'Allow',
        Principal: { AWS: readers },
        Action: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
        Resource: '*',
      },
    ],
  });
}

/** `tenantry:tenant:Secret`: the tenant's connection descriptor in Secrets Manager. Only the ARN is an output. */
export class TenantSecret extends pulumi.ComponentResource {
  readonly secretArn: pulumi.Output<string>;
  readonly secretName: string;

  constructor(name: string, args: TenantSecretArgs, opts?: pulumi.ComponentResourceOptions) {
    super('tenantry:tenant:Secret', name, {}, opts);
    this.secretName = tenantSecretName(args.slug);
    const secret = new aws.secretsmanager.Secret(
      `${name}-secret`,
      {
        name: this.secretName,
        description: `Tenantry connection descriptor for ${args.slug}`,
        kmsKeyId: args.kmsKeyArn,
        recoveryWindowInDays: args.forceDeleteOnDestroy ? 0 : args.recoveryWindowInDays,
        tags: args.tags,
      },
      { parent: this },
    );
    new aws.secretsmanager.SecretVersion(
      `${name}-version`,
      {
        secretId: secret.id,
        secretString: pulumi.secret(pulumi.output(args.value).apply((v) => JSON.stringify(v))),
      },
      { parent: this },
    );
    if (args.crossAccountReaders && args.crossAccountReaders.length > 0) {
      new aws.secretsmanager.SecretPolicy(
        `${name}-policy`,
        {
          secretArn: secret.arn,
          policy: pulumi.all(args.crossAccountReaders).apply(secretReadPolicy),
          blockPublicPolicy: true,
        },
        { parent: this },
      );
    }
    this.secretArn = secret.arn;
    this.registerOutputs({ secretArn: this.secretArn });
  }
}
