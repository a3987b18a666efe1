import type * as pulumi from '@pulumi/pulumi';
import {
  CONFIG_NAMESPACE,
  type PlatformSettings,
  parsePlatformSettings,
  platformSettingsToConfig,
} from '../../../../stacks/common/config.js';
import type { TenantProgramInput } from '../../../../stacks/common/input.js';
import { type AwsProviderOptions, awsStackConfig } from '../../aws/provider-options.js';

type ConfigMap = pulumi.automation.ConfigMap;

/** Keys whose values are secret in the stack config. */
const SECRET_KEYS = new Set<string>([]);

/**
 * The whole stack config in one object, for a single `stack.setAllConfig(config)`:
 * setting values one by one costs a CLI round trip each (pulumi#5453). Platform
 * settings are validated with the same parser the program uses, so a bad value fails
 * here, before Pulumi is started.
 */
export function buildStackConfig(p: {
  input: TenantProgramInput;
  platform: PlatformSettings;
  aws: AwsProviderOptions;
}): ConfigMap {
  const platform = platformSettingsToConfig(p.platform);
  // Round trip: whatever the program will read back must parse.
  parsePlatformSettings((k) => platform[`${CONFIG_NAMESPACE}:${k}`]);
  const tenant: Record<string, string> = {
    [`${CONFIG_NAMESPACE}:tenantId`]: p.input.tenantId,
    [`${CONFIG_NAMESPACE}:slug`]: p.input.slug,
    [`${CONFIG_NAMESPACE}:tier`]: p.input.tier,
  };
  if (p.input.accountEmailSuffix !== undefined) {
    tenant[`${CONFIG_NAMESPACE}:accountEmailSuffix`] = p.input.accountEmailSuffix;
  }
  // The tenant's recorded state its login role carries; absent when it has none, so a reactivation's
  // run (or overrides removed) takes the key out of the stack's config.
  if (p.input.suspended === true) tenant[`${CONFIG_NAMESPACE}:suspended`] = 'true';
  const overrides = p.input.limitOverrides ?? {};
  if (Object.keys(overrides).length > 0) {
    const sorted = Object.fromEntries(Object.entries(overrides).sort(([a], [b]) => a.localeCompare(b)));
    tenant[`${CONFIG_NAMESPACE}:limitOverrides`] = JSON.stringify(sorted);
  }
  const flat = { ...awsStackConfig(p.aws), ...platform, ...tenant };
  const out: ConfigMap = {};
  for (const key of Object.keys(flat).sort()) {
    const value = flat[key];
    if (value === undefined) continue;
    out[key] = { value, secret: SECRET_KEYS.has(key) };
  }
  return out;
}

/**
 * What to write so the stack's config equals `desired`: the keys whose value or secrecy
 * differs, and the keys the stack has that `desired` lacks. Nothing to do is `{ set: {}, remove: [] }`,
 * so an unchanged config is never rewritten (a drift check writes nothing).
 */
export function configChanges(current: ConfigMap, desired: ConfigMap): { set: ConfigMap; remove: string[] } {
  const set: ConfigMap = {};
  for (const [key, want] of Object.entries(desired)) {
    const have = current[key];
    if (!have || have.value !== want.value || Boolean(have.secret) !== Boolean(want.secret)) set[key] = want;
  }
  const remove = Object.keys(current)
    .filter((k) => !(k in desired))
    .sort();
  return { set, remove };
}
