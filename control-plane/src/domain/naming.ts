import { TenantryError } from './errors.js';

/** Slugs come from user input: this is the only gate they pass through. */
export const SLUG_PATTERN = '^[a-z][a-z0-9-]{2,39}$';
const SLUG_RE = new RegExp(SLUG_PATTERN);

export function assertSlug(slug: string): string {
  if (!SLUG_RE.test(slug)) {
    throw new TenantryError('VALIDATION_FAILED', `slug must match ${SLUG_PATTERN}`, {
      context: { field: 'slug' },
    });
  }
  return slug;
}

/**
 * Every Postgres object of a tenant (bridge schema, login role, silo database) is named
 * `tenant_<slug>` with `-` folded to `_`. Slugs never contain `_`, so the mapping is
 * injective: two slugs can never share an object name.
 */
export function tenantObjectName(slug: string): string {
  return `tenant_${assertSlug(slug).replaceAll('-', '_')}`;
}

/** The Pulumi stack of a tenant. */
export function tenantStackName(slug: string): string {
  return `tenant-${assertSlug(slug)}`;
}

/** The secret reference of a tenant's connection descriptor (local store or Secrets Manager name). */
export function tenantSecretName(slug: string): string {
  return `tenantry/${assertSlug(slug)}/connection`;
}

/** The KMS alias of a tenant's key. */
export function tenantKeyAlias(slug: string): string {
  return `alias/tenantry/${assertSlug(slug)}`;
}

/** The local target's platform secret holding the pool's shared login password. */
export const POOL_SECRET = 'tenantry/platform/pool-role';

/** The local target's platform key (the pool's shared login secret is encrypted under it). */
export const PLATFORM_KEY_ALIAS = 'alias/tenantry/platform';

/**
 * Where a password rotation keeps its new password between setting it on the idle login and
 * publishing it (so a step run again after a crash sets the same one): beside the secret it replaces.
 */
export const stagedPasswordSecretName = (secretName: string): string => `${secretName}-next`;

/**
 * The two login slots of a login group: the "alternating users" a credential rotation moves between.
 * A group is the NOLOGIN role that holds the grants (`tenant_<slug>`, or the pool's shared role); its
 * two logins are members of it and hold nothing of their own.
 */
export const LOGIN_SLOTS = ['a', 'b'] as const;
export type LoginSlot = (typeof LOGIN_SLOTS)[number];

const LOGIN_PREFIX = 'login_';
const LOGIN_RE = /^login_([ab])_([a-z_][a-z0-9_]*)$/;

/**
 * A login of `group`: `login_<slot>_<group>` (`login_a_tenant_acme`). A prefix, not a suffix:
 * `tenant_acme_a` is the group of slug `acme-a`. Every tenant object name starts `tenant_`, so no
 * login name is ever one, and the prefix keeps each group's two logins apart from every other group's.
 */
export function loginRoleName(group: string, slot: LoginSlot): string {
  return `${LOGIN_PREFIX}${slot}_${group}`;
}

/** Both logins of a group, slot a first. */
export const loginRoleNames = (group: string): [string, string] => [
  loginRoleName(group, 'a'),
  loginRoleName(group, 'b'),
];

/** The group and slot a login name derives from; null for any other name. */
export function parseLoginRoleName(name: string): { group: string; slot: LoginSlot } | null {
  const m = LOGIN_RE.exec(name);
  return m ? { group: m[2] as string, slot: m[1] as LoginSlot } : null;
}

/**
 * The login a rotation of `group` moves to from `current` (the login its descriptor names now): the
 * other slot, or slot a when the group itself is still the login (the single-login layout of a tenant
 * onboarded before the two logins, which its first rotation migrates).
 */
export function nextLogin(group: string, current: string): string {
  const parsed = parseLoginRoleName(current);
  if (parsed && parsed.group !== group) throw new Error(`login ${current} is not one of ${group}'s`);
  return loginRoleName(group, parsed?.slot === 'a' ? 'b' : 'a');
}
