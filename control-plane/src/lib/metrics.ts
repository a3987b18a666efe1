import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { Db } from '../db/db.js';
import { countOperations, countTenants } from '../db/repo.js';
import { ACTIVE_OPERATION_STATUSES, OPERATION_KINDS } from '../domain/tenant.js';
import type { ConnectionBudget } from '../services/capacity.js';

/**
 * Counters and histograms are fed by the worker of this process; the gauges are read from the
 * control database at scrape time, so every process (API-only ones too) exports the fleet's state.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly operations: Counter<'kind' | 'status'>;
  readonly stepDuration: Histogram<'kind' | 'step' | 'outcome'>;
  readonly acceptToDone: Histogram<'kind' | 'tier'>;
  /** The data-plane clusters whose connection budget is exported (the local target has one). */
  private readonly budgets: ConnectionBudget[] = [];

  constructor(db: Db) {
    // The process's own health: resident memory, heap spaces, GC pauses, event-loop lag.
    collectDefaultMetrics({ register: this.registry });
    this.operations = new Counter({
      name: 'tenantry_operations_total',
      help: 'Operations that reached an end state in this process, by kind and status',
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
    this.databaseGauge('tenantry_tenants', 'Tenants by tier and status', ['tier', 'status'], async () =>
      (await countTenants(db)).map((r) => ({ labels: { tier: r.tier, status: r.status }, n: r.n })),
    );
    // Queued and running are always exported (0 when idle), so alerts on stuck work have a series.
    const idle = OPERATION_KINDS.flatMap((kind) =>
      ACTIVE_OPERATION_STATUSES.map((status) => ({ labels: { kind, status }, n: 0 })),
    );
    this.databaseGauge(
      'tenantry_operations',
      'Operations in the control database by kind and status (queued and running included)',
      ['kind', 'status'],
      async () => [
        ...idle,
        ...(await countOperations(db)).map((r) => ({ labels: { kind: r.kind, status: r.status }, n: r.n })),
      ],
    );
    this.databaseGauge(
      'tenantry_connection_budget',
      'Connections tenants may hold on a data-plane cluster: max_connections less superuser_reserved_connections and reserved_connections',
      ['cluster'],
      async () =>
        (await Promise.all(this.budgets.map((b) => b.snapshot()))).flatMap((s) =>
          s.budget === null ? [] : [{ labels: { cluster: s.cluster }, n: s.budget }],
        ),
    );
    this.databaseGauge(
      'tenantry_connection_committed',
      'Sum of the connection limits of the logins Tenantry created on a data-plane cluster (the pool login once, each bridge and silo tenant)',
      ['cluster'],
      async () =>
        (await Promise.all(this.budgets.map((b) => b.snapshot()))).map((s) => ({
          labels: { cluster: s.cluster },
          n: s.committed,
        })),
    );
  }

  /** Exports a cluster's connection budget and what is committed against it. */
  trackConnectionBudget(budget: ConnectionBudget): void {
    if (!this.budgets.includes(budget)) this.budgets.push(budget);
  }

  /** A gauge whose samples are read from the database on every scrape. */
  private databaseGauge<L extends string>(
    name: string,
    help: string,
    labelNames: L[],
    read: () => Promise<{ labels: Record<L, string>; n: number }[]>,
  ): void {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      async collect() {
        const samples = await read();
        this.reset();
        for (const { labels, n } of samples) this.set(labels as never, n);
      },
    });
  }
}
