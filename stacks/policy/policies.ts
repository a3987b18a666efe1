/**
 * The rules the stacks follow, enforced again at preview time by a policy pack, so a
 * change to a program (or a hand-written stack) that breaks one fails before anything
 * is created. Kept apart from index.ts, which starts the policy server, so tests can
 * call each validateResource directly.
 */
import type { ReportViolation, ResourceValidationArgs, ResourceValidationPolicy } from '@pulumi/policy';
import { isOpenCidr } from '../common/config.js';
import { KEY_ROOT_ADMIN_ACTIONS } from '../common/key-policy.js';
import { MANAGED_BY, REQUIRED_TAGS, TAG_MANAGED_BY } from '../common/tags.js';

export const TYPES = {
  rdsInstance: 'aws:rds/instance:Instance',
  rdsCluster: 'aws:rds/cluster:Cluster',
  kmsKey: 'aws:kms/key:Key',
  secret: 'aws:secretsmanager/secret:Secret',
  securityGroup: 'aws:ec2/securityGroup:SecurityGroup',
  securityGroupRule: 'aws:ec2/securityGroupRule:SecurityGroupRule',
  ingressRule: 'aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule',
  egressRule: 'aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule',
  snapshotCopy: 'aws:rds/snapshotCopy:SnapshotCopy',
  awsProvider: 'pulumi:providers:aws',
} as const;

/** Resource types Tenantry creates that take tags. */
export const TAGGED_TYPES: readonly string[] = [
  TYPES.rdsInstance,
  TYPES.rdsCluster,
  TYPES.kmsKey,
  TYPES.secret,
  TYPES.securityGroup,
  'aws:rds/parameterGroup:ParameterGroup',
  'aws:rds/subnetGroup:SubnetGroup',
  'aws:organizations/account:Account',
  'aws:ec2/vpc:Vpc',
  'aws:ec2/subnet:Subnet',
  'aws:iam/role:Role',
  'aws:rds/snapshot:Snapshot',
  TYPES.snapshotCopy,
];

type Props = Record<string, unknown>;
const nonEmpty = (v: unknown): boolean => typeof v === 'string' && v.trim() !== '';
const strings = (v: unknown): string[] =>
  Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];

const rds = (args: ResourceValidationArgs): Props | undefined =>
  args.type === TYPES.rdsInstance || args.type === TYPES.rdsCluster ? args.props : undefined;

export const rdsEncrypted: ResourceValidationPolicy = {
  name: 'tenantry-rds-encrypted-with-kms',
  description: 'RDS storage is encrypted with a customer-managed KMS key.',
  enforcementLevel: 'mandatory',
  validateResource: (args, report) => {
    const p = rds(args);
    if (!p) return;
    if (p.storageEncrypted !== true) report('storageEncrypted must be true.');
    if (!nonEmpty(p.kmsKeyId)) report('kmsKeyId must name the tenant key (not the aws/rds default key).');
  },
};

export const rdsNotPublic: ResourceValidationPolicy = {
  name: 'tenantry-rds-not-public',
  description: 'RDS instances are never publicly accessible.',
  enforcementLevel: 'mandatory',
  validateResource: (args, report) => {
    const p = rds(args);
    if (p && p.publiclyAccessible === true) report('publiclyAccessible must be false.');
  },
};

export const rdsDeletionProtection: ResourceValidationPolicy = {
  name: 'tenantry-rds-deletion-protection',
  description: 'RDS has deletion protection on and keeps a final snapshot.',
  enforcementLevel: 'mandatory',
  validateResource: (args, report) => {
    const p = rds(args);
    if (!p) return;
    if (p.deletionProtection !== true) report('deletionProtection must be true.');
    if (p.skipFinalSnapshot === true) report('skipFinalSnapshot must be false.');
    else if (!nonEmpty(p.finalSnapshotIdentifier)) report('finalSnapshotIdentifier must be set.');
  },
};

/**
 * The production settings of a tenant's RDS instance (`templates/tiers.json` → `rds`), each checked
 * on its own so a violation names the one that is missing.
 */
