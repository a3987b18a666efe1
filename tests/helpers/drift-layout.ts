import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import type { LocalLayout } from '../../control-plane/src/drift/diff.js';
import { POLICY_NAME } from '../../control-plane/src/providers/postgres/pool.js';

/**
 * The layout the local drift detector judges a data plane by, as LocalDriftDetector.getLayout makes
 * it (src has no function of its own for it): the names from dataPlaneNames, the policy Tenantry
 * writes, and what a test gives for the rest.
 */
export function localLayout(
  database: string,
  rest: Pick<LocalLayout, 'limits' | 'templateTables' | 'policyExpression'>,
): LocalLayout {
  const { database: dataDatabase, ownerRole, poolRole, poolSchema, siloSchema } = dataPlaneNames(database);
  return { dataDatabase, ownerRole, poolRole, poolSchema, siloSchema, policyName: POLICY_NAME, ...rest };
}
