import type { OperationKind } from './tenant.js';
import type { Tier } from './tiers.js';

export type Target = 'local' | 'aws';

/** What a step needs to know about its tenant. */
export interface StepTenant {
  id: string;
  slug: string;
  tier: Tier;
  templateVersion: number;
}

export interface StepContext {
  operationId: string;
  kind: OperationKind;
  step: string;
  tenant: StepTenant;
  signal: AbortSignal;
  /** Resource-level progress from inside a step (e.g. Pulumi engine events). */
  progress?: (event: { resource: string; action: string; status: string }) => void;
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
  supportsTier(tier: Tier): boolean;
  steps(kind: 'onboard' | 'offboard', tier: Tier): string[];
  runStep(ctx: StepContext): Promise<StepOutputs | undefined>;
  /** The connection descriptor a data plane uses; the password only where the target returns it. */
  connection(tenant: StepTenant): Promise<ConnectionDescriptor>;
  close(): Promise<void>;
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
export interface KeyStore {
  ensureKey(tenantId: string | null, alias: string): Promise<{ keyId: string }>;
  /** Crypto-shreds the key: every ciphertext under it becomes unreadable. */
  shredKey(alias: string): Promise<void>;
  describeKey(alias: string): Promise<{ keyId: string; state: 'enabled' | 'destroyed' } | null>;
}

/** Secrets encrypted under a tenant key, mirroring Secrets Manager. */
export interface SecretStore {
  putSecret(
    name: string,
    keyAlias: string,
    value: Record<string, unknown>,
    nextVersion?: number,
  ): Promise<{ ref: string; version: number }>;
  getSecret(name: string): Promise<{ ref: string; version: number; value: Record<string, unknown> } | null>;
  deleteSecret(name: string): Promise<void>;
}
