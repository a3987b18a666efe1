import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  tenantStackName as stackName,
  tenantKeyAlias,
  tenantObjectName,
  tenantSecretName,
} from '../../control-plane/src/domain/naming.js';
import type { Tier, TierCatalog } from '../../control-plane/src/domain/tiers.js';
import { PULUMI_PROJECT } from '../../control-plane/src/engine/pulumi/naming.js';
import { tenantOwnerRoleName } from '../../stacks/common/tenant-postgres.js';
import { stackUrnPrefix } from '../helpers/urns.js';
import {
  ADMIN_ROLE_ARN,
  DATA_PLANE_ROLE_ARN,
  PLATFORM_SETTINGS,
  POOL_ROLE_PASSWORD,
  POOL_ROLE_SECRET_NAME,
  type ProgramRun,
  type RecordedResource,
  runTierProgram,
  SHARED_SECRET_NAME,
  tenantInput,
} from './harness.js';

const catalog = JSON.parse(
  readFileSync(new URL('../../templates/tiers.json', import.meta.url), 'utf8'),
) as TierCatalog;

const KEY = 'aws:kms/key:Key';
const ALIAS = 'aws:kms/alias:Alias';
const SECRET = 'aws:secretsmanager/secret:Secret';
const SECRET_VERSION = 'aws:secretsmanager/secretVersion:SecretVersion';
const RDS = 'aws:rds/instance:Instance';
const PARAMS = 'aws:rds/parameterGroup:ParameterGroup';
const DYNAMIC = 'pulumi-nodejs:dynamic:Resource';
const ACCOUNT = 'aws:organizations/account:Account';
const AWS_PROVIDER = 'pulumi:providers:aws';

/** Types that accept tags; every one of them must carry the three Tenantry tags. */
const TAGGABLE = new Set([
  KEY,
  SECRET,
  RDS,
  PARAMS,
  ACCOUNT,
  'aws:ec2/vpc:Vpc',
  'aws:ec2/subnet:Subnet',
  'aws:ec2/securityGroup:SecurityGroup',
  'aws:rds/subnetGroup:SubnetGroup',
]);

const suffixFor = (slug: string) =>
  `${slug
    .replace(/[^a-z0-9]/g, '')
    .padEnd(8, '0')
    .slice(0, 8)}a1b2`;

function inputFor(tier: Tier, slug: string) {
  return tenantInput(tier, slug, tier === 'account' ? { accountEmailSuffix: suffixFor(slug) } : {});
}

/** Runs share Pulumi's global runtime state, so each is started lazily, in test order, never concurrently. */
function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => {
    p ??= fn();
    return p;
  };
}

function dynamicKinds(run: ProgramRun): string[] {
  return run
    .byType(DYNAMIC)
    .map((r) => String(r.inputs.kind))
    .sort();
}

interface KeyStatement {
  Sid: string;
  Principal: { AWS: string[] | string };
  Action: string[] | string;
}
const keyStatements = (key: RecordedResource) =>
  (JSON.parse(String(key.inputs.policy)) as { Statement: KeyStatement[] }).Statement;

/** Who may use the key: every principal but the account root, whose statement only administers it. */
function keyPolicyPrincipals(key: RecordedResource): string[] {
  return keyStatements(key)
    .filter((s) => s.Sid !== 'AccountRootFallbackAdministrator')
    .flatMap((s) => [s.Principal.AWS].flat())
    .sort();
}

