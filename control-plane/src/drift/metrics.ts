import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { DRIFT_KINDS, DRIFT_RESOURCES, type Finding } from './types.js';

/** Drift metrics, registered on the control plane's registry (created once per registry). */
export class DriftMetrics {
  readonly findings: Gauge<'kind' | 'resource'>;
  readonly sweepDuration: Histogram<'trigger' | 'outcome'>;
  readonly remediations: Counter<'outcome'>;

  constructor(registry: Registry) {
    const existing = <T>(name: string) => registry.getSingleMetric(name) as T | undefined;
    this.findings =
      existing<Gauge<'kind' | 'resource'>>('tenantry_drift_findings') ??
      new Gauge({
        name: 'tenantry_drift_findings',
        help: 'Open drift findings after the last sweep (not repaired, not ignored), by kind and resource',
        labelNames: ['kind', 'resource'],
        registers: [registry],
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

  /** Sets the gauge to the open findings of a finished sweep (every label pair, zero included). */
  setFindings(open: Pick<Finding, 'kind' | 'resource'>[]): void {
    const counts = new Map<string, number>();
    for (const f of open)
      counts.set(`${f.kind}|${f.resource}`, (counts.get(`${f.kind}|${f.resource}`) ?? 0) + 1);
    for (const kind of DRIFT_KINDS) {
      for (const resource of DRIFT_RESOURCES) {
        this.findings.set({ kind, resource }, counts.get(`${kind}|${resource}`) ?? 0);
      }
    }
  }
}