export const rdsProduction: ResourceValidationPolicy = {
  name: 'tenantry-rds-production',
  description:
    'RDS instances run Multi-AZ, with storage autoscaling, a week of backups or more, Performance Insights encrypted with a customer-managed key, PostgreSQL log exports and enhanced monitoring.',
  enforcementLevel: 'mandatory',
  validateResource: (args, report) => {
    if (args.type !== TYPES.rdsInstance) return;
    const p = args.props;
    if (p.multiAz !== true) report('multiAz must be true.');
    const allocated = Number(p.allocatedStorage);
    const max = Number(p.maxAllocatedStorage);
    if (!(max > allocated))
      report('maxAllocatedStorage must be above allocatedStorage (storage autoscaling).');
    if (!(Number(p.backupRetentionPeriod) >= 7)) report('backupRetentionPeriod must be 7 days or more.');
    if (p.performanceInsightsEnabled !== true) report('performanceInsightsEnabled must be true.');
    else if (!nonEmpty(p.performanceInsightsKmsKeyId))
      report('performanceInsightsKmsKeyId must name the tenant key (not the aws/rds default key).');
    if (!strings(p.enabledCloudwatchLogsExports).includes('postgresql'))
      report('enabledCloudwatchLogsExports must include postgresql.');
    if (!(Number(p.monitoringInterval) > 0))
      report('monitoringInterval must be above 0 (enhanced monitoring).');
    else if (!nonEmpty(p.monitoringRoleArn))
      report('monitoringRoleArn must be set with enhanced monitoring.');
  },
};

interface PolicyStatement {
  Effect?: string;
  Principal?: { AWS?: string | string[] } | string;
  Action?: string | string[];
}

const listOf = (v: unknown): string[] => (Array.isArray(v) ? strings(v) : typeof v === 'string' ? [v] : []);

/**
 * A tenant key's policy keeps the account root as the fallback administrator (so a lost admin role
 * never orphans the key) and never lets the root, or IAM policies through it, use the key.
 */
export const kmsRootFallback: ResourceValidationPolicy = {
  name: 'tenantry-kms-root-fallback',
  description: 'Tenant keys name the account root as fallback administrator, without use of the key.',
  enforcementLevel: 'mandatory',
  validateResource: (args, report) => {
    if (args.type !== TYPES.kmsKey) return;
    let statements: PolicyStatement[];
    try {
      const parsed = JSON.parse(String(args.props.policy ?? '')) as { Statement?: PolicyStatement[] };
      statements = Array.isArray(parsed.Statement) ? parsed.Statement : [];
    } catch {
      report('the key policy must be a JSON policy document.');
      return;
    }
    const rootOf = (s: PolicyStatement) =>
      s.Effect === 'Allow' &&
      typeof s.Principal === 'object' &&
      listOf(s.Principal.AWS).some((a) => /^arn:aws(?:-[a-z]+)*:iam::\d{12}:root$/.test(a));
    const root = statements.filter(rootOf);
    if (root.length === 0) {
      report('the key policy must name the account root as fallback administrator.');
      return;
    }
    const actions = root.flatMap((s) => listOf(s.Action));
    const missing = KEY_ROOT_ADMIN_ACTIONS.filter((a) => !actions.includes(a));
    if (missing.length > 0)
      report(`the account root must be able to administer the key: missing ${missing.join(', ')}.`);
    const use = actions.filter((a) => /^kms:(\*|Encrypt|Decrypt|ReEncrypt|GenerateDataKey)/.test(a));
    if (use.length > 0) report(`the account root must not use the key: ${use.join(', ')}.`);
  },
};

/**
 * An explicit AWS provider that is limited to an account must look its account up: the Terraform
 * provider refuses to start when it checks `allowedAccountIds` with `skipRequestingAccountId` set.
 */
export const providerAccountCheck: ResourceValidationPolicy = {
  name: 'tenantry-provider-account-check',
  description: 'An AWS provider limited by allowedAccountIds does not skip requesting its account id.',
  enforcementLevel: 'mandatory',
  validateResource: (args, report) => {
    if (args.type !== TYPES.awsProvider) return;
    const p = args.props;
    let allowed: unknown = p.allowedAccountIds;
    if (typeof allowed === 'string') {
      try {
        allowed = JSON.parse(allowed);
      } catch {
        allowed = [allowed];
      }
    }
    if (listOf(allowed).length === 0) return;
    if (p.skipRequestingAccountId === true || p.skipRequestingAccountId === 'true') {
      report('skipRequestingAccountId must be false where allowedAccountIds is set.');
    }
  },
};

