import { describe, expect, it } from 'vitest';
import {
  AWS_DATA_ROUTING_STEPS,
  AWS_OFFBOARD_STEPS,
  AWS_ONBOARD_STEPS,
  AWS_PROMOTION_STACK_STEPS,
  AWS_RECONCILE_STEPS,
  AWS_STACK_STEPS,
  isAwsDataRoutingStep,
  isAwsMoverStep,
  isAwsReconcileStep,
  isAwsStackStep,
  isLocalProvisionStep,
  isLocalReconcileStep,
  isLocalRoutingStep,
  isPromotionStep,
  isRowMoveStep,
  LOCAL_PROVISION_STEPS,
  LOCAL_RECONCILE_STEPS,
  LOCAL_ROUTING_STEPS,
  type LocalRoutingStep,
  type OnboardStep,
  PROMOTION_STEPS,
  type PromotionStep,
  RESTORE_STEPS,
  ROW_MOVE_STEP_NAMES,
  ROW_STEPS,
} from '../../control-plane/src/domain/steps.js';
import { ABORT_STEPS, PROMOTE_STEPS, ROLLBACK_STEPS } from '../../control-plane/src/promotion/local.js';

const MISSPELT = ['cutovr', 'stack_up', 'Key', '', 'verify-ful', 'toString', 'constructor'];

describe('step names', () => {
  const guards: [string, (s: string) => boolean, readonly string[]][] = [
    ['local provisioning', isLocalProvisionStep, LOCAL_PROVISION_STEPS],
    ['row move', isRowMoveStep, ROW_MOVE_STEP_NAMES],
    ['local routing', isLocalRoutingStep, LOCAL_ROUTING_STEPS],
    ['aws stack', isAwsStackStep, AWS_STACK_STEPS],
    ['aws data routing', isAwsDataRoutingStep, AWS_DATA_ROUTING_STEPS],
    ['aws mover', isAwsMoverStep, [...ROW_MOVE_STEP_NAMES, ...AWS_DATA_ROUTING_STEPS]],
    ['promotion', isPromotionStep, PROMOTION_STEPS],
    ['local reconcile', isLocalReconcileStep, LOCAL_RECONCILE_STEPS],
    ['aws reconcile', isAwsReconcileStep, AWS_RECONCILE_STEPS],
  ];

  it.each(guards)('the %s guard accepts every declared step and refuses a misspelt one', (_, guard, list) => {
    expect(list.length).toBeGreaterThan(0);
    for (const step of list) expect(guard(step), step).toBe(true);
    for (const step of MISSPELT) expect(guard(step), step).toBe(false);
  });

  it('every promotion list the targets keep is made of declared promotion steps', () => {
    for (const list of [PROMOTE_STEPS, ROLLBACK_STEPS, ABORT_STEPS, ROW_STEPS, RESTORE_STEPS]) {
      for (const step of list) expect(isPromotionStep(step), step).toBe(true);
    }
    for (const step of [...AWS_ONBOARD_STEPS, ...AWS_OFFBOARD_STEPS, ...AWS_PROMOTION_STACK_STEPS])
      expect(isAwsStackStep(step), step).toBe(true);
  });

  it('a misspelt step in a typed list or a case does not compile (checked by tsc)', () => {
    // @ts-expect-error 'cutovr' is not a promotion step
    const promotion: readonly PromotionStep[] = ['provision', 'cutovr'];
    // @ts-expect-error 'stack_up' is not an onboarding step
    const onboard: readonly OnboardStep[] = ['stack_up'];
    const route = (step: LocalRoutingStep): string => {
      switch (step) {
        case 'cutover':
          return 'flip';
        // @ts-expect-error 'cutovr' is not a local routing step
        case 'cutovr':
          return 'never';
        default:
          return 'other';
      }
    };
    // At run time the plain strings still reach the guards, which refuse them.
    expect(promotion.filter((s) => !isPromotionStep(s))).toEqual(['cutovr']);
    expect(onboard.filter((s) => !isAwsStackStep(s) && !isLocalProvisionStep(s))).toEqual(['stack_up']);
    expect(route('cutover')).toBe('flip');
  });
});
