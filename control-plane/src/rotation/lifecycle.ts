import { appendAudit } from '../db/audit.js';
import { POOL_SUBJECT, recordPasswordRotated, recordRetired } from '../db/rotations.js';
import { WORKER_ACTOR } from '../db/runs.js';
import { TenantryError } from '../domain/errors.js';
import { parseLoginRoleName } from '../domain/naming.js';
import type { Queryable } from '../domain/queryable.js';
import { isRotationParams } from '../domain/rotation.js';
import type { Tenant } from '../domain/tenant.js';

/**
 * A `rotate` operation's end, recorded in the transaction that marks it succeeded (the executor's):
 * a password rotation's new current login, the old one and its grace period (`login_rotations`, which
 * the schedule reads to retire it once the grace period is over); a retire; a re-keyed data key. Each
 * with its audit record.
 */
export async function recordRotation(
  q: Queryable,
  op: { id: string; params: Record<string, unknown>; progress: Record<string, unknown> },
  tenant: Tenant,
): Promise<void> {
  const { params, progress } = op;
  if (!isRotationParams(params))
    throw new TenantryError('INTERNAL', `operation ${op.id} has no rotation params`);
  const pool = params.subject === 'pool';
  const subject = pool ? POOL_SUBJECT : tenant.id;
  const audit = (action: string, details: Record<string, unknown>) =>
    appendAudit(q, {
      actor: WORKER_ACTOR,
      action,
      tenantId: tenant.id,
      tenantSlug: tenant.slug,
      operationId: op.id,
      details: { subject: params.subject, ...details },
    });
  switch (params.rotate) {
    case 'password': {
      const move = progress.login as { from?: unknown; to?: unknown } | undefined;
      const group = typeof move?.to === 'string' ? parseLoginRoleName(move.to)?.group : undefined;
      if (!group || typeof move?.from !== 'string')
        throw new TenantryError('INTERNAL', `rotation ${op.id} recorded no login it moved to`);
      const { graceUntil } = await recordPasswordRotated(q, {
        subject,
        tenantId: pool ? null : tenant.id,
        group,
        current: move.to as string,
        previous: move.from,
        graceMs: params.graceMs ?? 0,
        operationId: op.id,
      });
      await audit('tenant.credentials.rotated', {
        from: move.from,
        to: move.to,
        graceUntil,
        secretVersion: progress.secretVersion ?? null,
      });
      return;
    }
    case 'retire':
      await recordRetired(q, subject);
      await audit('tenant.credentials.retired', { retired: progress.retired ?? [] });
      return;
    case 'key':
      await audit('tenant.key.rotated', {
        keyId: progress.keyId ?? null,
        previousKeyId: progress.previousKeyId ?? null,
        secretVersions: progress.secretVersions ?? 0,
      });
      return;
    default: {
      const unknown: never = params.rotate;
      throw new TenantryError('INTERNAL', `unknown rotation ${String(unknown)}`);
    }
  }
}
