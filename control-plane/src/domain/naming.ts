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
