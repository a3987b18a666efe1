import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Queryable } from '../domain/queryable.js';
import { DRIFT_KINDS, DRIFT_RESOURCES } from './types.js';

/** Drift metrics, registered on the control plane's registry (created once per registry). */
export class DriftMetrics {
  readonly findings: Gauge<'kind' | 'resource'>;
  readonly sweepDuration: Histogram<'trigger' | 'outcome'>;
  readonly remediations: Counter<'outcome'>;

  /**
   * The findings gauge is read from the database at scrape time (the latest finished sweep's open
   * findings), so every control-plane process reports the same numbers, whichever ran the sweep.
   */
  constructor(registry: Registry, db: Queryable) {
    const existing = <T>(name: string) => registry.getSingleMetric(name) as T | undefined;
    this.findings =
      existing<Gauge<'kind' | 'resource'>>('tenantry_drift_findings') ??
      new Gauge({
        name: 'tenantry_drift_findings',
        help: 'Open drift findings of the latest finished sweep (not repaired, not ignored), by kind and resource',
        labelNames: ['kind', 'resource'],
        registers: [registry],
        async collect() {
          const { rows } = await db.query<{ kind: string; resource: string; n: number }>(
            `SELECT f.kind, f.resource, count(*)::int AS n FROM drift_findings f
              WHERE f.run_id = (SELECT id FROM drift_runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1)
                AND f.resolution <> 'repaired'
              GROUP BY 1, 2`,
          );
          const counts = new Map(rows.map((r) => [`${r.kind}|${r.resource}`, r.n]));
          for (const kind of DRIFT_KINDS) {
            for (const resource of DRIFT_RESOURCES) {
              this.set({ kind, resource }, counts.get(`${kind}|${resource}`) ?? 0);
            }
          }
        },
      });
    this.sweepDuration =
      existing<Histogram<'trigger' | 'outcome'>>('tenantry_drift_sweep_duration_seconds') ??
      new Histogram({
        name: 'tenantry_drift_sweep_duration_seconds',
        help: 'Duration of drift sweeps (observe, diff, record, remediate, re-observe)',
        labelNames: ['trigger', 'outcome'],
        buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300],
        registers: [registry],
      });
    this.remediations =
      existing<Counter<'outcome'>>('tenantry_drift_remediations_total') ??
      new Counter({
        name: 'tenantry_drift_remediations_total',
        help: 'Reconcile operations run by drift sweeps, by outcome',
        labelNames: ['outcome'],
        registers: [registry],
      });
  }
}
