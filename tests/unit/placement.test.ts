import { describe, expect, it } from 'vitest';
import { dataPlaneNames } from '../../control-plane/src/dataplane/dataplane.js';
import { loginRoleNames, tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { managedPlacementOf, placementOf } from '../../control-plane/src/promotion/placement.js';

const tenant = { id: '6f1c1d1e-0000-4000-8000-000000000001', slug: 'acme-corp' };
const name = tenantObjectName(tenant.slug);

describe('placementOf (the local target: the data plane owns every object)', () => {
  const dp = { names: dataPlaneNames('tenantry_data') };
  const { database, ownerRole: owner, poolRole, poolSchema, siloSchema } = dp.names;

  it('puts each tier where the data plane layout says', () => {
    expect(placementOf(dp, tenant.slug, 'pool')).toStrictEqual({
      tier: 'pool',
      database,
      schema: poolSchema,
      shared: true,
      // The group and its two logins: a freeze waits for their older transactions.
      writers: [poolRole, ...loginRoleNames(poolRole)],
      owner,
    });
    expect(placementOf(dp, tenant.slug, 'bridge')).toStrictEqual({
      tier: 'bridge',
      database,
      schema: name,
      shared: false,
      writers: [name, ...loginRoleNames(name)],
      owner,
    });
    expect(placementOf(dp, tenant.slug, 'silo')).toStrictEqual({
      tier: 'silo',
      database: name,
      schema: siloSchema,
      shared: false,
      writers: [name, ...loginRoleNames(name)],
      owner,
    });
  });

  it('has no Postgres placement for the account tier', () => {
    expect(() => placementOf(dp, tenant.slug, 'account')).toThrow(
      expect.objectContaining({ code: 'TIER_NOT_AVAILABLE_ON_TARGET' }),
    );
  });
});

describe('managedPlacementOf (the aws shared cluster: a stack owns roles, grants and routing)', () => {
  const names = {
    database: 'tenantry_shared',
    poolSchema: 'pool_s',
    poolRole: 'tenantry_pool_app',
    tenantSetting: 'app.tenant_id',
  };

  it('the pool: shared, managed, with the tenant as its row-level security context', () => {
    expect(managedPlacementOf(names, tenant, 'pool')).toStrictEqual({
      tier: 'pool',
      database: 'tenantry_shared',
      schema: 'pool_s',
      shared: true,
      writers: ['tenantry_pool_app', ...loginRoleNames('tenantry_pool_app')],
      managed: true,
      context: { setting: 'app.tenant_id', tenantId: tenant.id },
    });
  });

  it("a bridge: the tenant's schema in the shared database, managed, no owner of its own", () => {
    expect(managedPlacementOf(names, tenant, 'bridge')).toStrictEqual({
      tier: 'bridge',
      database: 'tenantry_shared',
      schema: name,
      shared: false,
      writers: [name, ...loginRoleNames(name)],
      managed: true,
    });
  });
});
