/**
 * Platform settings a tenant program reads from the `tenantry:*` stack config. The engine
 * validates them with the same function before it writes them (one `setAllConfig` call),
 * and the program validates them again, so a bad value fails before any resource is touched.
 */
export const CONFIG_NAMESPACE = 'tenantry';

export interface SharedClusterSettings {
  /** Secrets Manager secret holding the shared cluster's admin credentials (RDS JSON shape). */
  adminSecretName: string;
  /** TLS to the cluster; only LocalStack/dev turns it off. */
  ssl: boolean;
}

export interface PoolSettings {
  schema: string;
  ownerRole: string;
  appRole: string;
  tenantSetting: string;
  /**
   * Platform secret (`{"password": "…"}`) holding the pool login role's password, which every
   * pool tenant's descriptor carries. Provisioned with the shared cluster, like its admin secret;
   * the same name as the local target's pool secret.
   */
  roleSecretName: string;
}

export interface SiloNetworkSettings {
  dbSubnetGroupName: string;
  vpcSecurityGroupIds: string[];
}

export interface AccountSettings {
  emailDomain: string;
  parentOuId: string;
  roleName: string;
  vpcCidr: string;
  subnetCidrs: string[];
  availabilityZones: string[];
  /** Who may reach the in-account database on 5432 (e.g. the platform's transit CIDR). Never 0.0.0.0/0. */
  dbIngressCidrs: string[];
  /**
   * A KMS key of the platform account: offboarding copies the tenant's last snapshot out of its
   * account, re-encrypted with this key, before the account is closed (the tenant key dies with it).
   */
  archiveKmsKeyArn: string;
}

export interface PlatformSettings {
  adminRoleArn: string;
  dataPlaneRoleArn: string;
  keyDeletionWindowDays: number;
  secretRecoveryWindowDays: number;
  sharedCluster?: SharedClusterSettings;
  pool: PoolSettings;
  silo?: SiloNetworkSettings;
  account?: AccountSettings;
}

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(`${CONFIG_NAMESPACE}:${key}: ${message}`);
    this.name = 'ConfigError';
  }
}

const ROLE_ARN_RE = /^arn:aws(?:-[a-z]+)*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;
const SG_RE = /^sg-[0-9a-f]{8,17}$/;
const OU_RE = /^(?:ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}|r-[0-9a-z]{4,32})$/;
const DOMAIN_RE =
  /^(?=.{1,200}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;
const IAM_ROLE_NAME_RE = /^[\w+=,.@-]{1,64}$/;
const SQL_NAME_RE = /^[a-z_][a-z0-9_]{0,62}$/;
const SETTING_RE = /^[a-z_]+\.[a-z_]+$/;
const CIDR4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;
const AZ_RE = /^[a-z]{2}(?:-[a-z]+)+-\d[a-z]$/;
const SECRET_NAME_RE = /^[\w/+=.@-]{1,512}$/;
const KMS_KEY_ARN_RE = /^arn:aws(?:-[a-z]+)*:kms:[a-z0-9-]+:\d{12}:(key\/[0-9a-f-]{36}|alias\/[\w/-]+)$/;

export const KEY_DELETION_WINDOW = { min: 7, max: 30 } as const;

/** A CIDR that opens to everyone: refused wherever Tenantry writes network rules. */
export function isOpenCidr(cidr: string): boolean {
  const c = cidr.trim();
  return c.endsWith('/0');
}

function parseCidr(key: string, value: string): string {
  const m = CIDR4_RE.exec(value);
  if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32) {
    throw new ConfigError(key, `not an IPv4 CIDR: ${JSON.stringify(value)}`);
  }
  if (isOpenCidr(value)) throw new ConfigError(key, 'must not open to the whole internet (0.0.0.0/0)');
  return value;
}

type Getter = (key: string) => string | undefined;

function required(get: Getter, key: string): string {
  const v = get(key);
  if (v === undefined || v.trim() === '') throw new ConfigError(key, 'is required');
  return v.trim();
}

