/**
 * The Postgres-level providers, written once. The local engine calls them directly;
 * the aws target calls them inside a Pulumi dynamic provider. This module depends on
 * nothing but node:crypto and the Queryable shape, so it serializes cleanly.
 */
export { type DatabaseSpec, type DatabaseState, databaseProvider, lockDownDatabases } from './database.js';
export {
  ensureFreezeSupport,
  ensureFreezeTriggers,
  FREEZE_TRIGGERS,
  type FreezeProbe,
  type FreezeReason,
  type FreezeSpec,
  freezeTenant,
  guardNewPrivateSchema,
  guardNewTablesSql,
  guardPrivateSchemaSql,
  isFreezeSupportMissing,
  isTenantFrozen,
  proveFreeze,
  renewFreeze,
  requireFreezeSupportSql,
  unfreezeSchema,
  unfreezeTenant,
  waitForOlderTransactions,
  withFreezeLifted,
} from './freeze.js';
export { applyGrants, type GrantsSpec, type GrantsState, grantsProvider, grantsSql } from './grants.js';
export {
  type HardeningSpec,
  type HardeningState,
  type HardeningTarget,
  hardenDatabase,
  observeHardening,
} from './hardening.js';
export { applyLogins, dropLogins, endLoginSessions, type LoginsSpec, retireLogins } from './logins.js';
export { ensureMeta, META_SCHEMA } from './meta.js';
export {
  deletionOrder,
  observePoolTables,
  POLICY_NAME,
  type PoolMembershipSpec,
  type PoolSpec,
  type PoolState,
  type PoolTableState,
  policyExpression,
  poolMembershipProvider,
  poolProvider,
} from './pool.js';
export { applyRole, endRoleSessions, type RoleSpec, type RoleState, roleProvider } from './role.js';
export {
  applySchema,
  migrateSchema,
  migrationSql,
  type SchemaSpec,
  type SchemaState,
  schemaProvider,
  type TemplateRelations,
  templateRelations,
  templateUpTo,
} from './schema.js';
export { ident, inTransaction, literal, type Queryable } from './sql.js';
export type { Provider, RoleLimits, TemplateMigration, TenantTemplate } from './types.js';
