/**
 * The AWS provider settings every Tenantry stack runs with, in one place. The engine
 * writes them as `aws:*` stack config (the default provider) and the account tier
 * hands the same values to the explicit assumed-role provider, so both behave alike.
 *
 * The three `skip*` flags save 10–15 s per operation (pulumi-aws#873): the control
 * plane already knows its account and never runs on a bare EC2 metadata endpoint.
 */
export interface AwsProviderOptions {
  region: string;
  /** Custom service endpoints, e.g. LocalStack's `http://localhost:4566`. */
  endpoints?: Partial<Record<AwsEndpointService, string>>;
  /** S3 path-style addressing (LocalStack needs it when an endpoint is set). */
  s3UsePathStyle?: boolean;
}

/** The services a Tenantry stack talks to. */
export const AWS_ENDPOINT_SERVICES = [
  'kms',
  'secretsmanager',
  'rds',
  'organizations',
  'sts',
  'iam',
  'ec2',
  's3',
] as const;
export type AwsEndpointService = (typeof AWS_ENDPOINT_SERVICES)[number];

export const AWS_SKIP_FLAGS = {
  skipCredentialsValidation: true,
  skipMetadataApiCheck: true,
  skipRequestingAccountId: true,
} as const;

/** `[{ kms: url }, { rds: url }]`: the shape both `aws:endpoints` and `aws.Provider` take. */
export function endpointList(endpoints: AwsProviderOptions['endpoints']): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const service of AWS_ENDPOINT_SERVICES) {
    const url = endpoints?.[service];
    if (url === undefined) continue;
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new Error(`invalid endpoint URL for ${service}: ${JSON.stringify(url)}`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new Error(`endpoint for ${service} must be http(s): ${JSON.stringify(url)}`);
    }
    out.push({ [service]: url });
  }
  return out;
}

/** The plain (non-Output) arguments of an `aws.Provider`, minus credentials and role assumption. */
export function awsProviderArgs(opts: AwsProviderOptions): {
  region: string;
  skipCredentialsValidation: true;
  skipMetadataApiCheck: true;
  skipRequestingAccountId: true;
  endpoints?: Record<string, string>[];
  s3UsePathStyle?: boolean;
} {
  const endpoints = endpointList(opts.endpoints);
  return {
    region: opts.region,
    ...AWS_SKIP_FLAGS,
    ...(endpoints.length > 0 ? { endpoints } : {}),
    ...(opts.s3UsePathStyle ? { s3UsePathStyle: true } : {}),
  };
}

/**
 * The same settings as `aws:*` stack config, every value a string (as `setAllConfig`
 * takes them). Structured values are JSON, which the provider parses.
 */
export function awsStackConfig(opts: AwsProviderOptions): Record<string, string> {
  const args = awsProviderArgs(opts);
  const out: Record<string, string> = {
    'aws:region': args.region,
    'aws:skipCredentialsValidation': 'true',
    'aws:skipMetadataApiCheck': 'true',
    'aws:skipRequestingAccountId': 'true',
  };
  if (args.endpoints) out['aws:endpoints'] = JSON.stringify(args.endpoints);
  if (args.s3UsePathStyle) out['aws:s3UsePathStyle'] = 'true';
  return out;
}
