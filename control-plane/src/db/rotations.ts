import type { Queryable } from '../domain/queryable.js';
import type { RotationCandidate } from '../domain/rotation.js';
import type { Tier } from '../domain/tiers.js';

/**
 * The control-database SQL of credential rotation (`login_rotations`, migration 0012): one row per
 * login group that has rotated, a tenant's (subject: its id) or the pool's shared login (`pool`).
 */

export const POOL_SUBJECT = 'pool';

export interface LoginRotation {
  subject: string;
  tenantId: string | null;
  group: string;
  current: string;
  previous: string | null;
  rotatedAt: Date;
  graceUntil: Date | null;
  retiredAt: Date | null;
  operationId: string;
}

const COLUMNS = `subject, tenant_id AS "tenantId", login_group AS "group", current_login AS current,
  previous_login AS previous, rotated_at AS "rotatedAt", grace_until AS "graceUntil",
  retired_at AS "retiredAt", operation_id AS "operationId"`;

export async function findLoginRotation(q: Queryable, subject: string): Promise<LoginRotation | null> {
  const { rows } = await q.query<LoginRotation & Record<string, unknown>>(
    `SELECT ${COLUMNS} FROM login_rotations WHERE subject = $1`,
    [subject],
  );
  return rows[0] ?? null;
}

/** A published rotation: the group now logs in as `current`; `previous` keeps working for `graceMs`. */
export async function recordPasswordRotated(
  q: Queryable,
  r: {
    subject: string;
    tenantId: string | null;
    group: string;
    current: string;
    previous: string;
    graceMs: number;
    operationId: string;
  },
): Promise<{ graceUntil: string }> {
  const { rows } = await q.query<{ grace_until: Date }>(
    `INSERT INTO login_rotations AS l (subject, tenant_id, login_group, current_login, previous_login, rotated_at,
                                       grace_until, retired_at, operation_id)
     VALUES ($1, $2, $3, $4, $5, now(), now() + make_interval(secs => $6::double precision / 1000), NULL, $7)
     ON CONFLICT (subject) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, login_group = EXCLUDED.login_group,
       current_login = EXCLUDED.current_login, previous_login = EXCLUDED.previous_login,
       rotated_at = EXCLUDED.rotated_at, grace_until = EXCLUDED.grace_until, retired_at = NULL,
       operation_id = EXCLUDED.operation_id
     RETURNING grace_until`,
    [r.subject, r.tenantId, r.group, r.current, r.previous, r.graceMs, r.operationId],
  );
  return { graceUntil: (rows[0] as { grace_until: Date }).grace_until.toISOString() };
}

/** The group's old login was retired: its grace period is over. */
export async function recordRetired(q: Queryable, subject: string): Promise<void> {
  await q.query('UPDATE login_rotations SET retired_at = now() WHERE subject = $1 AND retired_at IS NULL', [
    subject,
  ]);
}

/**
 * Grace periods over (at `now`) whose old login is not retired yet, oldest first, each with the tenant
 * its retire is recorded on: the tenant's own, or for the pool's login an active pool tenant with no
 * operation in flight (null while there is none).
 */
export async function retiresDue(
  q: Queryable,
  now: Date,
  limit: number,
): Promise<{ subject: string; tenantId: string | null }[]> {
  const { rows } = await q.query<{ subject: string; tenantId: string | null }>(
    `SELECT r.subject,
            CASE WHEN r.subject = $3 THEN
              (SELECT t.id FROM tenants t WHERE t.status = 'active' AND t.tier = 'pool'
                  AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.tenant_id = t.id AND o.status IN ('queued', 'running'))
                ORDER BY t.created_at, t.id LIMIT 1)
            ELSE r.tenant_id END AS "tenantId"
       FROM login_rotations r
      WHERE r.retired_at IS NULL AND r.previous_login IS NOT NULL AND r.grace_until <= $1
        AND (r.subject = $3 OR EXISTS (SELECT 1 FROM tenants t WHERE t.id = r.tenant_id AND t.status = 'active'))
      ORDER BY r.grace_until LIMIT $2`,
    [now, limit, POOL_SUBJECT],
  );
  return rows;
}

/**
 * The subjects the schedule may rotate: every active bridge and silo tenant (its own logins), and the
 * pool's shared login (recorded on an active pool tenant with no operation in flight, the oldest, while
 * there is one). `since` is the last rotation, or the tenant's onboarding (the pool: its oldest tenant's).
 */
export async function rotationCandidates(
  q: Queryable,
): Promise<(RotationCandidate & { tenantId: string; slug: string })[]> {
  const { rows } = await q.query<{
    subject: string;
    tenant_id: string;
    slug: string;
    tier: Tier;
    since: Date;
    busy: boolean;
    in_grace: boolean;
  }>(
    `SELECT t.id::text AS subject, t.id AS tenant_id, t.slug, t.tier, coalesce(r.rotated_at, t.created_at) AS since,
            EXISTS (SELECT 1 FROM operations o WHERE o.tenant_id = t.id AND o.status IN ('queued', 'running')) AS busy,
            coalesce(r.previous_login IS NOT NULL AND r.retired_at IS NULL, false) AS in_grace
       FROM tenants t LEFT JOIN login_rotations r ON r.subject = t.id::text
      WHERE t.status = 'active' AND t.tier IN ('bridge', 'silo')
     UNION ALL
     SELECT $1, p.id, p.slug, 'pool', coalesce(r.rotated_at, p.first_at),
            p.busy OR EXISTS (SELECT 1 FROM operations o WHERE o.kind = 'rotate' AND o.status IN ('queued', 'running')
                                 AND (o.params ->> 'subject') = 'pool'),
            coalesce(r.previous_login IS NOT NULL AND r.retired_at IS NULL, false)
       FROM (SELECT t.id, t.slug, min(t.created_at) OVER () AS first_at,
                    EXISTS (SELECT 1 FROM operations o WHERE o.tenant_id = t.id AND o.status IN ('queued', 'running')) AS busy
               FROM tenants t WHERE t.status = 'active' AND t.tier = 'pool'
              ORDER BY 4, t.created_at, t.id LIMIT 1) p
       LEFT JOIN login_rotations r ON r.subject = $1`,
    [POOL_SUBJECT],
  );
  return rows.map((r) => ({
    subjectId: r.subject,
    tenantId: r.tenant_id,
    slug: r.slug,
    tier: r.tier,
    since: r.since.getTime(),
    busy: r.busy,
    inGrace: r.in_grace,
  }));
}