describe.each(['pool', 'bridge', 'silo', 'account'] as const)('the %s tier program', (tier) => {
  const slug = `${tier}-co`;
  const runP = once(() => runTierProgram(tier, inputFor(tier, slug)));

  it('creates exactly one rotating KMS key for the tenant, aliased alias/tenantry/<slug>', async () => {
    const run = await runP();
    const key = run.one(KEY);
    expect(key.inputs.enableKeyRotation).toBe(true);
    expect(key.inputs.deletionWindowInDays).toBe(14);
    const alias = run.one(ALIAS);
    expect(alias.inputs.name).toBe(tenantKeyAlias(slug));
    expect(alias.inputs.targetKeyId).toBe(key.state.keyId);
    expect(run.outputs.keyArn).toBe(key.state.arn);
  });

  it('lets only the platform admin role and the data-plane role use the key', async () => {
    const run = await runP();
    const principals = keyPolicyPrincipals(run.one(KEY));
    const expected = [ADMIN_ROLE_ARN, DATA_PLANE_ROLE_ARN];
    if (tier === 'account') {
      const account = run.one(ACCOUNT);
      expected.push(`arn:aws:iam::${account.id}:role/OrganizationAccountAccessRole`);
    }
    expect(principals).toEqual(expected.sort());
    expect(principals.some((p) => p.endsWith(':root'))).toBe(false);
  });

  it('keeps the account root as the key’s fallback administrator, without any use of the key', async () => {
    const run = await runP();
    const root = keyStatements(run.one(KEY)).filter((s) =>
      [s.Principal.AWS].flat().some((p) => p.endsWith(':root')),
    );
    // The account the key is in: the tenant's own for the account tier, the platform's otherwise.
    const account = tier === 'account' ? run.one(ACCOUNT).id : ADMIN_ROLE_ARN.split(':')[4];
    expect(root).toEqual([
      expect.objectContaining({
        Sid: 'AccountRootFallbackAdministrator',
        Principal: { AWS: `arn:aws:iam::${account}:root` },
      }),
    ]);
    const actions = [root[0]?.Action].flat();
    expect(actions).toEqual(
      expect.arrayContaining(['kms:Put*', 'kms:ScheduleKeyDeletion', 'kms:CancelKeyDeletion']),
    );
    expect(actions.filter((a) => /Encrypt|Decrypt|GenerateDataKey|^kms:\*$/.test(String(a)))).toEqual([]);
  });

  it('encrypts the connection secret with the tenant key and exports only its ARN', async () => {
    const run = await runP();
    const key = run.one(KEY);
    const secret = run.one(SECRET);
    expect(secret.inputs.name).toBe(tenantSecretName(slug));
    expect(secret.inputs.kmsKeyId).toBe(key.state.arn);
    const version = run.one(SECRET_VERSION);
    expect(version.inputs.secretId).toBe(secret.id);
    expect(version.secretInputs).toContain('secretString');
    const descriptor = JSON.parse(String(version.inputs.secretString)) as Record<string, unknown>;
    expect(descriptor.tenantId).toBe(run.outputs.tenantId);
    expect(descriptor.tier).toBe(tier);
    expect(descriptor.secretRef).toBe(tenantSecretName(slug));
    expect(run.outputs.secretArn).toBe(secret.state.arn);
    const exported = JSON.stringify(run.outputs);
    expect(exported).not.toMatch(/password/i);
    if (typeof descriptor.password === 'string') expect(exported).not.toContain(descriptor.password);
  });

  it('tags every taggable resource with tenant id, tier and managed-by', async () => {
    const run = await runP();
    const taggable = run.resources.filter((r) => TAGGABLE.has(r.type));
    expect(taggable.length).toBeGreaterThanOrEqual(2);
    for (const r of taggable) {
      expect(r.inputs.tags, `${r.type} ${r.name}`).toEqual({
        'tenantry:tenant-id': run.outputs.tenantId,
        'tenantry:tier': tier,
        'tenantry:managed-by': 'tenantry',
      });
    }
  });

  it('opens nothing to 0.0.0.0/0 or ::/0', async () => {
    const run = await runP();
    const everything = JSON.stringify(run.resources.map((r) => r.inputs));
    expect(everything).not.toContain('0.0.0.0/0');
    expect(everything).not.toContain('::/0');
  });
});

