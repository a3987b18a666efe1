import { effectiveLimits } from '../domain/lifecycle.js';
import { loginRoleNames, tenantObjectName } from '../domain/naming.js';
import type { RoleLimits } from '../providers/postgres/types.js';
import type { ObservedFleet } from './catalog.js';
import type { LocalLayout } from './diff.js';
import type { DetectInput, Finding } from './types.js';

/**
 * What a tenant's second day changes in its expected state (docs/lifecycle.md), applied to the findings
 * `diffLocal` made against its tier alone. Pure, like the diff.
 * - Limit overrides: every login role of the tenant is expected at its tier's limits with its overrides
 *   on top; the diff's findings on those fields are replaced by findings against that.
 * - A suspended bridge or silo tenant: every login role of it is expected NOLOGIN (one that can log in
 *   is an isolation finding); the diff's expectation that its current login logs in is dropped.
 * - A suspended pool tenant: its rows are expected frozen for `suspended` (a missing freeze is an
 *   isolation finding); that freeze is not reported as an unexpected one.
 */
const LIMIT_FIELDS: [string, (l: RoleLimits) => number | string][] = [
  ['connectionLimit', (l) => l.connectionLimit],
  ['statement_timeout', (l) => String(l.statementTimeoutMs)],
  ['idle_in_transaction_session_timeout', (l) => String(l.idleInTransactionSessionTimeoutMs)],
];

export function adjustForLifecycle(
  layout: LocalLayout,
  input: DetectInput,
  obs: ObservedFleet,
  findings: Finding[],
): Finding[] {
  const special = input.tenants.filter(
    (t) => t.status === 'suspended' || (t.limits && Object.keys(t.limits).length > 0 && t.tier !== 'pool'),
  );
  if (special.length === 0) return findings;
  let out = findings;
  for (const t of special) {
    if (t.tier === 'account') continue;
    const owner = { tenantId: t.id, tenantSlug: t.slug };
    if (t.tier === 'pool') {
      if (t.status !== 'suspended') continue;
      const schema = `${layout.dataDatabase}.${layout.poolSchema}`;
      out = out.filter(
        (f) =>
          !(f.tenantId === t.id && f.resource === 'freeze' && f.name === schema && f.actual === 'suspended'),
      );
      const frozen = obs.contents
        .get(layout.dataDatabase)
        ?.frozen.some(
          (f) => f.tenantId === t.id && f.schema === layout.poolSchema && f.reason === 'suspended',
        );
      if (!frozen) out.push(missingSuspensionFreeze(t, schema));
      continue;
    }
    const group = tenantObjectName(t.slug);
    const roles = new Set([group, ...loginRoleNames(group)]);
    const mine = (f: Finding) => f.tenantId === t.id && f.resource === 'role' && roles.has(f.name);
    const overrides = t.limits && Object.keys(t.limits).length > 0 ? t.limits : undefined;
    if (overrides) {
      const want = effectiveLimits(layout.limits[t.tier], overrides);
      out = out.filter((f) => !(mine(f) && LIMIT_FIELDS.some(([field]) => field === f.field)));
      for (const name of roles) {
        const r = obs.roles.get(name);
        if (!r) continue;
        for (const [field, value] of LIMIT_FIELDS) {
          const desired = value(want);
          const actual = field === 'connectionLimit' ? r.connectionLimit : (r.settings[field] ?? null);
          if (actual !== desired)
            out.push({
              ...owner,
              resource: 'role',
              name,
              kind: 'changed',
              field,
              desired,
              actual,
              category: 'state',
            });
        }
      }
    }
    if (t.status === 'suspended') {
      out = out.filter((f) => !(mine(f) && f.field === 'login'));
      for (const name of roles) {
        if (obs.roles.get(name)?.canLogin)
          out.push({
            ...owner,
            resource: 'role',
            name,
            kind: 'changed',
            field: 'login',
            desired: false,
            actual: true,
            category: 'isolation',
          });
      }
    }
  }
  return out;
}

/** A suspended pool tenant whose rows are not frozen for its suspension (`name`: `<database>.<pool schema>`). */
export function missingSuspensionFreeze(t: { id: string; slug: string }, name: string): Finding {
  return {
    tenantId: t.id,
    tenantSlug: t.slug,
    resource: 'freeze',
    name,
    kind: 'missing',
    field: 'frozen',
    desired: 'suspended',
    actual: null,
    category: 'isolation',
  };
}
