import { isAbsolute, join, resolve, sep } from 'node:path';
import { tenantStackName } from '../../domain/naming.js';

/** The Pulumi project every tenant stack belongs to. */
export const PULUMI_PROJECT = 'tenantry';
/** DIY backends (s3://, file://) use the fixed organization name `organization`. */
export const DIY_ORGANIZATION = 'organization';

/** `organization/tenantry/tenant-acme`: unambiguous on every backend. */
export function fullyQualifiedStackName(slug: string, organization = DIY_ORGANIZATION): string {
  if (!/^[A-Za-z0-9_.-]{1,100}$/.test(organization))
    throw new Error(`invalid Pulumi organization: ${organization}`);
  return `${organization}/${PULUMI_PROJECT}/${tenantStackName(slug)}`;
}

/**
 * One workspace directory per stack: `createStack`/`selectStack` rewrite workspace.json
 * and are not safe in parallel (pulumi#8186). The path derives from the stack name only,
 * so it can never escape the root.
 */
export function stackWorkspaceDir(root: string, slug: string): string {
  if (!isAbsolute(root)) throw new Error('the Pulumi workspace root must be an absolute path');
  const base = resolve(root);
  const dir = join(base, 'stacks', tenantStackName(slug));
  if (!dir.startsWith(base + sep)) throw new Error('workspace directory escapes the root');
  return dir;
}