describe('Postgres-level resources through the dynamic provider', () => {
  it('pool ensures the shared pool (retained) and adds the tenant membership', async () => {
    const run = await runTierProgram('pool', inputFor('pool', 'poolco'));
    expect(dynamicKinds(run)).toEqual(['pool', 'pool-membership', 'role', 'role']);
    const membership = run.byType(DYNAMIC).find((r) => r.inputs.kind === 'pool-membership');
    expect(membership?.inputs.spec).toMatchObject({
      schema: PLATFORM_SETTINGS.pool.schema,
      tenantId: run.outputs.tenantId,
      slug: 'poolco',
    });
    const admin = JSON.parse(String(membership?.inputs.admin)) as Record<string, unknown>;
    // A reference to the shared cluster's admin secret, read when the provider connects: no credential.
    expect(admin).toEqual({
      secretId: SHARED_SECRET_NAME,
      region: 'eu-west-1',
      host: 'shared.cluster.internal',
      port: 5432,
      database: 'tenantry_data',
      ssl: true,
    });
    expect(run.calls.some((c) => c.inputs.secretId === SHARED_SECRET_NAME)).toBe(true);
  });

  it('keeps no admin password in any resource’s inputs (a rotated master password is read when used)', async () => {
    for (const tier of ['pool', 'bridge', 'silo', 'account'] as const) {
      const run = await runTierProgram(tier, inputFor(tier, `nopw-${tier}`));
      for (const r of run.byType(DYNAMIC)) {
        const admin = JSON.parse(String(r.inputs.admin)) as Record<string, unknown>;
        expect(Object.keys(admin).sort(), `${tier} ${r.name}`).not.toContain('password');
        expect(typeof admin.secretId, `${tier} ${r.name}`).toBe('string');
        expect(JSON.stringify(r.inputs.admin)).not.toMatch(/admin-[0-9a-f]{12}/); // the mocked secrets' passwords
      }
    }
  });

  it('bridge creates owner and login roles, a schema from the template, and grants', async () => {
    const run = await runTierProgram('bridge', inputFor('bridge', 'bridgeco'));
    expect(dynamicKinds(run)).toEqual(['grants', 'role', 'role', 'schema']);
    const schema = run.byType(DYNAMIC).find((r) => r.inputs.kind === 'schema');
    const spec = schema?.inputs.spec as { name: string; owner: string; template: { version: number } };
    expect(spec.name).toBe(tenantObjectName('bridgeco'));
    expect(spec.owner).toBe(tenantOwnerRoleName('bridgeco'));
    expect(spec.template.version).toBe(catalog.templateVersion);
    const login = run
      .byType(DYNAMIC)
      .find((r) => (r.inputs.spec as { name: string }).name === tenantObjectName('bridgeco'));
    expect(login?.inputs.generatePassword).toBe(true);
    expect(login?.inputs.spec).toMatchObject({ connectionLimit: catalog.tiers.bridge.role.connectionLimit });
  });

  it('silo creates the tenant database and applies the template against the new instance', async () => {
    const run = await runTierProgram('silo', inputFor('silo', 'siloco'));
    expect(dynamicKinds(run)).toEqual(['database', 'grants', 'role', 'role', 'schema']);
    const rds = run.one(RDS);
    const schema = run.byType(DYNAMIC).find((r) => r.inputs.kind === 'schema');
    const admin = JSON.parse(String(schema?.inputs.admin)) as Record<string, unknown>;
    // The RDS-managed master secret, by ARN: the provider reads it each time it connects, never the program.
    const masterSecret = (rds.state.masterUserSecrets as { secretArn: string }[])[0]?.secretArn;
    expect(admin).toEqual({
      secretId: masterSecret,
      region: 'eu-west-1',
      host: rds.state.address,
      port: 5432,
      database: tenantObjectName('siloco'),
      ssl: true,
    });
    expect(run.calls.some((c) => c.inputs.secretId === masterSecret)).toBe(false);
  });
});