/** A snapshot copied out of a tenant's account is encrypted with a key of the platform's. */
export const snapshotCopyEncrypted: ResourceValidationPolicy = {
  name: 'tenantry-snapshot-copy-kms-key',
  description: 'Exported snapshots are re-encrypted with a customer-managed key of the platform account.',
  enforcementLevel: 'mandatory',
  validateResource: (args, report) => {
    if (args.type === TYPES.snapshotCopy && !nonEmpty(args.props.kmsKeyId)) {
      report('kmsKeyId must name the platform archive key.');
    }
  },
};

export const kmsRotation: ResourceValidationPolicy = {
  name: 'tenantry-kms-rotation',
  description: 'Symmetric KMS keys rotate automatically.',
  enforcementLevel: 'mandatory',
  validateResource: (args, report) => {
    if (args.type !== TYPES.kmsKey) return;
    const spec = args.props.customerMasterKeySpec;
    if (spec !== undefined && spec !== 'SYMMETRIC_DEFAULT') return; // rotation only exists for symmetric keys
    if (args.props.enableKeyRotation !== true) report('enableKeyRotation must be true.');
  },
};

export const secretsUseKms: ResourceValidationPolicy = {
  name: 'tenantry-secret-kms-key',
  description: 'Secrets are encrypted with a customer-managed KMS key.',
  enforcementLevel: 'mandatory',
  validateResource: (args, report) => {
    if (args.type === TYPES.secret && !nonEmpty(args.props.kmsKeyId)) {
      report('kmsKeyId must name the tenant key (not aws/secretsmanager).');
    }
  },
};

export const requiredTags: ResourceValidationPolicy = {
  name: 'tenantry-required-tags',
  description: `Taggable resources carry ${REQUIRED_TAGS.join(', ')}.`,
  enforcementLevel: 'mandatory',
  validateResource: (args, report) => {
    if (!TAGGED_TYPES.includes(args.type)) return;
    const tags = (args.props.tags ?? {}) as Record<string, unknown>;
    const missing = REQUIRED_TAGS.filter((t) => !nonEmpty(tags[t]));
    if (missing.length > 0) report(`missing tags: ${missing.join(', ')}.`);
    else if (tags[TAG_MANAGED_BY] !== MANAGED_BY) report(`${TAG_MANAGED_BY} must be "${MANAGED_BY}".`);
  },
};

function openCidrs(args: ResourceValidationArgs): string[] {
  const p = args.props;
  switch (args.type) {
    case TYPES.securityGroup: {
      const rules = [
        ...(Array.isArray(p.ingress) ? p.ingress : []),
        ...(Array.isArray(p.egress) ? p.egress : []),
      ];
      return rules
        .flatMap((r: Props) => [...strings(r.cidrBlocks), ...strings(r.ipv6CidrBlocks)])
        .filter(isOpenCidr);
    }
    case TYPES.securityGroupRule:
      return [...strings(p.cidrBlocks), ...strings(p.ipv6CidrBlocks)].filter(isOpenCidr);
    case TYPES.ingressRule:
    case TYPES.egressRule:
      return [p.cidrIpv4, p.cidrIpv6].filter((c): c is string => typeof c === 'string' && isOpenCidr(c));
    default:
      return [];
  }
}

export const noOpenSecurityGroups: ResourceValidationPolicy = {
  name: 'tenantry-no-open-cidr',
  description: 'No security group rule opens to 0.0.0.0/0 or ::/0.',
  enforcementLevel: 'mandatory',
  validateResource: (args, report: ReportViolation) => {
    const open = openCidrs(args);
    if (open.length > 0) report(`security group rule opens to ${[...new Set(open)].join(', ')}.`);
  },
};

export const policies: ResourceValidationPolicy[] = [
  rdsEncrypted,
  rdsNotPublic,
  rdsDeletionProtection,
  rdsProduction,
  kmsRotation,
  kmsRootFallback,
  providerAccountCheck,
  snapshotCopyEncrypted,
  secretsUseKms,
  requiredTags,
  noOpenSecurityGroups,
];
