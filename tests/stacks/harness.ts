/**
 * Runs a tier's program under `pulumi.runtime.setMocks` and records every resource and
 * invoke the program made. setMocks is called before the program module is imported
 * (dynamic import), as Pulumi's unit-test pattern requires.
 */
import { createHash } from 'node:crypto';
import * as pulumi from '@pulumi/pulumi';
import { tenantStackName } from '../../control-plane/src/domain/naming.js';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import { PULUMI_PROJECT } from '../../control-plane/src/engine/pulumi/naming.js';
import { CONFIG_NAMESPACE, parsePlatformSettings } from '../../stacks/common/config.js';
import type { TenantProgramInput } from '../../stacks/common/input.js';

export interface RecordedResource {
  type: string;
  name: string;
  /** Inputs with secrets unwrapped; `secretInputs` lists which top-level inputs were secret. */
  inputs: Record<string, unknown>;
  secretInputs: string[];
  state: Record<string, unknown>;
  id: string;
  /** The provider reference `urn::id`, when the resource was given one explicitly or through its parent. */
  provider?: string;
  custom?: boolean;
  /** As the engine would see them (from the mock monitor's register request and response). */
  urn: string;
  parent: string;
  aliases: RecordedAlias[];
  retainOnDelete: boolean;
  protect: boolean;
}

/** An alias as the SDK sends it to the engine: a URN, or a spec whose omitted parts default to the resource's. */
export interface RecordedAlias {
  urn?: string;
  name?: string;
  type?: string;
  parentUrn?: string;
  noParent?: boolean;
}

export interface RecordedCall {
  token: string;
  inputs: Record<string, unknown>;
  provider?: string;
}

export interface ProgramRun {
  resources: RecordedResource[];
  calls: RecordedCall[];
  outputs: Record<string, unknown>;
  byType(type: string): RecordedResource[];
  one(type: string): RecordedResource;
}

export const ACCOUNT_ID = '111111111111';
export const REGION = 'eu-west-1';
export const ADMIN_ROLE_ARN = `arn:aws:iam::${ACCOUNT_ID}:role/tenantry-control-plane`;
export const DATA_PLANE_ROLE_ARN = `arn:aws:iam::${ACCOUNT_ID}:role/tenantry-data-plane`;
export const SHARED_SECRET_NAME = 'tenantry/platform/shared-cluster-admin';
export const POOL_ROLE_PASSWORD = 'pool-role-password-from-the-platform-secret';

export const BASE_CONFIG: Record<string, string> = {
  'aws:region': REGION,
  'aws:skipCredentialsValidation': 'true',
  'aws:skipMetadataApiCheck': 'true',
  'aws:skipRequestingAccountId': 'true',
  'tenantry:adminRoleArn': ADMIN_ROLE_ARN,
  'tenantry:dataPlaneRoleArn': DATA_PLANE_ROLE_ARN,
  'tenantry:keyDeletionWindowDays': '14',
  'tenantry:sharedClusterSecretName': SHARED_SECRET_NAME,
  'tenantry:dbSubnetGroupName': 'tenantry-private',
  'tenantry:vpcSecurityGroupIds': JSON.stringify(['sg-0123456789abcdef0']),
  'tenantry:accountEmailDomain': 'tenants.example.com',
  'tenantry:accountParentOuId': 'ou-ab12-cdef3456',
  'tenantry:accountAvailabilityZones': JSON.stringify(['eu-west-1a', 'eu-west-1b']),
  'tenantry:accountDbIngressCidrs': JSON.stringify(['10.0.0.0/16']),
  'tenantry:accountArchiveKmsKeyArn': `arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/0f0f0f0f-1111-4222-8333-444455556666`,
};

/** The platform settings the programs read from BASE_CONFIG: the pool's schema, roles, setting and secret among them. */
export const PLATFORM_SETTINGS = parsePlatformSettings((key) => BASE_CONFIG[`${CONFIG_NAMESPACE}:${key}`]);
export const POOL_ROLE_SECRET_NAME = PLATFORM_SETTINGS.pool.roleSecretName;

const SIG_KEY = pulumi.runtime.specialSigKey;
const SECRET_SIG = pulumi.runtime.specialSecretSig;

function isSecretValue(v: unknown): v is { value: unknown } {
  return typeof v === 'object' && v !== null && (v as Record<string, unknown>)[SIG_KEY] === SECRET_SIG;
}

/** Mocks see secrets as `{ [sig]: secretSig, value }`; tests want the values and, separately, which were secret. */
function unwrap(v: unknown): unknown {
  if (isSecretValue(v)) return unwrap(v.value);
  if (Array.isArray(v)) return v.map(unwrap);
  if (typeof v === 'object' && v !== null) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrap(x)]));
  }
  return v;
}