describe.each(['silo', 'account'] as const)('the %s RDS instance', (tier) => {
  const runP = once(() => runTierProgram(tier, inputFor(tier, `${tier}-db`)));

  it('is encrypted with the tenant key, private, deletion-protected and keeps a final snapshot', async () => {
    const run = await runP();
    const key = run.one(KEY);
    const rds = run.one(RDS);
    expect(rds.inputs).toMatchObject({
      engine: 'postgres',
      storageEncrypted: true,
      kmsKeyId: key.state.arn,
      publiclyAccessible: false,
      deletionProtection: true,
      skipFinalSnapshot: false,
      manageMasterUserPassword: true,
      masterUserSecretKmsKeyId: key.state.arn,
    });
    expect(String(rds.inputs.finalSnapshotIdentifier)).toMatch(/^tenantry-[a-z0-9-]+-final-[0-9a-f]{12}$/);
    expect(rds.inputs.password).toBeUndefined();
  });

  it('takes instance class and backup retention from templates/tiers.json', async () => {
    const run = await runP();
    const rds = run.one(RDS);
    const settings = catalog.tiers[tier].rds;
    expect(rds.inputs.instanceClass).toBe(settings?.instanceClass);
    expect(rds.inputs.backupRetentionPeriod).toBe(settings?.backupRetentionDays);
    expect(rds.inputs.allocatedStorage).toBe(settings?.allocatedStorageGb);
  });

  it('runs with the tier’s production settings: Multi-AZ, storage autoscaling, backups, Performance Insights under the tenant key, log exports, enhanced monitoring', async () => {
    const run = await runP();
    const rds = run.one(RDS);
    const key = run.one(KEY);
    const settings = catalog.tiers[tier].rds;
    if (!settings) throw new Error(`templates/tiers.json has no rds settings for ${tier}`);
    expect(settings.maxAllocatedStorageGb).toBeGreaterThan(settings.allocatedStorageGb);
    const role = run.one('aws:iam/role:Role');
    expect(rds.inputs).toMatchObject({
      multiAz: settings.multiAz,
      maxAllocatedStorage: settings.maxAllocatedStorageGb,
      backupRetentionPeriod: settings.backupRetentionDays,
      performanceInsightsEnabled: true,
      performanceInsightsKmsKeyId: key.state.arn,
      performanceInsightsRetentionPeriod: settings.performanceInsightsRetentionDays,
      enabledCloudwatchLogsExports: settings.logExports,
      monitoringInterval: settings.monitoringIntervalSeconds,
      monitoringRoleArn: role.state.arn,
    });
    // The monitoring role: only RDS's monitoring service assumes it, with AWS's managed policy.
    expect(JSON.parse(String(role.inputs.assumeRolePolicy)).Statement).toEqual([
      { Effect: 'Allow', Principal: { Service: 'monitoring.rds.amazonaws.com' }, Action: 'sts:AssumeRole' },
    ]);
    expect(role.inputs.managedPolicyArns).toEqual([
      'arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole',
    ]);
  });

  it('uses a parameter group with logical replication applied at reboot', async () => {
    const run = await runP();
    const params = run.one(PARAMS);
    expect(params.inputs.family).toBe(`postgres${catalog.tiers[tier].rds?.engineVersion}`);
    expect(params.inputs.parameters).toContainEqual({
      name: 'rds.logical_replication',
      value: '1',
      applyMethod: 'pending-reboot',
    });
    expect(run.one(RDS).inputs.parameterGroupName).toBe(params.state.name);
  });
});

describe('silo network placement', () => {
  it('places the instance in the configured subnet group and security groups', async () => {
    const run = await runTierProgram('silo', inputFor('silo', 'netco'));
    const rds = run.one(RDS);
    expect(rds.inputs.dbSubnetGroupName).toBe('tenantry-private');
    expect(rds.inputs.vpcSecurityGroupIds).toEqual(['sg-0123456789abcdef0']);
  });
});

describe('per-tenant keys', () => {
  it('encrypts each tenant with its own key, never another tenant’s', async () => {
    const a = await runTierProgram('silo', inputFor('silo', 'alpha'));
    const b = await runTierProgram('silo', inputFor('silo', 'bravo'));
    const keyA = a.one(KEY).state.arn;
    const keyB = b.one(KEY).state.arn;
    expect(keyA).not.toBe(keyB);
    for (const [run, key] of [
      [a, keyA],
      [b, keyB],
    ] as const) {
      expect(run.one(SECRET).inputs.kmsKeyId).toBe(key);
      expect(run.one(RDS).inputs.kmsKeyId).toBe(key);
      expect(run.one(RDS).inputs.masterUserSecretKmsKeyId).toBe(key);
    }
  });
});

