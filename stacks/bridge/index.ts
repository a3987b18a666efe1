import type * as pulumi from '@pulumi/pulumi';
import type { TenantProgramInput } from '../common/input.js';
import { programContext } from '../common/program.js';
import { sharedClusterStack } from '../common/shared-cluster.js';
import { stagedPlacement } from '../common/staged.js';

/** The bridge tier: a schema and login role of its own on the shared cluster, plus its key and secret. */
export function bridgeProgram(input: TenantProgramInput): pulumi.automation.PulumiFn {
  return async () => sharedClusterStack(programContext(input, 'bridge'), 'bridge', stagedPlacement);
}
