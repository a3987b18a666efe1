export const ROLES = ['sales-ops', 'sre', 'dataplane', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export const PERMISSIONS = [
  'tenants:create',
  'tenants:read',
  'operations:read',
  'tenants:offboard',
  'tenants:promote',
  'tenants:reconcile',
  'connection:read',
  'audit:read',
  'tokens:manage',
] as const;
export type Permission = (typeof PERMISSIONS)[number];

const SALES_OPS: Permission[] = ['tenants:create', 'tenants:read', 'operations:read'];

/** Each token has exactly one role; each role is a fixed set of permissions. */
export const ROLE_PERMISSIONS: Record<Role, ReadonlySet<Permission>> = {
  'sales-ops': new Set(SALES_OPS),
  sre: new Set<Permission>([
    ...SALES_OPS,
    'tenants:offboard',
    'tenants:promote',
    'tenants:reconcile',
    'audit:read',
  ]),
  dataplane: new Set<Permission>(['connection:read']),
  admin: new Set<Permission>(PERMISSIONS),
};

export const can = (role: Role, p: Permission): boolean => ROLE_PERMISSIONS[role].has(p);
