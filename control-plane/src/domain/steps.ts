/**
 * Every step name, by operation kind and target: the lists are `as const`, the unions are read off
 * them, so a misspelt step in a list or in a step runner's `switch` does not compile. Operations
 * record their steps as plain strings (the port's `StepContext.step`); each runner narrows with the
 * guards below, refusing any other name with its own "unknown … step" error.
 */

/** What a list of names accepts, as a type guard. */
const memberOf =
  <T extends string>(list: readonly T[]) =>
  (step: string): step is T =>
    (list as readonly string[]).includes(step);

/* ---- onboarding and offboarding */

/**
 * The local target's resources, created in the onboarding order of each tier (engine/local.ts);
 * offboarding removes the same ones.
 */
export const LOCAL_PROVISION_STEPS = [
  'key',
  'credentials',
  'role',
  'database',
  'schema',
  'grants',
  'pool-membership',
] as const;
export type LocalOnboardStep = (typeof LOCAL_PROVISION_STEPS)[number];
export type LocalOffboardStep = LocalOnboardStep;
export const isLocalProvisionStep = memberOf(LOCAL_PROVISION_STEPS);

/** The aws target: one `up` of the tenant's stack. */
export const AWS_ONBOARD_STEPS = ['stack-up'] as const;
/** The aws target: the stack re-applied with its offboarding flag, then destroyed. */
export const AWS_OFFBOARD_STEPS = ['stack-unprotect', 'stack-destroy'] as const;
export type AwsOnboardStep = (typeof AWS_ONBOARD_STEPS)[number];
export type AwsOffboardStep = (typeof AWS_OFFBOARD_STEPS)[number];

export type OnboardStep = LocalOnboardStep | AwsOnboardStep;
/**
 * An onboarding's resource steps: each converges one resource idempotently, and running one again
 * after later ones ran leaves everything as it was. So their records may wait and be lost together in
 * a crash (worker/step-records.ts): the steps just run again. Not so for the steps of a promotion, a
 * rotation or an offboarding, where a step run again after a later one could undo it.
 */
export const isOnboardResourceStep = (step: string): boolean =>
  isLocalProvisionStep(step) || (AWS_ONBOARD_STEPS as readonly string[]).includes(step);

export type OffboardStep = LocalOffboardStep | AwsOffboardStep;

/* ---- promotion (and its rollback and abort) */

/** The row move proper: the same on every target, between provisioning and the routing flip. */
export const ROW_STEPS = [
  'replication',
  'copy',
  'indexes',
  'catch-up',
  'verify-full',
  'freeze',
  'drain',
  'verify',
] as const;
/** A rollback's row move: the current placement frozen, its rows copied back and verified. */
export const RESTORE_STEPS = ['freeze-target', 'restore', 'verify-restore'] as const;
/**
 * Every step the row move runs (promotion/row-move.ts): the readying of a provisioned target, the
 * row move, and a rollback's freeze, restore and verification.
 */
export const ROW_MOVE_STEP_NAMES = ['prepare-target', ...ROW_STEPS, ...RESTORE_STEPS] as const;
export type RowStep = (typeof ROW_STEPS)[number];
export type RestoreStep = (typeof RESTORE_STEPS)[number];
export type RowMoveStep = (typeof ROW_MOVE_STEP_NAMES)[number];
export const isRowMoveStep = memberOf(ROW_MOVE_STEP_NAMES);

/**
 * The local target's routing around the row move (promotion/local.ts): the target provisioned, the
 * routing flipped (and back, for a rollback), a failed move undone, the rollback's leftover dropped.
 */
export const LOCAL_ROUTING_STEPS = [
  'provision',
  'cutover',
  'abort',
  'abort-rollback',
  'cutover-back',
  'drop-target',
] as const;
export type LocalRoutingStep = (typeof LOCAL_ROUTING_STEPS)[number];
export const isLocalRoutingStep = memberOf(LOCAL_ROUTING_STEPS);
export type LocalPromotionStep = RowMoveStep | LocalRoutingStep;

