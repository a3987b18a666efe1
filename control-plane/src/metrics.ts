import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Db } from './db/db.js';
import { countTenants } from './db/repo.js';

export class Metrics {
  readonly registry = new Registry();
  readonly operations: Counter<'kind' | 'status'>;
  readonly stepDuration: Histogram<'kind' | 'step' | 'outcome'>;
  readonly acceptToDone: Histogram<'kind' | 'tier'>;

  constructor(db: Db) {
    this.operations = new Counter({
      name: 'tenantry_operations_total',
      help: 'Operations that reached an end state, by kind and status',
      labelNames: ['kind', 'status'],
      registers: [this.registry],
    });
    this.stepDuration = new Histogram({
      name: 'tenantry_operation_step_duration_seconds',
      help: 'Duration of operation steps',
      labelNames: ['kind', 'step', 'outcome'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [this.registry],
    });
    this.acceptToDone = new Histogram({
      name: 'tenantry_operation_duration_seconds',
      help: 'Time from accepting an operation to its end state',
      labelNames: ['kind', 'tier'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [this.registry],
    });
    new Gauge({
      name: 'tenantry_tenants',
      help: 'Tenants by tier and status',
      labelNames: ['tier', 'status'],
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const r of await countTenants(db)) this.set({ tier: r.tier, status: r.status }, r.n);
      },
    });
  }
}
