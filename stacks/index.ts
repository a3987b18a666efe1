import type * as pulumi from '@pulumi/pulumi';
import type { Tier } from '../control-plane/src/domain/tiers.js';
import { accountProgram } from './account/index.js';
import { bridgeProgram } from './bridge/index.js';
import type { TenantProgramInput } from './common/input.js';
import { poolProgram } from './pool/index.js';
import { siloProgram } from './silo/index.js';

export { type PlatformSettings, parsePlatformSettings, platformSettingsToConfig } from './common/config.js';
export { accountRootEmail, newAccountEmailSuffix, type TenantProgramInput } from './common/input.js';

export const PROGRAMS: Record<Tier, (input: TenantProgramInput) => pulumi.automation.PulumiFn> = {
  pool: poolProgram,
  bridge: bridgeProgram,
  silo: siloProgram,
  account: accountProgram,
};

/** The program factory of a tier; the engine adapter is its only caller. */
export function programFor(input: TenantProgramInput): pulumi.automation.PulumiFn {
  return PROGRAMS[input.tier](input);
}