const hex = (s: string, n: number) => createHash('sha256').update(s).digest('hex').slice(0, n);

/** The password the mocked Secrets Manager holds in an admin secret (the shared cluster's, an RDS master secret). */
export const mockAdminPassword = (secretId: string): string => `admin-${hex(secretId, 12)}`;
const accountIdOf = (name: string) =>
  String(Number.parseInt(hex(name, 10), 16))
    .padStart(12, '0')
    .slice(-12);

/** Cloud-assigned outputs a real provider would return, derived deterministically from the name. */
function mockState(type: string, name: string, inputs: Record<string, unknown>): Record<string, unknown> {
  switch (type) {
    case 'aws:kms/key:Key': {
      const keyId = `${hex(name, 8)}-${hex(name, 4)}-4${hex(name, 3)}-8${hex(name, 3)}-${hex(name, 12)}`;
      return { ...inputs, keyId, arn: `arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/${keyId}` };
    }
    case 'aws:kms/alias:Alias':
      return { ...inputs, arn: `arn:aws:kms:${REGION}:${ACCOUNT_ID}:${String(inputs.name)}` };
    case 'aws:secretsmanager/secret:Secret':
      return {
        ...inputs,
        arn: `arn:aws:secretsmanager:${REGION}:${ACCOUNT_ID}:secret:${String(inputs.name)}-${hex(name, 6)}`,
      };
    case 'aws:rds/instance:Instance':
      return {
        ...inputs,
        address: `${String(inputs.identifier)}.abcdefgh.${REGION}.rds.amazonaws.com`,
        port: 5432,
        masterUserSecrets: [
          {
            secretArn: `arn:aws:secretsmanager:${REGION}:${ACCOUNT_ID}:secret:rds!db-${hex(name, 8)}`,
            kmsKeyId: inputs.masterUserSecretKmsKeyId,
            secretStatus: 'active',
          },
        ],
      };
    case 'aws:rds/parameterGroup:ParameterGroup':
    case 'aws:rds/subnetGroup:SubnetGroup':
      return { ...inputs, name: inputs.name ?? `${name}-${hex(name, 7)}` };
    case 'aws:organizations/account:Account':
      return {
        ...inputs,
        arn: `arn:aws:organizations::${ACCOUNT_ID}:account/o-example/${accountIdOf(name)}`,
      };
    case 'aws:iam/role:Role':
      return { ...inputs, arn: `arn:aws:iam::${ACCOUNT_ID}:role/${name}-${hex(name, 7)}` };
    case 'aws:rds/snapshot:Snapshot':
      return {
        ...inputs,
        dbSnapshotArn: `arn:aws:rds:${REGION}:${ACCOUNT_ID}:snapshot:${String(inputs.dbSnapshotIdentifier)}`,
      };
    case 'pulumi-nodejs:dynamic:Resource':
      return {
        ...inputs,
        state: { mocked: true },
        ...(inputs.generatePassword ? { password: `pw-${hex(name, 16)}` } : {}),
      };
    default:
      return { ...inputs };
  }
}

function mockId(type: string, name: string): string {
  if (type === 'aws:organizations/account:Account') return accountIdOf(name);
  if (type === 'aws:ec2/securityGroup:SecurityGroup') return `sg-${hex(name, 17)}`;
  return `${name}-id`;
}

export interface RunOptions {
  config?: Record<string, string>;
  /** Unset these keys of BASE_CONFIG. */
  without?: string[];
}

interface RegisterRequest {
  getType(): string;
  getName(): string;
  getParent(): string;
  getRetainondelete(): boolean | undefined;
  getProtect(): boolean | undefined;
  getAliasesList(): {
    hasUrn(): boolean;
    getUrn(): string;
    getSpec():
      | { getName(): string; getType(): string; getParenturn(): string; getNoparent(): boolean }
      | undefined;
  }[];
}

/** Wraps the mock monitor's registerResource to see what the SDK sends the engine. */
function recordRegistrations(
  into: Omit<RecordedResource, 'inputs' | 'secretInputs' | 'state' | 'id' | 'provider' | 'custom'>[],
): void {
  const monitor = pulumi.runtime.getMonitor() as unknown as {
    registerResource(req: RegisterRequest, cb: (err: unknown, resp?: { getUrn(): string }) => void): void;
  };
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, cb) =>
    register(req, (err, resp) => {
      if (!err && resp) {
        into.push({
          type: req.getType(),
          name: req.getName(),
          urn: resp.getUrn(),
          parent: req.getParent(),
          retainOnDelete: req.getRetainondelete() === true,
          protect: req.getProtect() === true,
          aliases: req.getAliasesList().map((a) => {
            if (a.hasUrn()) return { urn: a.getUrn() };
            const spec = a.getSpec();
            return {
              ...(spec?.getName() ? { name: spec.getName() } : {}),
              ...(spec?.getType() ? { type: spec.getType() } : {}),
              ...(spec?.getParenturn() ? { parentUrn: spec.getParenturn() } : {}),
              ...(spec?.getNoparent() ? { noParent: true } : {}),
            };
          }),
        });
      }
      cb(err, resp);
    });
}

