import { tenantStackName } from '../../control-plane/src/domain/naming.js';
import { PULUMI_PROJECT } from '../../control-plane/src/engine/pulumi/naming.js';

/** `urn:pulumi:<stack>::<project>::`: what the URN of every resource in a tenant's stack starts with. */
export const stackUrnPrefix = (slug: string): string =>
  `urn:pulumi:${tenantStackName(slug)}::${PULUMI_PROJECT}::`;

/** The URN of a tenant stack's root resource, which Pulumi names `<project>-<stack>`. */
export const rootStackUrn = (slug: string): string =>
  `${stackUrnPrefix(slug)}pulumi:pulumi:Stack::${PULUMI_PROJECT}-${tenantStackName(slug)}`;
