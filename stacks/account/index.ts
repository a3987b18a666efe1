import type * as pulumi from '@pulumi/pulumi';
import { TenantAccount } from '../common/account.js';
import type { TenantProgramInput } from '../common/input.js';
import { programContext } from '../common/program.js';

/** The account tier: a member account of its own, with the silo resources inside it. */
export function accountProgram(input: TenantProgramInput): pulumi.automation.PulumiFn {
  return async () => {
    const ctx = programContext(input, 'account');
    const account = new TenantAccount(`tenant-${input.slug}`, ctx);
    return account.outputs;
  };
}