export async function runTierProgram(
  tier: Tier,
  input: TenantProgramInput,
  opts: RunOptions = {},
): Promise<ProgramRun> {
  if (input.tier !== tier) throw new Error(`harness: a ${tier} run was given a ${input.tier} tenant`);
  const resources: RecordedResource[] = [];
  const calls: RecordedCall[] = [];
  // What the engine gets per registration but the mocks do not see: URN, parent, aliases, options.
  const registrations: Omit<
    RecordedResource,
    'inputs' | 'secretInputs' | 'state' | 'id' | 'provider' | 'custom'
  >[] = [];
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const raw = args.inputs as Record<string, unknown>;
        const inputs = unwrap(raw) as Record<string, unknown>;
        const secretInputs = Object.keys(raw).filter((k) => isSecretValue(raw[k]));
        const state = mockState(args.type, args.name, inputs);
        const id = mockId(args.type, args.name);
        resources.push({
          type: args.type,
          name: args.name,
          inputs,
          secretInputs,
          state,
          id,
          ...(args.provider ? { provider: args.provider } : {}),
          ...(args.custom === undefined ? {} : { custom: args.custom }),
          urn: '',
          parent: '',
          aliases: [],
          retainOnDelete: false,
          protect: false,
        });
        return { id, state };
      },
      call(args) {
        calls.push({
          token: args.token,
          inputs: unwrap(args.inputs) as Record<string, unknown>,
          ...(args.provider ? { provider: args.provider } : {}),
        });
        if (args.token === 'aws:secretsmanager/getSecretVersion:getSecretVersion') {
          const secretId = String(args.inputs.secretId);
          if (secretId === POOL_ROLE_SECRET_NAME) {
            return { arn: secretId, secretString: JSON.stringify({ password: POOL_ROLE_PASSWORD }) };
          }
          const shared = secretId === SHARED_SECRET_NAME;
          return {
            arn: secretId,
            secretString: JSON.stringify({
              username: 'tenantry_admin',
              password: mockAdminPassword(secretId),
              ...(shared ? { host: 'shared.cluster.internal', port: 5432, dbname: 'tenantry_data' } : {}),
            }),
          };
        }
        return {};
      },
    },
    PULUMI_PROJECT,
    tenantStackName(input.slug),
    false,
  );
  recordRegistrations(registrations);
  const config = { ...BASE_CONFIG, ...opts.config };
  for (const k of opts.without ?? []) delete config[k];
  pulumi.runtime.setAllConfig(config, []);

  const { programFor } = await import('../../stacks/index.js');
  const program = programFor(input);
  // A failed registration surfaces as an unhandled rejection, not as a rejected promise: turn it into one.
  let onRejection: (e: unknown) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => {
    onRejection = reject;
    process.on('unhandledRejection', onRejection);
  });
  let resolved: Record<string, unknown>;
  try {
    resolved = await Promise.race([
      failed,
      (async () => {
        const outputs = (await pulumi.runtime.runInPulumiStack(program)) as
          | Record<string, unknown>
          | undefined;
        const values = await new Promise<Record<string, unknown>>((resolve) =>
          pulumi.output(outputs ?? {}).apply((v) => resolve(v as Record<string, unknown>)),
        );
        await pulumi.runtime.disconnect();
        return values;
      })(),
    ]);
  } finally {
    process.off('unhandledRejection', onRejection);
  }
  for (const r of resources) {
    const reg = registrations.find((x) => x.type === r.type && x.name === r.name);
    if (reg) Object.assign(r, reg);
  }
  const byType = (type: string) => resources.filter((r) => r.type === type);
  return {
    resources,
    calls,
    outputs: resolved,
    byType,
    one(type) {
      const [first, ...rest] = byType(type);
      if (!first || rest.length > 0)
        throw new Error(`expected exactly one ${type}, found ${byType(type).length}`);
      return first;
    },
  };
}

export function tenantInput(
  tier: Tier,
  slug: string,
  extra: Partial<TenantProgramInput> = {},
): TenantProgramInput {
  const h = hex(slug, 32);
  return {
    tenantId: `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`,
    slug,
    tier,
    ...extra,
  };
}
