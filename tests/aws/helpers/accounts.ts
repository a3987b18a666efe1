/**
 * A member account vended on the AWS API emulator, as the account tier's stack leaves one: created
 * through Organizations with the access role, and a Secrets Manager client acting inside it through
 * that role (moto checks no trust policy, but keeps each account's secrets apart).
 */
import {
  CreateAccountCommand,
  CreateOrganizationCommand,
  DescribeCreateAccountStatusCommand,
  OrganizationsClient,
} from '@aws-sdk/client-organizations';
import { CreateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { STSClient } from '@aws-sdk/client-sts';
import { assumeRole, memberRoleArn } from '../../../control-plane/src/aws/accounts.js';
import { MOTO_REGION } from './moto.js';

export const MEMBER_ROLE = 'OrganizationAccountAccessRole';

export interface MemberAccount {
  accountId: string;
  roleArn: string;
  /** Creates a secret inside the account (an RDS-managed master secret: credentials only); its ARN. */
  createSecret(name: string, value: Record<string, unknown>): Promise<string>;
}

export async function vendMemberAccount(email: string): Promise<MemberAccount> {
  const org = new OrganizationsClient({ region: 'us-east-1' });
  try {
    // One organization per emulator; a second CreateOrganization is refused (AlreadyInOrganization).
    await org.send(new CreateOrganizationCommand({ FeatureSet: 'ALL' })).catch(() => undefined);
    const c = await org.send(
      new CreateAccountCommand({ Email: email, AccountName: email, RoleName: MEMBER_ROLE }),
    );
    const s = await org.send(
      new DescribeCreateAccountStatusCommand({ CreateAccountRequestId: c.CreateAccountStatus?.Id }),
    );
    const accountId = String(s.CreateAccountStatus?.AccountId);
    const roleArn = memberRoleArn(accountId, MEMBER_ROLE);
    return {
      accountId,
      roleArn,
      async createSecret(name, value) {
        const sts = new STSClient({ region: MOTO_REGION });
        const inside = new SecretsManagerClient({
          region: MOTO_REGION,
          credentials: await assumeRole(sts, roleArn, 'tenantry-test'),
        });
        try {
          const out = await inside.send(
            new CreateSecretCommand({ Name: name, SecretString: JSON.stringify(value) }),
          );
          return String(out.ARN);
        } finally {
          inside.destroy();
          sts.destroy();
        }
      },
    };
  } finally {
    org.destroy();
  }
}
