import { markExportReady } from '../db/exports.js';
import { appendEvent, type NewEvent } from '../db/outbox.js';
import type { ClaimedOperation } from '../db/runs.js';
import type { EventType } from '../domain/events.js';
import { isExportParams } from '../domain/lifecycle.js';
import type { Queryable } from '../domain/queryable.js';
import type { OperationKind, Tenant, TenantStatus } from '../domain/tenant.js';

/**
 * What the executor records when a lifecycle operation ends (docs/lifecycle.md): the tenant's status,
 * the lifecycle event in the completing transaction, an export's archive once its step wrote it.
 */

/** The step that writes an archive: an `export` operation's, or an offboarding's first (`?export=true`). */
export const EXPORT_STEP = 'export';

/**
 * The tenant's status once an operation of `kind` succeeded (it was `current` when the operation ran).
 * A suspended tenant stays suspended through anything but its reactivation or offboarding (a rollout's
 * `migrate` resumed after a crash, say).
 */
export function statusAfterSuccess(kind: OperationKind, current: TenantStatus): TenantStatus {
  switch (kind) {
    case 'offboard':
      return 'offboarded';
    case 'suspend':
      return 'suspended';
    case 'reactivate':
      return 'active';
    case 'update':
    case 'export':
      // Neither changes the tenant's state.
      return current;
    default:
      return current === 'suspended' ? 'suspended' : 'active';
  }
}

/**
 * The tenant's status once an operation failed for good: an onboarding leaves it `failed`, an
 * offboarding `offboarding` (to be sent again); a promotion, repair, migration or rotation leaves it
 * active (on its source, or routed forward); a suspension or reactivation that did not finish leaves it
 * suspended (the control plane keeps refusing its descriptor; a new request finishes the job); an
 * update or an export leaves it as it was. A suspended tenant stays suspended whatever failed.
 */
export function statusAfterFailure(kind: OperationKind, current: TenantStatus): TenantStatus {
  switch (kind) {
    case 'offboard':
      return 'offboarding';
    case 'onboard':
      return 'failed';
    case 'suspend':
    case 'reactivate':
      return 'suspended';
    case 'update':
    case 'export':
      return current;
    default:
      return current === 'suspended' ? 'suspended' : 'active';
  }
}

const COMPLETION_EVENTS: Partial<Record<OperationKind, EventType>> = {
  onboard: 'tenant.activated',
  offboard: 'tenant.offboarded',
  suspend: 'tenant.suspended',
  reactivate: 'tenant.reactivated',
};

/**
 * The event an operation that succeeded writes with its end (db/runs.ts `recordSuccess`, which fences
 * it by the lease), once per operation (dedupe key); null for a kind that has none.
 */
export function completionEvent(
  op: Pick<ClaimedOperation, 'id' | 'kind' | 'params'>,
  tenant: Tenant,
  status: TenantStatus,
): NewEvent | null {
  const type = COMPLETION_EVENTS[op.kind];
  if (!type) return null;
  const data: Record<string, unknown> = { tier: tenant.tier, status };
  if (op.kind === 'suspend' || op.kind === 'reactivate') data.reason = op.params.reason ?? null;
  if (op.kind === 'onboard' && isExportParams(op.params.fromExport))
    data.fromExport = op.params.fromExport.exportId;
  if (op.kind === 'offboard' && isExportParams(op.params.finalExport))
    data.finalExport = op.params.finalExport.exportId;
  return { type, tenant, operationId: op.id, data, dedupeKey: `${type}:${op.id}` };
}

/**
 * An export step's archive recorded ready, with its `export.ready` event, once per export. The step
 * reported the archive (size, digest, manifest) in the operation's progress; a rerun of the step after
 * a crash reuses the same archive, so recording again changes nothing.
 */
export async function recordExportReady(
  q: Queryable,
  op: Pick<ClaimedOperation, 'id' | 'kind' | 'params' | 'progress'>,
  tenant: Tenant,
): Promise<void> {
  const archive = op.progress.archive as
    | { exportId: string; bytes: number; sha256: string; manifest: Record<string, unknown> }
    | undefined;
  if (!archive) return;
  const ready = await markExportReady(q, archive.exportId, archive);
  if (!ready) return;
  const tables = (archive.manifest.tables as { name: string; rows: number }[] | undefined) ?? [];
  await appendEvent(q, {
    type: 'export.ready',
    tenant,
    operationId: op.id,
    data: {
      exportId: archive.exportId,
      bytes: archive.bytes,
      sha256: archive.sha256,
      final: op.kind === 'offboard',
      tables: tables.map((t) => ({ name: t.name, rows: t.rows })),
    },
    dedupeKey: `export.ready:${archive.exportId}`,
  });
}
