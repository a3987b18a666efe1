import type { Queryable } from './sql.js';

/** One SQL migration of the tenant schema template. */
export interface TemplateMigration {
  version: number;
  name: string;
  sql: string;
}

export interface TenantTemplate {
  version: number;
  migrations: TemplateMigration[];
}

// The domain owns the tier limits; a type-only export is erased, so the module still ships alone.
export type { RoleLimits } from '../../domain/tiers.js';

/**
 * A Postgres-level resource with create, observe, update and delete.
 * Every method is idempotent: create on an existing resource converges it,
 * delete on a missing one succeeds. `observe` returns null when absent.
 * The same providers run directly on the local target and inside a Pulumi
 * dynamic provider on the aws target.
 */
export interface Provider<Spec, State> {
  readonly kind: string;
  create(db: Queryable, spec: Spec): Promise<State>;
  observe(db: Queryable, spec: Spec): Promise<State | null>;
  update(db: Queryable, spec: Spec): Promise<State>;
  delete(db: Queryable, spec: Spec): Promise<void>;
}
