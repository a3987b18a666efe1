import * as pulumi from '@pulumi/pulumi';
import type { ConnectionDescriptor } from '../../control-plane/src/domain/ports.js';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import { TenantKey } from './key.js';
import { accountRootArn } from './key-policy.js';
import type { ProgramContext } from './program.js';
import { TenantSecret } from './secret.js';

/** The component type of each tier's placement (what holds the tenant's data). */
export const TIER_COMPONENT_TYPES: Record<Tier, string> = {
  pool: 'tenantry:tenant:Pool',
  bridge: 'tenantry:tenant:Bridge',
  silo: 'tenantry:tenant:Silo',
  account: 'tenantry:tenant:Account',
};

/**
 * The key and the connection secret are children of the stack itself, named the same in every
 * tier: their URNs do not depend on the tier, so a tier change (promotion, rollback) updates
 * them in place. Were they children of the tier's component, the URNs would change with it and
 * Pulumi would create a second key and secret whose fixed names (`alias/tenantry/<slug>`,
 * `tenantry/<slug>/connection`) collide with the first, then schedule the first key's deletion.
 */
export const tenantKeyResourceName = (slug: string): string => `tenant-${slug}-key`;
export const tenantSecretResourceName = (slug: string): string => `tenant-${slug}-connection`;

/**
 * Where earlier versions of the programs put the key and the secret: under each tier's component
 * (`tenant-<slug>`), and in the account tier under its silo (`tenant-<slug>-silo`, with the silo's
 * name as prefix). Aliases to all of them let a stack written by any of those versions adopt the
 * resources in place; their children (the KMS key and alias, the secret and its version) inherit
 * the aliases because their names extend their parent's.
 */
export function legacyAliases(slug: string, part: 'key' | 'connection'): pulumi.Alias[] {
  const base = `tenant-${slug}`;
  const urn = (type: string, name: string) =>
    `urn:pulumi:${pulumi.getStack()}::${pulumi.getProject()}::${type}::${name}`;
  return [
    ...(['pool', 'bridge', 'silo'] as const).map((tier) => ({
      parent: urn(TIER_COMPONENT_TYPES[tier], base),
    })),
    {
      name: `${base}-silo-${part}`,
      parent: urn(`${TIER_COMPONENT_TYPES.account}$${TIER_COMPONENT_TYPES.silo}`, `${base}-silo`),
    },
  ];
}

/** Options of the key and secret that only the account tier sets (they live in the tenant's account). */
export interface InAccount {
  provider: pulumi.ProviderResource;
  /** Administers the key besides the platform admin role (KMS lockout safety: see docs/aws.md). */
  roleArn: pulumi.Input<string>;
  /** The tenant account's root: the key's fallback administrator there. */
  accountRootArn: pulumi.Input<string>;
}

/** The tenant's own KMS key, the same resource whatever the tier. */
export function newTenantKey(
  ctx: ProgramContext,
  opts: { retainKeyOnDelete: boolean; inAccount?: InAccount },
): TenantKey {
  const { input, settings } = ctx;
  return new TenantKey(
    tenantKeyResourceName(input.slug),
    {
      slug: input.slug,
      region: ctx.region,
      adminPrincipalArns: [settings.adminRoleArn, ...(opts.inAccount ? [opts.inAccount.roleArn] : [])],
      dataPlaneRoleArn: ctx.dataPlaneRoleArn,
      // The account the key is in: the tenant's own (account tier), or the platform's.
      accountRootArn: opts.inAccount ? opts.inAccount.accountRootArn : accountRootArn(settings.adminRoleArn),
      deletionWindowInDays: settings.keyDeletionWindowDays,
      tags: ctx.tags,
      retainKeyOnDelete: opts.retainKeyOnDelete,
    },
    {
      aliases: legacyAliases(input.slug, 'key'),
      ...(opts.inAccount ? { providers: [opts.inAccount.provider] } : {}),
    },
  );
}

/** The connection secret, encrypted with the tenant key, the same resource whatever the tier. */
export function newTenantSecret(
  ctx: ProgramContext,
  key: TenantKey,
  value: pulumi.Input<ConnectionDescriptor>,
  inAccount?: InAccount,
): TenantSecret {
  const { input, settings } = ctx;
  return new TenantSecret(
    tenantSecretResourceName(input.slug),
    {
      slug: input.slug,
      kmsKeyArn: key.keyArn,
      recoveryWindowInDays: settings.secretRecoveryWindowDays,
      forceDeleteOnDestroy: ctx.offboarding,
      tags: ctx.tags,
      value,
      // In its own account, the platform's data plane reads it across accounts.
      ...(inAccount ? { crossAccountReaders: [ctx.dataPlaneRoleArn] } : {}),
    },
    {
      aliases: legacyAliases(input.slug, 'connection'),
      ...(inAccount ? { providers: [inAccount.provider] } : {}),
    },
  );
}