describe('the account tier', () => {
  it('vends an account under the configured OU with a plus-addressed root email that closes on deletion', async () => {
    const run = await runTierProgram(
      'account',
      tenantInput('account', 'acct-one', { accountEmailSuffix: '0a1b2c3d4e5f' }),
    );
    const account = run.one(ACCOUNT);
    expect(account.inputs).toMatchObject({
      email: 'root+acct-one-0a1b2c3d4e5f@tenants.example.com',
      parentId: 'ou-ab12-cdef3456',
      roleName: 'OrganizationAccountAccessRole',
      closeOnDeletion: true,
    });
    expect(run.outputs.accountId).toBe(account.id);
  });

  it('gives two vendings of one slug (two tenant ids) distinct root emails, and a re-run of one the same', async () => {
    // The suffix the engine hands the program in production: derived from the tenant id.
    const { AwsEngine } = await import('../../control-plane/src/engine/aws.js');
    const vend = (tenantId: string) =>
      runTierProgram('account', {
        tenantId,
        slug: 'same-slug',
        tier: 'account',
        accountEmailSuffix: AwsEngine.accountEmailSuffix(tenantId),
      });
    const first = '11111111-1111-4111-8111-111111111111';
    const second = '22222222-2222-4222-8222-222222222222';
    const emailA = (await vend(first)).one(ACCOUNT).inputs.email;
    const emailB = (await vend(second)).one(ACCOUNT).inputs.email;
    expect(emailA).toMatch(/^root\+same-slug-[0-9a-f]{12}@tenants\.example\.com$/);
    expect(emailB).toMatch(/^root\+same-slug-[0-9a-f]{12}@tenants\.example\.com$/);
    expect(emailA).not.toBe(emailB);
    expect((await vend(first)).one(ACCOUNT).inputs.email).toBe(emailA);
  });

  it('lets the platform data-plane role read the descriptor across accounts, and nobody else', async () => {
    const run = await runTierProgram('account', inputFor('account', 'reader'));
    const policy = run.one('aws:secretsmanager/secretPolicy:SecretPolicy');
    expect(policy.inputs.secretArn).toBe(run.one(SECRET).state.arn);
    expect(policy.inputs.blockPublicPolicy).toBe(true);
    expect(JSON.parse(String(policy.inputs.policy)).Statement).toEqual([
      expect.objectContaining({
        Effect: 'Allow',
        Principal: { AWS: [DATA_PLANE_ROLE_ARN] },
        Action: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
      }),
    ]);
    for (const tier of ['pool', 'silo'] as const) {
      const other = await runTierProgram(tier, inputFor(tier, `reader-${tier}`));
      expect(other.byType('aws:secretsmanager/secretPolicy:SecretPolicy')).toHaveLength(0);
    }
  });

  it('creates everything but the account itself through the provider that assumes the role in the new account', async () => {
    const run = await runTierProgram('account', inputFor('account', 'inside'));
    const account = run.one(ACCOUNT);
    const provider = run.one(AWS_PROVIDER);
    const assumeRoles = provider.inputs.assumeRoles;
    expect(typeof assumeRoles === 'string' ? JSON.parse(assumeRoles) : assumeRoles).toEqual([
      {
        roleArn: `arn:aws:iam::${account.id}:role/OrganizationAccountAccessRole`,
        sessionName: 'tenantry-inside',
      },
    ]);
    // Provider inputs reach the engine as strings. It acts only in the tenant's account, so it looks
    // that account up: with the lookup skipped, the provider refuses to check allowedAccountIds.
    expect(provider.inputs).toMatchObject({
      skipCredentialsValidation: 'true',
      skipMetadataApiCheck: 'true',
      skipRequestingAccountId: 'false',
      region: 'eu-west-1',
    });
    expect(JSON.parse(String(provider.inputs.allowedAccountIds))).toEqual([account.id]);
    const providerRef = (ref: string | undefined) => ref?.split('::').slice(-2, -1)[0];
    const inAccount = run.resources.filter((r) => r.type.startsWith('aws:') && r.type !== ACCOUNT);
    expect(inAccount.map((r) => r.type)).toEqual(expect.arrayContaining([KEY, SECRET, RDS, PARAMS]));
    for (const r of inAccount) {
      expect(providerRef(r.provider), `${r.type} ${r.name}`).toBe('tenant-inside-provider');
    }
    expect(account.provider === undefined || providerRef(account.provider) === 'default').toBe(true);
    // The master secret is in the tenant's account: the dynamic resources read it through the role there.
    for (const r of run.byType(DYNAMIC)) {
      expect(JSON.parse(String(r.inputs.admin)).roleArn, r.name).toBe(
        `arn:aws:iam::${account.id}:role/OrganizationAccountAccessRole`,
      );
    }
  });

  it('protects the account and never closes it through a destroy (closures are queued within the quota)', async () => {
    const normal = await runTierProgram('account', inputFor('account', 'keeper'));
    const leaving = await runTierProgram('account', { ...inputFor('account', 'keeper'), offboarding: true });
    expect(normal.one(ACCOUNT)).toMatchObject({ protect: true, retainOnDelete: true });
    expect(leaving.one(ACCOUNT)).toMatchObject({ protect: false, retainOnDelete: true });
  });

  it('copies the last snapshot out of the account when offboarding, re-encrypted with the platform archive key', async () => {
    const normal = await runTierProgram('account', inputFor('account', 'exporter'));
    expect(normal.byType('aws:rds/snapshot:Snapshot')).toEqual([]);
    expect(normal.byType('aws:rds/snapshotCopy:SnapshotCopy')).toEqual([]);
    const leaving = await runTierProgram('account', {
      ...inputFor('account', 'exporter'),
      offboarding: true,
    });
    const snapshot = leaving.one('aws:rds/snapshot:Snapshot');
    const copy = leaving.one('aws:rds/snapshotCopy:SnapshotCopy');
    const rds = leaving.one(RDS);
    const providerRef = (ref: string | undefined) => ref?.split('::').slice(-2, -1)[0];
    // Taken inside the account, shared with the platform account…
    expect(providerRef(snapshot.provider)).toBe('tenant-exporter-provider');
    expect(snapshot.inputs).toMatchObject({
      dbInstanceIdentifier: rds.inputs.identifier,
      sharedAccounts: [ADMIN_ROLE_ARN.split(':')[4]],
    });
    // …copied there by the platform's own provider, under its archive key, and kept after the destroy.
    expect(copy.provider === undefined || providerRef(copy.provider) === 'default').toBe(true);
    expect(copy.inputs).toMatchObject({
      sourceDbSnapshotIdentifier: snapshot.state.dbSnapshotArn,
      kmsKeyId: PLATFORM_SETTINGS.account?.archiveKmsKeyArn,
    });
    expect(String(copy.inputs.targetDbSnapshotIdentifier)).toMatch(/-archive$/);
    expect(copy.retainOnDelete).toBe(true);
    // The URNs the offboarding `up` adds to its targets (it is targeted at what the stack has).
    const { exportResourceUrns } = await import('../../stacks/common/names.js');
    expect(exportResourceUrns(stackName('exporter'), PULUMI_PROJECT, 'exporter')).toEqual([
      snapshot.urn,
      copy.urn,
    ]);
  });

  it('builds a private network in the account whose database ingress is the configured CIDR only', async () => {
    const run = await runTierProgram('account', inputFor('account', 'netacct'));
    const sg = run.one('aws:ec2/securityGroup:SecurityGroup');
    expect(sg.inputs.ingress).toEqual([
      expect.objectContaining({ protocol: 'tcp', fromPort: 5432, toPort: 5432, cidrBlocks: ['10.0.0.0/16'] }),
    ]);
    expect(run.byType('aws:ec2/internetGateway:InternetGateway')).toHaveLength(0);
    const rds = run.one(RDS);
    expect(rds.inputs.vpcSecurityGroupIds).toEqual([sg.id]);
  });
});

