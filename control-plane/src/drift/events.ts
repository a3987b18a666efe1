import { appendEvent } from '../db/outbox.js';
import type { Queryable } from '../domain/queryable.js';
import type { Finding, TenantRecord } from './types.js';

/**
 * A sweep's `drift.findings` events (docs/lifecycle.md), written in the transaction that stores its
 * findings: one per tenant with findings, one (no tenant) for the platform's own, each with the counts
 * a consumer routes on. A tenant only behind a rollout (`pending-rollout`) has no drift to report.
 */
export async function appendDriftEvents(
  q: Queryable,
  runId: string,
  findings: Finding[],
  tenants: ReadonlyMap<string, TenantRecord>,
): Promise<void> {
  const groups = new Map<string, Finding[]>();
  for (const f of findings) {
    if (f.category === 'pending-rollout' || f.category === 'orphan') continue;
    const key = f.tenantId ?? '';
    groups.set(key, [...(groups.get(key) ?? []), f]);
  }
  for (const [tenantId, fs] of groups) {
    const t = tenantId ? tenants.get(tenantId) : undefined;
    if (tenantId && !t) continue; // an offboarded owner's leftovers: orphans, not this tenant's drift
    const count = (key: (f: Finding) => string) =>
      fs.reduce<Record<string, number>>((acc, f) => {
        acc[key(f)] = (acc[key(f)] ?? 0) + 1;
        return acc;
      }, {});
    await appendEvent(q, {
      type: 'drift.findings',
      tenant: t ? { id: t.id, slug: t.slug } : null,
      data: {
        driftRunId: runId,
        findings: fs.length,
        byCategory: count((f) => f.category),
        byResource: count((f) => f.resource),
      },
      dedupeKey: `drift.findings:${runId}:${tenantId || '-'}`,
    });
  }
}
