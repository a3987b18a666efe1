import type { LifecycleKind } from './lifecycle.js';
import type { RotationParams } from './rotation.js';
import type { LimitOverrides, OperationKind, Tenant } from './tenant.js';
import type { Tier } from './tiers.js';

export type Target = 'local' | 'aws';

/** What a step needs to know about its tenant. */
export interface StepTenant {
  id: string;
  slug: string;
  tier: Tier;
  templateVersion: number;
  /** Its limit overrides (within its tier's bounds), which every step that sets a login's limits keeps. */
  limits?: LimitOverrides;
  /** Recorded suspended (from the request's commit until a reactivation succeeds): the aws stacks keep its login NOLOGIN. */
  suspended?: boolean;
  /** Its recorded outputs (non-secret: where its placement is; the aws target reaches a silo's instance by them). */
  outputs?: Record<string, unknown>;
}

/** The part of a tenant record a step is given. */
export const stepTenantOf = (t: Tenant): StepTenant => ({
  id: t.id,
  slug: t.slug,
  tier: t.tier,
  templateVersion: t.templateVersion,
  limits: t.limits,
  ...(t.status === 'suspended' ? { suspended: true } : {}),
  outputs: t.outputs,
});

export interface StepContext {
  operationId: string;
  kind: OperationKind;
  step: string;
  tenant: StepTenant;
  signal: AbortSignal;
  /** The operation's parameters (e.g. a promotion's source and target tiers). */
  params?: Record<string, unknown>;
  /** Progress recorded so far by earlier steps or attempts of this operation. */
  progress?: Record<string, unknown>;
  /** Merges into the operation's progress, durably, before returning. */
  report?: (patch: Record<string, unknown>) => Promise<void>;
  /** Resource-level progress from inside a step (e.g. Pulumi engine events). */
  onResourceEvent?: (event: { resource: string; action: string; status: string }) => void;
  /**
   * What a step of this run hands to a later step of the same run, in memory only (never recorded:
   * a password may be in it). A later run of the operation starts with an empty one, and its steps
   * read their store again.
   */
  memo?: Map<string, unknown>;
}

/** Non-secret outputs a step hands back; merged into the tenant's `outputs`. */
export type StepOutputs = Record<string, string | number | boolean | null>;

/**
 * The Engine port: one per target. It owns the list of steps for each operation on each
 * tier, and runs one step at a time. Every step must be idempotent: after a crash the
 * executor re-runs the step that was in flight.
 */
export interface Engine {
  readonly target: Target;
  /**
   * Whether a terminally failed onboarding is undone through the offboarding steps (local: cheap and
   * exact). Where undoing is costly or irreversible (aws: RDS snapshots, account closure quotas), the
   * failed operation is kept as it is, to be resumed from the failed step once the cause is fixed.
   */
  readonly rollsBackFailedOnboarding: boolean;
  /**
   * Whether a promotion moves the tenant's rows to the target placement before routing flips to it
   * (both targets do). A target that could only re-provision would point the tenant at an empty
   * database: promotions are refused there (422 PROMOTION_NOT_AVAILABLE_ON_TARGET) instead.
   */
  readonly promotionMovesRows: boolean;
  /**
   * Whether a completed promotion can be rolled back inside its window (the rows written since
   * the cutover moved back; both targets do). Where not: 422 ROLLBACK_NOT_AVAILABLE_ON_TARGET.
   */
  readonly promotionRollback: boolean;
  supportsTier(tier: Tier): boolean;
  steps(kind: 'onboard' | 'offboard', tier: Tier): string[];
  /** Steps of a promotion (or of its rollback, when params.rollbackOf is set). */
  promotionSteps(params: PromotionParams): string[];
  /** Steps that undo a promotion that failed before its cutover. */
  promotionAbortSteps(params: PromotionParams): string[];
  /**
   * Deletes a promotion's source placement (`params.fromTier`) once its rollback window has passed,
   * or when the tenant is offboarded inside it; whatever the tenant's tier is by then, never the
   * placement it is routed to. `report` writes into the promotion operation's progress.
   */
  cleanupPromotion(
    tenant: StepTenant,
    params: PromotionParams,
    operationId: string,
    report?: (patch: Record<string, unknown>) => Promise<void>,
  ): Promise<void>;
  /**
   * Drops replication slots and publications whose promotion is no longer in flight, and the slot
   * of a promotion waiting for a retry (`idleOperationIds`) once it holds more WAL than the limit.
   */
  sweepPromotionOrphans(liveOperationIds: string[], idleOperationIds?: string[]): Promise<string[]>;
  /**
   * The steps of a `rotate` operation (domain/rotation.ts), and those that undo one that failed before
   * it published anything. Absent where the target does not rotate (the aws target: 422
   * ROTATION_NOT_AVAILABLE_ON_TARGET).
   */
  rotationSteps?(params: RotationParams): string[];
  rotationAbortSteps?(params: RotationParams): string[];
  /**
   * The steps of a lifecycle operation (domain/lifecycle.ts: limits, suspension, reactivation, export)
   * and of an onboarding's restore from an archive. Absent where the target does not run them (the aws
   * target: 422 OPERATION_NOT_AVAILABLE_ON_TARGET, EXPORT_NOT_AVAILABLE_ON_TARGET).
   */
  lifecycleSteps?(kind: LifecycleKind, tier: Tier): string[];
  restoreSteps?(tier: Tier): string[];
  runStep(ctx: StepContext): Promise<StepOutputs | undefined>;
  /** The connection descriptor a data plane uses; the password only where the target returns it. */
  connection(tenant: StepTenant): Promise<ConnectionDescriptor>;
  close(): Promise<void>;
}

