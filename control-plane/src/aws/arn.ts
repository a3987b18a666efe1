/**
 * ARNs Tenantry builds itself, in a module without dependencies so the Pulumi programs and the
 * control plane share them without loading an AWS SDK client.
 */

/** `arn:aws:iam::<account>:role/<roleName>`: the role Organizations creates in every vended account. */
export function memberRoleArn(accountId: string, roleName: string): string {
  if (!/^\d{12}$/.test(accountId)) throw new Error(`not an AWS account id: ${accountId}`);
  if (!/^[\w+=,.@-]{1,64}$/.test(roleName)) throw new Error(`not an IAM role name: ${roleName}`);
  return `arn:aws:iam::${accountId}:role/${roleName}`;
}
