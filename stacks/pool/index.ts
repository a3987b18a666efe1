import type * as pulumi from '@pulumi/pulumi';
import type { TenantProgramInput } from '../common/input.js';
import { programContext } from '../common/program.js';
import { sharedClusterStack } from '../common/shared-cluster.js';
import { stagedPlacement } from '../common/staged.js';

/** The pool tier: the tenant's rows in the shared, RLS-protected pool, plus its key and secret. */
export function poolProgram(input: TenantProgramInput): pulumi.automation.PulumiFn {
  return async () => sharedClusterStack(programContext(input, 'pool'), 'pool', stagedPlacement);
}
