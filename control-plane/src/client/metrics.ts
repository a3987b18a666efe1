import { Counter, Gauge, Registry } from 'prom-client';

/** The client's metrics (prom-client), on the application's registry or one of its own. */
export class ClientMetrics {
  readonly registry: Registry;
  readonly descriptorCache: Counter<'result'>;
  readonly retries: Counter<'reason'>;
  readonly units: Counter<'outcome'>;
  readonly drained: Counter;

  constructor(
    registry: Registry | undefined,
    pools: () => { pools: number; total: number; idle: number; waiting: number },
  ) {
    this.registry = registry ?? new Registry();
    const registers = [this.registry];
    this.descriptorCache = new Counter({
      name: 'tenantry_client_descriptor_cache_total',
      help: 'Descriptor lookups: hit (cached, fresh), miss (read from the control plane), stale (an expired one served because a re-read failed), invalidated (dropped after a freeze or a refused login)',
      labelNames: ['result'],
      registers,
    });
    this.retries = new Counter({
      name: 'tenantry_client_retries_total',
      help: 'Units of work run again, by reason: frozen (25006: a promotion), login (a rotated or retired login), session (the connection was lost before COMMIT), race (40001/40P01)',
      labelNames: ['reason'],
      registers,
    });
    this.units = new Counter({
      name: 'tenantry_client_units_total',
      help: 'Units of work (withTenant), by outcome: committed, failed (the application error or a refusal reached the caller)',
      labelNames: ['outcome'],
      registers,
    });
    this.drained = new Counter({
      name: 'tenantry_client_pools_drained_total',
      help: 'Connection pools closed because no cached tenant uses their placement any more',
      registers,
    });
    new Gauge({
      name: 'tenantry_client_pools',
      help: 'Connection pools open: one per placement (host, port, database, login)',
      registers,
      collect() {
        this.set(pools().pools);
      },
    });
    new Gauge({
      name: 'tenantry_client_pool_connections',
      help: 'Connections of all pools, by state: total, idle, waiting (checkouts queued for a connection)',
      labelNames: ['state'],
      registers,
      collect() {
        const p = pools();
        this.set({ state: 'total' }, p.total);
        this.set({ state: 'idle' }, p.idle);
        this.set({ state: 'waiting' }, p.waiting);
      },
    });
  }
}
