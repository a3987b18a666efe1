/**
 * The rules the stacks follow, enforced again at preview time by a policy pack, so a
 * change to a program (or a hand-written stack) that breaks one fails before anything
 * is created. Kept apart from index.ts, which starts the policy server, so tests can
 * call each validateResource directly.
 */
import type { ReportViolation, ResourceValidationArgs, ResourceValidationPolicy } from '@pulumi/policy';
import { isOpenCidr } from '../common/config.js';
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
  kmsRotation,
  secretsUseKms,
  requiredTags,
  noOpenSecurityGroups,
];
