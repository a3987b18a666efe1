/**
 * The tenant key's policy and the ARN arithmetic it needs, without any Pulumi or AWS SDK import: the
 * programs and the policy pack (which runs in the analyzer) share it.
 */

/** `arn:aws:iam::<account>:…` → `<account>`; the partition with it. */
export function arnAccount(arn: string): { partition: string; accountId: string } {
  const m = /^arn:(aws(?:-[a-z]+)*):[a-z0-9-]*:[a-z0-9-]*:(\d{12}):/.exec(arn);
  if (!m) throw new Error(`not an ARN with an account: ${arn}`);
  return { partition: m[1] as string, accountId: m[2] as string };
}

/**
 * What the account root may do with a tenant key: administer it, never use it. KMS refuses a key
 * policy that would lock every principal out, and a deleted admin role would otherwise orphan the key
 * (only AWS support could recover it); the root stays able to repair the policy. It is not granted
 * Encrypt, Decrypt, ReEncrypt or GenerateDataKey: IAM policies alone never give use of a tenant key.
 * (An administrator can rewrite the policy to grant itself use: that is what administering means, and
 * CloudTrail records it.)
 */
export const KEY_ROOT_ADMIN_ACTIONS = [
  'kms:Create*',
  'kms:Describe*',
  'kms:Enable*',
  'kms:List*',
  'kms:Put*',
  'kms:Update*',
  'kms:Revoke*',
  'kms:Disable*',
  'kms:Get*',
  'kms:Delete*',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:ScheduleKeyDeletion',
  'kms:CancelKeyDeletion',
] as const;

/** `arn:<partition>:iam::<account>:root`, from any ARN of that account (the platform admin role's). */
export function accountRootArn(accountArn: string): string {
  const { partition, accountId } = arnAccount(accountArn);
  return `arn:${partition}:iam::${accountId}:root`;
}

/**
 * The key policy: the platform admin role (and, in the account tier, the role assumed in the account)
 * administers and uses the key; the data plane decrypts through Secrets Manager and RDS only; the
 * account root is the fallback administrator (KEY_ROOT_ADMIN_ACTIONS), without use.
 */
export function tenantKeyPolicy(p: {
  adminPrincipalArns: string[];
  dataPlaneRoleArn: string;
  region: string;
  accountRootArn: string;
}): string {
  return JSON.stringify({
    Version: '2012-10-17',
    Id: 'tenantry-tenant-key',
    Statement: [
      {
        Sid: 'AccountRootFallbackAdministrator',
        Effect: 'Allow',
        Principal: { AWS: p.accountRootArn },
        Action: [...KEY_ROOT_ADMIN_ACTIONS],
        Resource: '*',
      },
      {
        Sid: 'PlatformAdministers',
        Effect: 'Allow',
        Principal: { AWS: p.adminPrincipalArns },
        Action: 'kms:*',
        Resource: '*',
      },
      {
        Sid: 'DataPlaneDecryptsThroughServices',
        Effect: 'Allow',
        Principal: { AWS: [p.dataPlaneRoleArn] },
        Action: ['kms:Decrypt', 'kms:DescribeKey'],
        Resource: '*',
        Condition: {
          StringEquals: {
            'kms:ViaService': [`secretsmanager.${p.region}.amazonaws.com`, `rds.${p.region}.amazonaws.com`],
          },
        },
      },
    ],
  });
}