const KEY_AND_SECRET = ['tenantry:tenant:Key', KEY, ALIAS, 'tenantry:tenant:Secret', SECRET, SECRET_VERSION];

function keyAndSecretUrns(run: ProgramRun): string[] {
  return run.resources
    .filter((r) => KEY_AND_SECRET.includes(r.type))
    .map((r) => r.urn)
    .sort();
}

/** `urn:pulumi:s::p::a$b::n` → `urn:pulumi:s::p::a$b$` (what a child's type is appended to). */
const childPrefix = (urn: string) => `${urn.slice(0, urn.lastIndexOf('::'))}$`;
const nameOf = (urn: string) => urn.slice(urn.lastIndexOf('::') + 2);

/**
 * The URNs an alias stands for, as the engine resolves alias specs: omitted parts default to the
 * resource's own; a child inherits each alias of its parent, with the parent's name prefix in its
 * own name replaced by the alias's (Pulumi's `inheritedChildAlias`).
 */
function aliasUrns(run: ProgramRun, r: RecordedResource): string[] {
  const own = r.aliases.map((a) => {
    if (a.urn) return a.urn;
    const parent = a.parentUrn ?? r.parent;
    return `${childPrefix(parent)}${a.type ?? r.type}::${a.name ?? r.name}`;
  });
  const parent = run.resources.find((p) => p.urn === r.parent);
  if (!parent) return own;
  const inherited = aliasUrns(run, parent).map((parentAlias) => {
    const name = r.name.startsWith(parent.name)
      ? nameOf(parentAlias) + r.name.slice(parent.name.length)
      : r.name;
    return `${childPrefix(parentAlias)}${r.type}::${name}`;
  });
  return [...own, ...inherited];
}