/** The aws target's `up`s of a promotion, its rollback and its abort (engine/aws.ts). */
export const AWS_PROMOTION_STACK_STEPS = [
  'stack-stage',
  'stack-back',
  'stack-discard',
  'stack-unstage',
  'stack-up',
  'stack-current',
] as const;
export type AwsPromotionStackStep = (typeof AWS_PROMOTION_STACK_STEPS)[number];
/**
 * The aws target's routing on the data, around the stack's `up`s: the write freeze lifted once
 * routing flipped (`release`, `release-back`), or the move undone before it did.
 */
export const AWS_DATA_ROUTING_STEPS = [
  'release',
  'release-back',
  'abort-data',
  'abort-rollback-data',
] as const;
export type AwsDataRoutingStep = (typeof AWS_DATA_ROUTING_STEPS)[number];
export const isAwsDataRoutingStep = memberOf(AWS_DATA_ROUTING_STEPS);
/** What the aws target runs on the shared cluster rather than through the stack. */
export type AwsMoverStep = RowMoveStep | AwsDataRoutingStep;
export const isAwsMoverStep = (step: string): step is AwsMoverStep =>
  isRowMoveStep(step) || isAwsDataRoutingStep(step);
export type AwsPromotionStep = AwsPromotionStackStep | AwsMoverStep;

/** Every step the aws target runs through the stack (onboarding, offboarding, promotion; `stack-up` twice). */
export const AWS_STACK_STEPS = [
  ...AWS_ONBOARD_STEPS,
  ...AWS_OFFBOARD_STEPS,
  ...AWS_PROMOTION_STACK_STEPS,
] as const;
export type AwsStackStep = (typeof AWS_STACK_STEPS)[number];
export const isAwsStackStep = memberOf(AWS_STACK_STEPS);

/** Every promotion step, on either target (row steps, routing, rollback and abort steps). */
export const PROMOTION_STEPS = [
  ...ROW_MOVE_STEP_NAMES,
  ...LOCAL_ROUTING_STEPS,
  ...AWS_PROMOTION_STACK_STEPS,
  ...AWS_DATA_ROUTING_STEPS,
] as const;
export type PromotionStep = (typeof PROMOTION_STEPS)[number];
export const isPromotionStep = memberOf(PROMOTION_STEPS);

/* ---- drift remediation (`reconcile` operations) */

/** The local remediator's steps (drift/local.ts): a tenant's resources, then the platform's. */
export const LOCAL_RECONCILE_STEPS = [
  'key',
  'credentials',
  'unfreeze',
  'pool-membership',
  'role',
  'database',
  'revoke-shared-connect',
  'schema',
  'freeze-guards',
  'enable-guards',
  'grants',
  'pool-role',
  'owner-role',
  'pool',
  'lock-down-shared-database',
  'table-ownership',
  'revoke-connect',
] as const;
/** The aws remediator's one step: an `up` of the tenant's program, like provisioning did. */
export const AWS_RECONCILE_STEPS = ['stack-up'] as const;
export type LocalReconcileStep = (typeof LOCAL_RECONCILE_STEPS)[number];
export type AwsReconcileStep = (typeof AWS_RECONCILE_STEPS)[number];
export type ReconcileStep = LocalReconcileStep | AwsReconcileStep;
export const isLocalReconcileStep = memberOf(LOCAL_RECONCILE_STEPS);
export const isAwsReconcileStep = memberOf(AWS_RECONCILE_STEPS);

/* ---- fleet schema rollouts (`migrate` operations) */

/**
 * A tenant's part of a rollout: its placement brought to the rollout's version, one template
 * migration per transaction with the version bump, under the tenant's lock (rollout/migrator.ts).
 */
export const MIGRATE_STEPS = ['migrate'] as const;
export type MigrateStep = (typeof MIGRATE_STEPS)[number];
export const isMigrateStep = memberOf(MIGRATE_STEPS);

/* ---- credential and key rotation (`rotate` operations) */

/**
 * The local target's rotation steps (engine/local.ts): a password rotation ensures the group's two
 * logins (`logins`), sets a new password on the idle one (`set-password`) and makes it current
 * (`publish`); `retire` ends every other login of the group (after a grace period, or first when the
 * previous one is over); `rekey` replaces the tenant's data key.
 */
export const ROTATION_STEPS = ['retire', 'logins', 'set-password', 'publish', 'rekey'] as const;
export type RotationStep = (typeof ROTATION_STEPS)[number];
export const isRotationStep = memberOf(ROTATION_STEPS);
