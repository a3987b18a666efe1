/**
 * Lifecycle events (docs/lifecycle.md). Each is written to the outbox in the transaction of the change
 * it reports (db/outbox.ts), so an event exists exactly when its change committed; consumers pull them
 * (GET /v1/events) or receive them on webhooks, signed the Standard Webhooks way (webhooks/).
 */
export const EVENT_TYPES = [
  'tenant.created',
  'tenant.activated',
  'tenant.updated',
  'tenant.suspended',
  'tenant.reactivated',
  'tenant.promoted',
  'tenant.rolled_back',
  'tenant.offboarded',
  'operation.failed',
  'drift.findings',
  'export.ready',
  'webhook.disabled',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];
export const isEventType = (v: string): v is EventType => (EVENT_TYPES as readonly string[]).includes(v);

/** An event as the API shows it and a webhook receives it (`data` never holds a credential). */
export interface LifecycleEvent {
  id: string;
  /** Its position in the published order: GET /v1/events?after= reads past it. */
  seq: number;
  type: EventType;
  tenantId: string | null;
  tenantSlug: string | null;
  operationId: string | null;
  data: Record<string, unknown>;
  createdAt: string;
}

/**
 * The detail-type an sbt-aws user knows for each event (sbt-aws names its EventBridge events after
 * what happened: `onboardingRequest`, `provisionSuccess`, `offboardingSuccess`, …): the detail-types
 * of the entries TENANTRY_EVENTBRIDGE_BUS gets (aws/eventbridge.ts, docs/lifecycle.md).
 */
export const SBT_AWS_DETAIL_TYPES: Record<EventType, string> = {
  'tenant.created': 'onboardingRequest',
  'tenant.activated': 'provisionSuccess',
  'tenant.updated': 'tenantUpdated',
  'tenant.suspended': 'tenantSuspended',
  'tenant.reactivated': 'tenantReactivated',
  'tenant.promoted': 'tenantPromoted',
  'tenant.rolled_back': 'tenantPromotionRolledBack',
  'tenant.offboarded': 'offboardingSuccess',
  'operation.failed': 'operationFailure',
  'drift.findings': 'driftDetected',
  'export.ready': 'exportSuccess',
  'webhook.disabled': 'webhookDisabled',
};

/** The outbox stream an event is ordered in: its tenant's, or the fleet's for events of no tenant. */
export const FLEET_STREAM = '-';
export const streamOf = (tenantId: string | null): string => tenantId ?? FLEET_STREAM;
