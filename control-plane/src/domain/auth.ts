export const ROLES = ['sales-ops', 'sre', 'dataplane', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export const PERMISSIONS = [
  'tenants:create',
  'tenants:read',
  'operations:read',
  'tenants:offboard',
  'tenants:promote',
  'tenants:reconcile',
  /** Rotate a tenant's credentials or data key (POST /v1/tenants/{slug}/credential-rotations, key-rotations). */
  'tenants:rotate',
  'connection:read',
  'audit:read',
  'tokens:manage',
  /** Start, pause, resume and cancel fleet schema rollouts, and retry a tenant of one. */
  'rollouts:manage',
  /** Read who the token is (its name, role and permissions): every role may. */
  'self:read',
  /** Change a tenant's name, plan, contact and labels (PATCH /v1/tenants/{slug}). */
  'tenants:update',
  /** Set a tenant's limit overrides within its tier's bounds (PATCH's `limits`). */
  'tenants:limits',
  /** Suspend and reactivate a tenant (sales-ops: for non-payment only; docs/lifecycle.md). */
  'tenants:suspend',
  /** Export a tenant's data and download an archive (audited). */
  'tenants:export',
  /** Read the lifecycle events (GET /v1/events). */
  'events:read',
  /** Register, list and delete webhooks, and read their delivery log. */
  'webhooks:manage',
] as const;
export type Permission = (typeof PERMISSIONS)[number];

const SALES_OPS: Permission[] = [
  'self:read',
  'tenants:create',
  'tenants:read',
  'operations:read',
  'tenants:update',
  'tenants:suspend',
  'events:read',
];

/** Each token has exactly one role; each role is a fixed set of permissions. */
export const ROLE_PERMISSIONS: Record<Role, ReadonlySet<Permission>> = {
  'sales-ops': new Set(SALES_OPS),
  sre: new Set<Permission>([
    ...SALES_OPS,
    'tenants:offboard',
    'tenants:promote',
    'tenants:reconcile',
    'tenants:rotate',
    'audit:read',
    'rollouts:manage',
    'tenants:limits',
    'tenants:export',
  ]),
  dataplane: new Set<Permission>(['self:read', 'connection:read']),
  admin: new Set<Permission>(PERMISSIONS),
};

export const can = (role: Role, p: Permission): boolean => ROLE_PERMISSIONS[role].has(p);

/**
 * What a bearer token may look like (RFC 6750 b64token characters, bounded length). The auth
 * header parser and the TENANTRY_ADMIN_TOKEN config check share it, so a configured token is
 * always one the API accepts.
 */
export const TOKEN_CHARS = '[A-Za-z0-9_\\-.~+/=]';
export const TOKEN_MAX_LENGTH = 200;
/** Tokens presented in a header: at least 16 characters (generated ones are much longer). */
export const TOKEN_MIN_LENGTH = 16;
/** A configured admin token must be longer than the bare minimum a header may carry. */
export const ADMIN_TOKEN_MIN_LENGTH = 24;
