import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { isOpenCidr } from './config.js';
import type { TenantTags } from './tags.js';

export interface TenantNetworkArgs {
  vpcCidr: string;
  subnetCidrs: string[];
  availabilityZones: string[];
  /** Sources allowed to reach Postgres. 0.0.0.0/0 is refused. */
  dbIngressCidrs: string[];
  tags: TenantTags;
}

/**
 * `tenantry:tenant:Network`: a private network for the database in a freshly vended
 * account: a VPC without an internet gateway, one subnet per zone, a DB subnet group and
 * a security group that admits 5432 from the configured CIDRs only.
 */
export class TenantNetwork extends pulumi.ComponentResource {
  readonly dbSubnetGroupName: pulumi.Output<string>;
  readonly securityGroupId: pulumi.Output<string>;

  constructor(name: string, args: TenantNetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super('tenantry:tenant:Network', name, {}, opts);
    for (const c of args.dbIngressCidrs) if (isOpenCidr(c)) throw new Error(`refusing open ingress ${c}`);
    const vpc = new aws.ec2.Vpc(
      `${name}-vpc`,
      { cidrBlock: args.vpcCidr, enableDnsHostnames: true, enableDnsSupport: true, tags: args.tags },
      { parent: this },
    );
    const subnets = args.subnetCidrs.map(
      (cidrBlock, i) =>
        new aws.ec2.Subnet(
          `${name}-subnet-${i}`,
          {
            vpcId: vpc.id,
            cidrBlock,
            availabilityZone: args.availabilityZones[i],
            mapPublicIpOnLaunch: false,
            tags: args.tags,
          },
          { parent: this },
        ),
    );
    const group = new aws.rds.SubnetGroup(
      `${name}-subnets`,
      { subnetIds: subnets.map((s) => s.id), tags: args.tags },
      { parent: this },
    );
    const sg = new aws.ec2.SecurityGroup(
      `${name}-db-sg`,
      {
        vpcId: vpc.id,
        description: 'Tenantry tenant database: Postgres from the platform only',
        ingress: [{ protocol: 'tcp', fromPort: 5432, toPort: 5432, cidrBlocks: args.dbIngressCidrs }],
        egress: [{ protocol: 'tcp', fromPort: 443, toPort: 443, cidrBlocks: [args.vpcCidr] }],
        tags: args.tags,
      },
      { parent: this },
    );
    this.dbSubnetGroupName = group.name;
    this.securityGroupId = sg.id;
    this.registerOutputs({
      dbSubnetGroupName: this.dbSubnetGroupName,
      securityGroupId: this.securityGroupId,
    });
  }
}