export interface PromotionParams {
  fromTier: Tier;
  toTier: Tier;
  /** Set on a rollback: the promotion being undone. */
  rollbackOf?: string;
  /**
   * Set on a rollback: where that promotion put the tenant, as it recorded it (its progress'
   * `target`, on the aws target: the placement its stack staged). No credential.
   */
  promotedTo?: Record<string, unknown>;
}

export interface ConnectionDescriptor {
  tenantId: string;
  tier: Tier;
  host: string;
  port: number;
  database: string;
  schema?: string;
  user: string;
  password?: string;
  secretRef: string;
  tenantSetting?: string;
}

/** A tenant data key, mirroring KMS: material never leaves the store in the clear except to encrypt. */
/**
 * `provisional`: a write of an onboarding, which nothing serves before the operation's durable end. A
 * store in the control database may commit it without waiting for its WAL flush: the end's durable
 * commit flushes it, and a Postgres crash before that loses it together with the step's record, so
 * the step runs again. Never for a tenant that is served (drift repairs, rotations, promotions).
 */
export interface StoreWrite {
  provisional?: boolean;
}

export interface KeyStore {
  ensureKey(tenantId: string | null, alias: string, opts?: StoreWrite): Promise<{ keyId: string }>;
  /** Crypto-shreds the key: every ciphertext under it becomes unreadable. */
  shredKey(alias: string): Promise<void>;
  describeKey(alias: string): Promise<{ keyId: string; state: 'enabled' | 'destroyed' } | null>;
  /**
   * Replaces the key under `alias`: a new key takes the alias, every version of every secret under
   * the old key is re-encrypted under the new one, and the old key is destroyed, so nothing stays
   * readable under it. Resumable (a run killed at any point is finished by running it again); with
   * `from` (the key being replaced, as the caller recorded it before its first try) a run after the
   * replacement is done does nothing. Absent where the store does not re-key (a KMS key rotates its
   * own material).
   */
  rotateKey?(alias: string, tenantId: string | null, from?: string): Promise<KeyRotated>;
  /**
   * The store read whole, nothing decrypted, for a drift sweep. Only a store outside the control
   * database has it (KMS and Secrets Manager); the local one is read with SQL beside the catalogs.
   */
  inventory?(): Promise<KeyStoreInventory>;
}

/** Every secret (its current version and key) and every tenant key alias (→ key id) of a store. */
export interface KeyStoreInventory {
  secrets: Map<string, { name: string; version: number; keyId: string; keyAlias: string; keyState: string }>;
  keys: Map<string, string>;
}

/** What a key rotation did: the key now under the alias, the one it replaced, the secret versions moved. */
export interface KeyRotated {
  keyId: string;
  previousKeyId: string | null;
  secretVersions: number;
}

/** Secrets encrypted under a tenant key, mirroring Secrets Manager. */
export interface SecretStore {
  putSecret(
    name: string,
    keyAlias: string,
    value: Record<string, unknown>,
    nextVersion?: number,
    opts?: StoreWrite,
  ): Promise<{ ref: string; version: number }>;
  /**
   * The secret's first version, in one write, unless that version exists already: then null, and the
   * caller reads the secret (a store without it is read first, then written).
   */
  createSecret?(
    name: string,
    keyAlias: string,
    value: Record<string, unknown>,
    opts?: StoreWrite,
  ): Promise<{ ref: string; version: number } | null>;
  /**
   * A new tenant's key under `keyAlias` and the secret's first version sealed under it, in one write,
   * when the alias has no enabled key; otherwise null, and the caller ensures the key and creates the
   * secret as usual. Only a store that holds both (the local one) has it.
   */
  createKeyAndSecret?(
    tenantId: string,
    keyAlias: string,
    name: string,
    value: Record<string, unknown>,
    opts?: StoreWrite,
  ): Promise<{ keyId: string; ref: string; version: number } | null>;
  getSecret(name: string): Promise<StoredSecret | null>;
  /** The latest version of each of these secrets that exists, read together (one round trip). */
  getSecrets?(names: readonly string[]): Promise<Map<string, StoredSecret>>;
  deleteSecret(name: string): Promise<void>;
}

/** A secret's latest version, as a store reads it. */
export interface StoredSecret {
  ref: string;
  version: number;
  value: Record<string, unknown>;
}