describe('a change of tier', () => {
  const slug = 'movers';
  const runs = once(async () => {
    const out: Partial<Record<Tier, ProgramRun>> = {};
    for (const tier of ['pool', 'bridge', 'silo', 'account'] as const) {
      out[tier] = await runTierProgram(tier, inputFor(tier, slug));
    }
    return out as Record<Tier, ProgramRun>;
  });

  it('keeps the URNs of the key, its alias, the secret and its version: Pulumi updates them in place', async () => {
    const r = await runs();
    const pool = keyAndSecretUrns(r.pool);
    expect(pool).toHaveLength(KEY_AND_SECRET.length);
    expect(pool).toContain(
      `${stackUrnPrefix(slug)}tenantry:tenant:Key$aws:kms/key:Key::tenant-${slug}-key-key`,
    );
    expect(keyAndSecretUrns(r.bridge)).toEqual(pool);
    expect(keyAndSecretUrns(r.silo)).toEqual(pool);
    expect(keyAndSecretUrns(r.account)).toEqual(pool);
    // The fixed cloud names stay with those same resources.
    for (const run of Object.values(r)) {
      expect(run.one(ALIAS).inputs.name).toBe(tenantKeyAlias(slug));
      expect(run.one(SECRET).inputs.name).toBe(tenantSecretName(slug));
    }
  });

  it('aliases the key and the secret to where every earlier layout put them (under each tier’s component)', async () => {
    const { silo } = await runs();
    const stack = stackUrnPrefix(slug);
    const keyComponent = silo.one('tenantry:tenant:Key');
    expect(keyComponent.aliases).toEqual([
      { parentUrn: `${stack}tenantry:tenant:Pool::tenant-${slug}` },
      { parentUrn: `${stack}tenantry:tenant:Bridge::tenant-${slug}` },
      { parentUrn: `${stack}tenantry:tenant:Silo::tenant-${slug}` },
      {
        name: `tenant-${slug}-silo-key`,
        parentUrn: `${stack}tenantry:tenant:Account$tenantry:tenant:Silo::tenant-${slug}-silo`,
      },
    ]);
    const legacy = (chain: string, base: string) => [
      `${stack}${chain}$tenantry:tenant:Key::${base}-key`,
      `${stack}${chain}$tenantry:tenant:Key$aws:kms/key:Key::${base}-key-key`,
      `${stack}${chain}$tenantry:tenant:Key$aws:kms/alias:Alias::${base}-key-alias`,
      `${stack}${chain}$tenantry:tenant:Secret::${base}-connection`,
      `${stack}${chain}$tenantry:tenant:Secret$aws:secretsmanager/secret:Secret::${base}-connection-secret`,
      `${stack}${chain}$tenantry:tenant:Secret$aws:secretsmanager/secretVersion:SecretVersion::${base}-connection-version`,
    ];
    const covered = silo.resources
      .filter((x) => KEY_AND_SECRET.includes(x.type))
      .flatMap((x) => aliasUrns(silo, x));
    for (const old of [
      ...legacy('tenantry:tenant:Pool', `tenant-${slug}`),
      ...legacy('tenantry:tenant:Bridge', `tenant-${slug}`),
      ...legacy('tenantry:tenant:Silo', `tenant-${slug}`),
      ...legacy('tenantry:tenant:Account$tenantry:tenant:Silo', `tenant-${slug}-silo`),
    ]) {
      expect(covered, old).toContain(old);
    }
  });

  it('retains the source placement’s data when it leaves the stack, and deletes neither key nor secret', async () => {
    const r = await runs();
    const tenantOwned = (run: ProgramRun) =>
      run.byType(DYNAMIC).filter((x) => !/-pool-(owner|app)$|-pool$/.test(x.name));
    for (const tier of ['pool', 'bridge', 'silo', 'account'] as const) {
      for (const x of tenantOwned(r[tier])) expect(x.retainOnDelete, `${tier} ${x.name}`).toBe(true);
    }
    for (const tier of ['silo', 'account'] as const) {
      expect(r[tier].one(RDS).retainOnDelete).toBe(true);
      expect(r[tier].one(PARAMS).retainOnDelete).toBe(true);
    }
  });
});

