import { randomBytes } from 'node:crypto';
import { assertSlug } from '../../control-plane/src/domain/naming.js';
import type { LimitOverrides } from '../../control-plane/src/domain/tenant.js';
import { ALLOWED_PROMOTIONS, type Tier, type TierCatalog } from '../../control-plane/src/domain/tiers.js';
import type { TenantTemplate } from '../../control-plane/src/providers/postgres/types.js';

/** What the engine hands a tier's program factory; platform settings come from stack config. */
export interface TenantProgramInput {
  tenantId: string;
  slug: string;
  tier: Tier;
  /**
   * Account tier only: the random part of the root email. The caller generates it once
   * with newAccountEmailSuffix() and persists it with the tenant, so every re-run of the
   * stack computes the same email (a closed account's email can never be used again).
   */
  accountEmailSuffix?: string;
  /** Overrides `tenantry:dataPlaneRoleArn` for this tenant. */
  dataPlaneRoleArn?: string;
  /**
   * The control plane's templates directory (tiers.json, tenant-schema/): the same files the
   * control plane loaded, so both agree on the tier settings and the tenant schema. Defaults to
   * the repository's templates/.
   */
  templatesDir?: string;
  /** Tests only: overrides what templatesDir holds. */
  template?: TenantTemplate;
  tiers?: TierCatalog;
  /**
   * Offboarding: deletion protection off and nothing retained on delete, so the `destroy` that
   * follows removes the tenant. Only the tenant key of a tier with a final snapshot is kept (the
   * snapshot is encrypted with it). Never set for provisioning, promotion or drift repair.
   */
  offboarding?: boolean;
  /**
   * Promotion on the aws target, first step ("stage"): besides the tenant's placement in `tier`
   * (which stays, and which the tenant's secret keeps pointing at), also build the placement of this
   * target tier, with the resource names, types and parents the target tier's own program gives it,
   * so that the later `up` of the target program adopts it in place. Only from pool or bridge, only
   * to a stronger tier (pool→bridge, pool→silo, bridge→silo); never with `offboarding`. Exported as
   * the stack output `staged`.
   */
  stagedTier?: Tier;
  /**
   * Aborting a staged promotion: build the staged placement as an offboarding run would (deletion
   * protection off, nothing of it retained on delete), so that the next `up` without `stagedTier`
   * deletes it. Only with `stagedTier`; the source placement is unaffected (still retained).
   */
  discardStaged?: boolean;
  /**
   * The tenant's recorded state that decides its own login role (bridge, silo; the pool's login is
   * shared and never carries it): suspended, the role is NOLOGIN; its limit overrides (within the
   * tier's bounds) replace the tier's limits on it. The engine derives both from the tenant's record
   * for every run (engine/pulumi/job.ts), so any `up` keeps them; a reactivation's run clears
   * `suspended`. Mirrored in the stack config (`tenantry:suspended`, `tenantry:limitOverrides`).
   */
  suspended?: boolean;
  limitOverrides?: LimitOverrides;
}

/** The tiers whose tenant has a login role of its own, which suspension and limit overrides act on. */
export const OWN_LOGIN_TIERS: readonly Tier[] = ['bridge', 'silo', 'account'];

const SUFFIX_RE = /^[a-z0-9]{8,16}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** 12 lower-case hex characters (48 bits) from the CSPRNG. */
export function newAccountEmailSuffix(): string {
  return randomBytes(6).toString('hex');
}

/** `root+<slug>-<suffix>@<domain>`: plus-addressed so one mailbox receives every tenant's root mail. */
export function accountRootEmail(slug: string, suffix: string, domain: string): string {
  if (!SUFFIX_RE.test(suffix)) throw new Error('account email suffix must be 8-16 lower-case alphanumerics');
  return `root+${assertSlug(slug)}-${suffix}@${domain}`;
}

export function assertProgramInput(input: TenantProgramInput, tier: Tier): TenantProgramInput {
  assertSlug(input.slug);
  if (!UUID_RE.test(input.tenantId)) throw new Error('tenantId must be a lower-case UUID');
  if (input.tier !== tier) throw new Error(`the ${tier} program was given a ${input.tier} tenant`);
  if (tier === 'account' && input.accountEmailSuffix === undefined) {
    throw new Error('the account tier needs accountEmailSuffix (generate it once and persist it)');
  }
  assertStaging(input);
  if (input.suspended !== undefined && typeof input.suspended !== 'boolean') {
    throw new Error('suspended must be a boolean');
  }
  const ownLogin = OWN_LOGIN_TIERS.includes(tier);
  if (input.suspended === true && !ownLogin) {
    throw new Error(`a ${tier} tenant has no login role of its own to suspend (the pool is frozen instead)`);
  }
  if (input.limitOverrides && Object.keys(input.limitOverrides).length > 0 && !ownLogin) {
    throw new Error(`a ${tier} tenant has no login role of its own to set limit overrides on`);
  }
  return input;
}

/**
 * The staging flags of a program input: `stagedTier` only on a pool or bridge stack, to a tier that
 * tier may be promoted to; `discardStaged` only with `stagedTier`; neither with `offboarding`.
 */
export function assertStaging(input: TenantProgramInput): void {
  const { tier, stagedTier, discardStaged } = input;
  if (discardStaged !== undefined && typeof discardStaged !== 'boolean') {
    throw new Error('discardStaged must be a boolean');
  }
  if (stagedTier === undefined) {
    if (discardStaged !== undefined) throw new Error('discardStaged needs stagedTier');
    return;
  }
  if (input.offboarding === true) {
    throw new Error('an offboarding run never stages a placement (discard the staged one first)');
  }
  if (tier !== 'pool' && tier !== 'bridge') {
    throw new Error(`only a pool or bridge tenant stages a placement, not a ${tier} tenant`);
  }
  if (!ALLOWED_PROMOTIONS.some(([from, to]) => from === tier && to === stagedTier)) {
    throw new Error(`a ${tier} tenant cannot stage a ${String(stagedTier)} placement`);
  }
}
