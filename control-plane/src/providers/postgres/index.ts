/**
 * The Postgres-level providers, written once. The local engine calls them directly;
 * the aws target calls them inside a Pulumi dynamic provider. This module depends on
 * nothing but node:crypto and the Queryable shape, so it serializes cleanly.
 */
export { databaseProvider, lockDownDatabases, type DatabaseSpec, type DatabaseState } from './database.js';
export { grantsProvider, type GrantsSpec, type GrantsState } from './grants.js';
export { ensureMeta, META_SCHEMA } from './meta.js';
export {
  deletionOrder,
  observePoolTables,
  POLICY_NAME,
  policyExpression,
  poolMembershipProvider,
  poolProvider,
  type PoolMembershipSpec,
  type PoolSpec,
  type PoolState,
  type PoolTableState,
} from './pool.js';
export { roleProvider, type RoleSpec, type RoleState } from './role.js';
export { schemaProvider, type SchemaSpec, type SchemaState } from './schema.js';
export { ident, inTransaction, literal, type Queryable } from './sql.js';
export type { Provider, RoleLimits, TemplateMigration, TenantTemplate } from './types.js';