describe('offboarding', () => {
  it.each(['pool', 'bridge', 'silo', 'account'] as const)(
    'the %s program lifts deletion protection and retains nothing of the tenant but a key that a final snapshot needs',
    async (tier) => {
      const normal = await runTierProgram(tier, inputFor(tier, `leaver-${tier}`));
      const leaving = await runTierProgram(tier, { ...inputFor(tier, `leaver-${tier}`), offboarding: true });
      const shared = /-pool-(owner|app)$|-pool$/;
      for (const x of leaving.byType(DYNAMIC)) {
        expect(x.retainOnDelete, x.name).toBe(shared.test(x.name));
      }
      const hasRds = tier === 'silo' || tier === 'account';
      expect(leaving.one(KEY).retainOnDelete).toBe(hasRds);
      expect(normal.one(KEY).retainOnDelete).toBe(hasRds);
      expect(leaving.one(ALIAS).retainOnDelete).toBe(false);
      // The secret goes at once: its name is free for the slug's next tenant (no recovery window).
      expect(normal.one(SECRET).inputs.recoveryWindowInDays).toBe(PLATFORM_SETTINGS.secretRecoveryWindowDays);
      expect(leaving.one(SECRET).inputs.recoveryWindowInDays).toBe(0);
      if (hasRds) {
        expect(normal.one(RDS).inputs.deletionProtection).toBe(true);
        expect(leaving.one(RDS).inputs).toMatchObject({
          deletionProtection: false,
          applyImmediately: true,
          skipFinalSnapshot: false,
        });
        expect(leaving.one(RDS).retainOnDelete).toBe(false);
        expect(leaving.one(PARAMS).retainOnDelete).toBe(false);
      }
    },
  );
});

describe('Postgres roles as the local engine makes them', () => {
  it('makes owner roles NOLOGIN and lets the (non-superuser) admin act as them', async () => {
    const { pool } = PLATFORM_SETTINGS;
    for (const tier of ['pool', 'bridge', 'silo'] as const) {
      const slug = `owners-${tier}`;
      const run = await runTierProgram(tier, inputFor(tier, slug));
      // Every role the program makes: the owner and the login, the pool's shared ones or the tenant's own.
      const [owner, login] =
        tier === 'pool'
          ? [pool.ownerRole, pool.appRole]
          : [tenantOwnerRoleName(slug), tenantObjectName(slug)];
      const roles = run.byType(DYNAMIC).filter((x) => x.inputs.kind === 'role');
      const roleName = (x: RecordedResource) => (x.inputs.spec as { name: string }).name;
      expect(roles.map(roleName).sort(), tier).toEqual([owner, login].sort());
      const o = roles.find((x) => roleName(x) === owner) as RecordedResource;
      expect(o.inputs.spec, o.name).toMatchObject({ login: false, connectionLimit: 0 });
      expect(o.inputs.grantToAdmin, o.name).toBe(true);
    }
  });

  it('gives the pool login role the platform secret’s password and the pool schema as search_path, and the descriptor that password', async () => {
    const run = await runTierProgram('pool', inputFor('pool', 'poolpw'));
    const app = run.byType(DYNAMIC).find((x) => x.name.endsWith('-pool-app'));
    const { pool } = PLATFORM_SETTINGS;
    expect(app?.inputs.spec).toMatchObject({ name: pool.appRole, searchPath: [pool.schema] });
    expect(app?.inputs.password).toBe(POOL_ROLE_PASSWORD);
    expect(app?.secretInputs).toContain('password');
    expect(run.calls.some((c) => c.inputs.secretId === POOL_ROLE_SECRET_NAME)).toBe(true);
    const descriptor = JSON.parse(String(run.one(SECRET_VERSION).inputs.secretString)) as Record<
      string,
      unknown
    >;
    expect(descriptor).toMatchObject({
      user: pool.appRole,
      schema: pool.schema,
      password: POOL_ROLE_PASSWORD,
      tenantSetting: pool.tenantSetting,
    });
    expect(JSON.stringify(run.outputs)).not.toContain(POOL_ROLE_PASSWORD);
  });
});