function matching(get: Getter, key: string, re: RegExp, what: string, fallback?: string): string {
  const v = get(key)?.trim() || fallback;
  if (v === undefined) throw new ConfigError(key, 'is required');
  if (!re.test(v)) throw new ConfigError(key, `must be ${what}, got ${JSON.stringify(v)}`);
  return v;
}

function stringList(get: Getter, key: string, fallback?: string[]): string[] {
  const raw = get(key);
  if (raw === undefined || raw.trim() === '') {
    if (fallback) return fallback;
    throw new ConfigError(key, 'is required');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError(key, 'must be a JSON array of strings');
  }
  if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((x) => typeof x === 'string')) {
    throw new ConfigError(key, 'must be a non-empty JSON array of strings');
  }
  return parsed;
}

function integerIn(get: Getter, key: string, min: number, max: number, fallback: number): number {
  const raw = get(key);
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(key, `must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

/** Validates the deletion window of a tenant key (KMS allows 7–30 days). */
export function keyDeletionWindow(days: number): number {
  if (!Number.isInteger(days) || days < KEY_DELETION_WINDOW.min || days > KEY_DELETION_WINDOW.max) {
    throw new ConfigError('keyDeletionWindowDays', `must be an integer from 7 to 30, got ${days}`);
  }
  return days;
}

/** Parses the `tenantry:*` config through a getter (`pulumi.Config#get`, or a plain map in the engine and tests). */
export function parsePlatformSettings(get: Getter): PlatformSettings {
  const settings: PlatformSettings = {
    adminRoleArn: matching(get, 'adminRoleArn', ROLE_ARN_RE, 'an IAM role ARN'),
    dataPlaneRoleArn: matching(get, 'dataPlaneRoleArn', ROLE_ARN_RE, 'an IAM role ARN'),
    keyDeletionWindowDays: integerIn(
      get,
      'keyDeletionWindowDays',
      KEY_DELETION_WINDOW.min,
      KEY_DELETION_WINDOW.max,
      30,
    ),
    secretRecoveryWindowDays: integerIn(get, 'secretRecoveryWindowDays', 7, 30, 30),
    pool: {
      schema: matching(get, 'poolSchema', SQL_NAME_RE, 'a SQL identifier', 'pool'),
      ownerRole: matching(get, 'poolOwnerRole', SQL_NAME_RE, 'a SQL identifier', 'tenantry_pool_owner'),
      appRole: matching(get, 'poolAppRole', SQL_NAME_RE, 'a SQL identifier', 'tenantry_pool_app'),
      tenantSetting: matching(
        get,
        'tenantSetting',
        SETTING_RE,
        'a setting name like app.tenant_id',
        'app.tenant_id',
      ),
      roleSecretName: matching(
        get,
        'poolRoleSecretName',
        SECRET_NAME_RE,
        'a Secrets Manager secret name',
        'tenantry/platform/pool-role',
      ),
    },
  };
  if (get('sharedClusterSecretName') !== undefined) {
    const ssl = get('postgresSsl') ?? 'true';
    if (ssl !== 'true' && ssl !== 'false') throw new ConfigError('postgresSsl', 'must be true or false');
    settings.sharedCluster = {
      adminSecretName: required(get, 'sharedClusterSecretName'),
      ssl: ssl === 'true',
    };
  }
  if (get('dbSubnetGroupName') !== undefined || get('vpcSecurityGroupIds') !== undefined) {
    const sgs = stringList(get, 'vpcSecurityGroupIds');
    for (const sg of sgs)
      if (!SG_RE.test(sg)) throw new ConfigError('vpcSecurityGroupIds', `not a security group id: ${sg}`);
    settings.silo = { dbSubnetGroupName: required(get, 'dbSubnetGroupName'), vpcSecurityGroupIds: sgs };
  }
  if (get('accountEmailDomain') !== undefined || get('accountParentOuId') !== undefined) {
    const vpcCidr = parseCidr('accountVpcCidr', get('accountVpcCidr') ?? '10.64.0.0/16');
    settings.account = {
      emailDomain: matching(get, 'accountEmailDomain', DOMAIN_RE, 'a lower-case DNS domain'),
      parentOuId: matching(
        get,
        'accountParentOuId',
        OU_RE,
        'an organizational unit id (ou-…) or root id (r-…)',
      ),
      roleName: matching(
        get,
        'accountRoleName',
        IAM_ROLE_NAME_RE,
        'an IAM role name',
        'OrganizationAccountAccessRole',
      ),
      vpcCidr,
      subnetCidrs: stringList(get, 'accountSubnetCidrs', ['10.64.0.0/20', '10.64.16.0/20']).map((c) =>
        parseCidr('accountSubnetCidrs', c),
      ),
      availabilityZones: stringList(get, 'accountAvailabilityZones').map((az) => {
        if (!AZ_RE.test(az))
          throw new ConfigError('accountAvailabilityZones', `not an availability zone: ${az}`);
        return az;
      }),
      dbIngressCidrs: stringList(get, 'accountDbIngressCidrs', [vpcCidr]).map((c) =>
        parseCidr('accountDbIngressCidrs', c),
      ),
      archiveKmsKeyArn: '',
    };
    if (settings.account.subnetCidrs.length !== settings.account.availabilityZones.length) {
      throw new ConfigError('accountSubnetCidrs', 'needs one CIDR per availability zone');
    }
    settings.account.archiveKmsKeyArn = matching(
      get,
      'accountArchiveKmsKeyArn',
      KMS_KEY_ARN_RE,
      'a KMS key ARN of the platform account',
    );
  }
  return settings;
}

/** The inverse of parsePlatformSettings: the `tenantry:*` keys, as strings, for setAllConfig. */
export function platformSettingsToConfig(s: PlatformSettings): Record<string, string> {
  const out: Record<string, string> = {
    adminRoleArn: s.adminRoleArn,
    dataPlaneRoleArn: s.dataPlaneRoleArn,
    keyDeletionWindowDays: String(s.keyDeletionWindowDays),
    secretRecoveryWindowDays: String(s.secretRecoveryWindowDays),
    poolSchema: s.pool.schema,
    poolOwnerRole: s.pool.ownerRole,
    poolAppRole: s.pool.appRole,
    tenantSetting: s.pool.tenantSetting,
    poolRoleSecretName: s.pool.roleSecretName,
  };
  if (s.sharedCluster) {
    out.sharedClusterSecretName = s.sharedCluster.adminSecretName;
    out.postgresSsl = String(s.sharedCluster.ssl);
  }
  if (s.silo) {
    out.dbSubnetGroupName = s.silo.dbSubnetGroupName;
    out.vpcSecurityGroupIds = JSON.stringify(s.silo.vpcSecurityGroupIds);
  }
  if (s.account) {
    out.accountEmailDomain = s.account.emailDomain;
    out.accountParentOuId = s.account.parentOuId;
    out.accountRoleName = s.account.roleName;
    out.accountVpcCidr = s.account.vpcCidr;
    out.accountSubnetCidrs = JSON.stringify(s.account.subnetCidrs);
    out.accountAvailabilityZones = JSON.stringify(s.account.availabilityZones);
    out.accountDbIngressCidrs = JSON.stringify(s.account.dbIngressCidrs);
    out.accountArchiveKmsKeyArn = s.account.archiveKmsKeyArn;
  }
  const prefixed: Record<string, string> = {};
  for (const [k, v] of Object.entries(out)) prefixed[`${CONFIG_NAMESPACE}:${k}`] = v;
  return prefixed;
}

export function need<T>(section: T | undefined, tier: string, keys: string): T {
  if (section === undefined) throw new ConfigError(keys, `is required for the ${tier} tier`);
  return section;
}
