import type { Db } from './db/db.js';
import { schemaStatus } from './db/migrate.js';

export interface ReadinessChecks {
  /** The control database answers, and the pool hands out a connection (`Db.health`). */
  database: 'ok' | 'unavailable';
  /**
   * This build's migrations against the database's: `current`, or `newer` (a newer build migrated
   * while this process runs: expand-first keeps it working), `behind` (a migration of this build is
   * missing), `unknown` (the database did not answer).
   */
  schema: 'current' | 'newer' | 'behind' | 'unknown';
  /** The job-queue runner, in a process that runs the worker. */
  worker: 'running' | 'stopped' | 'not-in-this-process';
  /** `draining` from the stop signal on: load balancers take the process out before it closes. */
  process: 'serving' | 'draining';
}

export interface ReadinessReport {
  ready: boolean;
  checks: ReadinessChecks;
  /** What keeps the process from being ready, one clause each. */
  problems: string[];
}

/**
 * Readiness (`GET /readyz`): whether this process should get traffic. Liveness (`/healthz`) is only
 * that the process and its pool are not wedged; ready adds the control schema at this build's version
 * (or newer), a running worker where this process runs one, and not draining.
 */
export class Readiness {
  private draining = false;

  constructor(
    private readonly db: Db,
    private readonly migrations: readonly string[],
    /** Undefined when this process runs no worker. */
    private readonly workerRunning?: () => boolean,
  ) {}

  /** From the stop signal on, the process answers not ready while it finishes what it started. */
  startDraining(): void {
    this.draining = true;
  }

  async check(): Promise<ReadinessReport> {
    const problems: string[] = [];
    const h = await this.db.health();
    let schema: ReadinessChecks['schema'] = 'unknown';
    if (!h.ok) {
      problems.push('the control database is unreachable or its connection pool is exhausted');
    } else {
      try {
        const s = await schemaStatus(this.db, [...this.migrations]);
        schema = s.behind.length > 0 ? 'behind' : s.ahead.length > 0 ? 'newer' : 'current';
        if (s.behind.length > 0)
          problems.push(`the control schema lacks this build's migrations: ${s.behind.join(', ')}`);
      } catch {
        problems.push('the control schema could not be read');
      }
    }
    const worker = !this.workerRunning ? 'not-in-this-process' : this.workerRunning() ? 'running' : 'stopped';
    if (worker === 'stopped') problems.push('the worker is not running');
    if (this.draining) problems.push('the process is stopping');
    return {
      ready: problems.length === 0,
      checks: {
        database: h.ok ? 'ok' : 'unavailable',
        schema,
        worker,
        process: this.draining ? 'draining' : 'serving',
      },
      problems,
    };
  }
}
