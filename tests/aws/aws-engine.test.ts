/**
 * The aws target's own AWS reads (control-plane/src/engine/aws.ts) on the AWS API emulator: a
 * tenant's descriptor from its secret, an account tenant's from inside its account through the role
 * it was vended with, and the account an offboarding leaves open, found by its root email.
 */
import {
  CloseAccountCommand,
  CreateAccountCommand,
  CreateOrganizationCommand,
  DescribeCreateAccountStatusCommand,
  OrganizationsClient,
} from '@aws-sdk/client-organizations';
import { CreateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { STSClient } from '@aws-sdk/client-sts';
import { describe, expect, it } from 'vitest';
import { assumeRole, memberRoleArn } from '../../control-plane/src/aws/accounts.js';
import { tenantObjectName, tenantSecretName } from '../../control-plane/src/domain/naming.js';
import type { StepTenant } from '../../control-plane/src/domain/ports.js';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import { AwsEngine } from '../../control-plane/src/engine/aws.js';
import { TEST_PLATFORM } from '../fixtures/platform.js';
import { MOTO_REGION, skipReason, useMoto } from './helpers/moto.js';

const moto = useMoto();
const region = MOTO_REGION;
const orgs = () => new OrganizationsClient({ region: 'us-east-1' });
const ROLE = 'OrganizationAccountAccessRole';

const tenant = (tier: Tier, slug: string, id = '0a1b2c3d-0000-4000-8000-00000000000a'): StepTenant => ({
  id,
  slug,
  tier,
  templateVersion: 1,
});

/** The engine as aws-target.ts builds it with TENANTRY_AWS_ENDPOINT: every service at the emulator. */
function engine(extra: Partial<ConstructorParameters<typeof AwsEngine>[0]> = {}): AwsEngine {
  const endpoint = moto.endpoint();
  return new AwsEngine({
    backendUrl: 'file:///var/lib/tenantry/state',
    envVars: { PATH: '/usr/bin' },
    aws: { region, endpoints: { secretsmanager: endpoint, organizations: endpoint, sts: endpoint } },
    platform: TEST_PLATFORM,
    workspaceRoot: '/var/lib/tenantry/pulumi',
    concurrency: 2,
    timeoutMs: 600_000,
    programVersion: '1.0.0+template.1',
    ...extra,
  });
}

const descriptor = (tier: Tier) => ({
  tenantId: 'x',
  tier,
  host: 'tenantry-acme-1a2b3c.abcdefgh.eu-west-1.rds.amazonaws.com',
  port: 5432,
  database: tenantObjectName('acme'),
  schema: 'app',
  user: tenantObjectName('acme'),
  password: 'never-returned',
});

async function vend(email: string): Promise<string> {
  const c = await orgs().send(new CreateAccountCommand({ Email: email, AccountName: email, RoleName: ROLE }));
  const s = await orgs().send(
    new DescribeCreateAccountStatusCommand({ CreateAccountRequestId: c.CreateAccountStatus?.Id }),
  );
  return String(s.CreateAccountStatus?.AccountId);
}

const emailOf = (t: StepTenant) => `root+${t.slug}-${AwsEngine.accountEmailSuffix(t.id)}@tenants.example.com`;

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `the aws target on the emulator${skipReason ? ` (${skipReason})` : ''}`,
  () => {
    it('reads a tenant’s descriptor from its secret, the secret’s ARN as its reference, and leaves the password there', async () => {
      const created = await new SecretsManagerClient({ region }).send(
        new CreateSecretCommand({
          Name: tenantSecretName('acme'),
          SecretString: JSON.stringify(descriptor('silo')),
        }),
      );
      const e = engine();
      try {
        expect(await e.connection(tenant('silo', 'acme'))).toEqual({
          tenantId: '0a1b2c3d-0000-4000-8000-00000000000a',
          tier: 'silo',
          host: descriptor('silo').host,
          port: 5432,
          database: tenantObjectName('acme'),
          schema: 'app',
          user: tenantObjectName('acme'),
          secretRef: created.ARN,
        });
      } finally {
        await e.close();
      }
    });

    it('reads an account tenant’s descriptor inside its own account, through the role it was vended with', async () => {
      await orgs().send(new CreateOrganizationCommand({ FeatureSet: 'ALL' }));
      const t = tenant('account', 'acme', '0a1b2c3d-0000-4000-8000-0000000000bb');
      // A closed predecessor of the same slug (another tenant id, so another root email).
      const old = await vend('root+acme-000000000000@tenants.example.com');
      await orgs().send(new CloseAccountCommand({ AccountId: old }));
      const id = await vend(emailOf(t));
      const inside = new SecretsManagerClient({
        region,
        credentials: await assumeRole(new STSClient({ region }), memberRoleArn(id, ROLE), 'test'),
      });
      const created = await inside.send(
        new CreateSecretCommand({
          Name: tenantSecretName('acme'),
          SecretString: JSON.stringify(descriptor('account')),
        }),
      );
      expect(created.ARN).toContain(`:${id}:secret:`);
      const e = engine();
      try {
        const c = await e.connection(t);
        expect(c.secretRef).toBe(created.ARN);
        expect(c).not.toHaveProperty('password');
      } finally {
        await e.close();
      }
    });

    it('says so when an account tenant has no active account', async () => {
      await orgs().send(new CreateOrganizationCommand({ FeatureSet: 'ALL' }));
      const e = engine();
      try {
        await expect(e.connection(tenant('account', 'gone'))).rejects.toMatchObject({
          code: 'SECRET_UNAVAILABLE',
        });
      } finally {
        await e.close();
      }
    });

    it('queues the closure of the account an offboarding left open, found by its root email, and of none without one', async () => {
      await orgs().send(new CreateOrganizationCommand({ FeatureSet: 'ALL' }));
      const t = tenant('account', 'leaver', '0a1b2c3d-0000-4000-8000-0000000000cc');
      const id = await vend(emailOf(t));
      const queued: string[] = [];
      const e = engine({
        runner: async () => ({ summary: {}, outputs: {} }),
        pins: null,
        closures: { enqueue: async (_t, accountId) => void queued.push(accountId) },
      });
      const step = (x: StepTenant) => ({
        operationId: 'op_test',
        kind: 'offboard' as const,
        step: 'stack-destroy',
        tenant: x,
        signal: new AbortController().signal,
      });
      try {
        await e.runStep(step(t));
        expect(queued).toEqual([id]);
        await e.runStep(step(tenant('account', 'never-vended', '0a1b2c3d-0000-4000-8000-0000000000dd')));
        expect(queued).toEqual([id]);
      } finally {
        await e.close();
      }
    });
  },
);
