import { AsyncLocalStorage } from 'node:async_hooks';
import type pg from 'pg';
import type { Registry } from 'prom-client';
import type { ConnectionDescriptor } from '../domain/ports.js';
import { DescriptorCache, type DescriptorSource } from './descriptors.js';
import { isFrozen, isLoginRefused, isRace, isSessionLost, TenantryClientError } from './errors.js';
import { ClientMetrics } from './metrics.js';
import { PlacementPools, type PoolOptions, placementKey } from './pools.js';
import type { PasswordSource } from './secrets.js';

/** A structured logger (pino's shape): the client logs slugs, tenant ids and placements, never a password. */
export interface ClientLog {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface ClientOptions {
  /** Where descriptors come from: `httpDescriptorSource({ url, token })` (the control plane), or your own. */
  descriptors: DescriptorSource;
  /** Where a password comes from when a descriptor has none (aws: `secretsManagerPasswords()`). */
  passwords?: PasswordSource & { forget?(secretRef: string): void };
  /** How long a descriptor is trusted (ms). Keep it well below the rotations' grace period. Default 30 s. */
  descriptorTtlMs?: number;
  pool?: Partial<PoolOptions>;
  /**
   * Runs of a unit of work that met a freeze (a promotion), a refused login (a rotation) or a lost
   * session: at most `maxAttempts`, backing off from `baseDelayMs` to `maxDelayMs`, within `budgetMs`.
   * A freeze shorter than the budget never reaches the application.
   */
  retry?: { maxAttempts?: number; baseDelayMs?: number; maxDelayMs?: number; budgetMs?: number };
  /** prom-client registry for the client's metrics (default: a registry of its own, `client.metrics.registry`). */
  registry?: Registry;
  log?: ClientLog;
}

/** A unit of work's handle: statements run in the unit's transaction, as the tenant. */
export interface TenantDb {
  readonly tenantId: string;
  readonly tier: ConnectionDescriptor['tier'];
  // biome-ignore lint/suspicious/noExplicitAny: pg's own default row type
  query<R extends pg.QueryResultRow = any>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
}

type RetryReason = 'frozen' | 'login' | 'session' | 'race' | 'descriptor';

/** Transaction control inside a unit (the client owns the transaction); `ROLLBACK TO SAVEPOINT` is fine. */
const TRANSACTION_CONTROL =
  /^\s*(begin|start\s+transaction|commit|end|abort|rollback(?!\s+(?:transaction\s+|work\s+)?to\b)|prepare\s+transaction|set\s+transaction\s+snapshot)\b/i;
/** Statements that reset every setting of the session or transaction, the tenant's included. */
const RESET_ALL = /\breset\s+all\b|\bdiscard\b/i;
const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** Statements that would change the tenant a session sees (reading it is fine): only the client sets it. */
const settingWrites = new Map<string, RegExp>();
const settingWrite = (setting: string): RegExp => {
  let re = settingWrites.get(setting);
  if (!re) {
    const name = escapeRe(setting);
    re = new RegExp(
      `\\bset_config\\s*\\(\\s*'${name}'|\\b(?:set|reset)\\s+(?:session\\s+|local\\s+)?"?${name}\\b`,
      'i',
    );
    settingWrites.set(setting, re);
  }
  return re;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The data-plane client: `withTenant(slug, async (db) => …)` runs a unit of work as one transaction on
 * the tenant's placement, wherever its descriptor says it is now.
 *
 * - Descriptors are cached (`descriptorTtlMs`); one pg pool per placement, not per tenant.
 * - Pool tier: the transaction sets `app.tenant_id` with `set_config(…, true)` before the unit runs,
 *   so it ends with the transaction and never survives on a pooled connection; nothing runs on a
 *   tenant's connection outside a unit (the handle refuses once the unit ended), nor can the unit end
 *   the transaction or change the setting itself.
 * - A write refused by a freeze (25006: a promotion in its freeze, or the placement it left) drops the
 *   descriptor, reads it again and runs the whole unit again, with a bounded backoff. So does a refused
 *   login (28P01/28000: a rotated password, a retired login), a session lost before COMMIT, and a
 *   serialization failure or deadlock. The unit may therefore run more than once: keep it to database
 *   work. A session lost during COMMIT is reported (COMMIT_OUTCOME_UNKNOWN), never retried.
 * - Pools of placements that no cached descriptor names any more are drained.
 */
export class TenantryClient {
  readonly metrics: ClientMetrics;
  private readonly cache: DescriptorCache;
  private readonly pools: PlacementPools;
  private readonly units = new AsyncLocalStorage<{ slug: string; db: TenantDb; done: () => boolean }>();
  private readonly retry: Required<NonNullable<ClientOptions['retry']>>;
  private readonly passwords: NonNullable<ClientOptions['passwords']>;
  private closed = false;

  constructor(private readonly opts: ClientOptions) {
    this.retry = {
      maxAttempts: opts.retry?.maxAttempts ?? 12,
      baseDelayMs: opts.retry?.baseDelayMs ?? 20,
      maxDelayMs: opts.retry?.maxDelayMs ?? 1000,
      budgetMs: opts.retry?.budgetMs ?? 30_000,
    };
    this.passwords =
      opts.passwords ??
      (async (d: ConnectionDescriptor) => {
        if (typeof d.password !== 'string')
          throw new TenantryClientError(
            'MISCONFIGURED',
            `the descriptor of ${d.secretRef} carries no password: pass \`passwords\` (secretsManagerPasswords on the aws target)`,
          );
        return d.password;
      });
    this.pools = new PlacementPools(
      {
        max: opts.pool?.max ?? 10,
        idleTimeoutMillis: opts.pool?.idleTimeoutMillis ?? 30_000,
        maxLifetimeSeconds: opts.pool?.maxLifetimeSeconds ?? 600,
        connectionTimeoutMillis: opts.pool?.connectionTimeoutMillis ?? 10_000,
      },
      this.passwords,
      (key) => {
        this.metrics.drained.inc();
        this.opts.log?.debug({ placement: key }, 'drained the pool of a placement no tenant uses');
      },
    );
    this.metrics = new ClientMetrics(opts.registry, () => this.pools.stats());
    this.cache = new DescriptorCache(opts.descriptors, opts.descriptorTtlMs ?? 30_000, this.metrics, () =>
      this.pools.drain(this.cache.descriptors()),
    );
  }

  /**
   * Runs `fn` as one transaction of tenant `slug`, committed when it resolves, rolled back when it
   * throws. Inside it, `withTenant` for the same tenant joins the unit; for another tenant it throws
   * MISUSE_NESTED_TENANT.
   */
  async withTenant<T>(slug: string, fn: (db: TenantDb) => Promise<T>): Promise<T> {
    if (this.closed) throw new Error('the Tenantry client is closed');
    const outer = this.units.getStore();
    if (outer && !outer.done()) {
      if (outer.slug === slug) return fn(outer.db);
      throw new TenantryClientError(
        'MISUSE_NESTED_TENANT',
        `withTenant(${slug}) inside a unit of work of ${outer.slug}: one unit is one tenant's transaction`,
      );
    }
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      let descriptor: ConnectionDescriptor | undefined;
      let reason: RetryReason | null;
      let failure: unknown;
      try {
        descriptor = await this.cache.get(slug);
        const out = await this.unit(slug, descriptor, fn);
        this.metrics.units.inc({ outcome: 'committed' });
        return out;
      } catch (e) {
        failure = e;
        reason = retryReason(e);
      }
      if (reason === 'frozen' || reason === 'login') this.cache.invalidate(slug);
      if (reason === 'login' && descriptor) this.passwords.forget?.(descriptor.secretRef);
      const spent = Date.now() - started;
      if (reason === null || attempt >= this.retry.maxAttempts || spent >= this.retry.budgetMs) {
        this.metrics.units.inc({ outcome: 'failed' });
        if (reason === null) throw failure;
        throw new TenantryClientError(
          'RETRIES_EXHAUSTED',
          `tenant ${slug}: gave up after ${attempt} attempt(s) in ${spent} ms (${reason})`,
          { cause: failure },
        );
      }
      this.metrics.retries.inc({ reason });
      this.opts.log?.debug(
        {
          slug,
          tenantId: descriptor?.tenantId,
          ...(descriptor ? { placement: placementKey(descriptor) } : {}),
          reason,
          attempt,
        },
        'retrying the unit of work',
      );
      const backoff = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (attempt - 1));
      await sleep(Math.min(backoff * (0.5 + Math.random() / 2), this.retry.budgetMs - spent));
    }
  }

  /** The placements with an open pool (host:port/database/login, never a password). */
  placements(): string[] {
    return this.pools.keys();
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.pools.close();
  }

  private async unit<T>(slug: string, d: ConnectionDescriptor, fn: (db: TenantDb) => Promise<T>): Promise<T> {
    // The password first (cached): a password that cannot be had fails here, not halfway through a
    // login (node-postgres would leave that session waiting in authentication until the server's timeout).
    await this.passwords(d);
    const client = await this.pools.for(d).connect();
    let done = false;
    let broken: unknown;
    let committing = false;
    const setting = d.tier === 'pool' ? d.tenantSetting : undefined;
    const db: TenantDb = {
      tenantId: d.tenantId,
      tier: d.tier,
      query: (text, values) => {
        if (done)
          return Promise.reject(
            new TenantryClientError(
              'MISUSE_OUTSIDE_UNIT',
              `a statement for tenant ${slug} after its unit of work ended: run it inside withTenant`,
            ),
          );
        const refusal = misuse(text, setting);
        if (refusal) return Promise.reject(refusal);
        return client.query(text, values as unknown[]);
      },
    };
    try {
      await client.query('BEGIN');
      // Transaction-local: it ends with this transaction, whatever happens to the connection after.
      if (setting) await client.query('SELECT set_config($1, $2, true)', [setting, d.tenantId]);
      const out = await this.units.run({ slug, db, done: () => done }, () => fn(db));
      committing = true;
      const end = await client.query('COMMIT');
      committing = false;
      // COMMIT in an aborted transaction (a statement failed and fn caught it) rolls back.
      if (end.command === 'ROLLBACK')
        throw Object.assign(
          new Error(`tenant ${slug}: a statement of the unit failed, so its transaction was rolled back`),
          { code: '25P02' },
        );
      return out;
    } catch (e) {
      if (committing && isSessionLost(e)) {
        broken = e;
        throw new TenantryClientError(
          'COMMIT_OUTCOME_UNKNOWN',
          `tenant ${slug}: the connection was lost during COMMIT; the unit may or may not have committed`,
          { cause: e },
        );
      }
      if (isSessionLost(e)) broken = e;
      else await client.query('ROLLBACK').catch((x: unknown) => (broken = x));
      throw e;
    } finally {
      done = true;
      // A session in doubt is closed, never handed to another unit.
      client.release(broken === undefined ? undefined : (broken as Error));
    }
  }
}

function retryReason(e: unknown): RetryReason | null {
  if (e instanceof TenantryClientError) return e.code === 'DESCRIPTOR_UNAVAILABLE' ? 'descriptor' : null;
  if (isFrozen(e)) return 'frozen';
  if (isLoginRefused(e)) return 'login';
  if (isSessionLost(e) || /timeout exceeded when trying to connect/i.test(String((e as Error)?.message)))
    return 'session';
  if (isRace(e)) return 'race';
  return null;
}

/** Why a statement may not run inside a unit, or null. */
function misuse(text: string, setting: string | undefined): TenantryClientError | null {
  for (const part of text.split(';')) {
    if (TRANSACTION_CONTROL.test(part))
      return new TenantryClientError(
        'MISUSE_TRANSACTION_CONTROL',
        'transaction control inside a unit of work: the client begins and ends its transaction (use SAVEPOINT for a nested one)',
      );
  }
  if ((setting && settingWrite(setting).test(text)) || RESET_ALL.test(text))
    return new TenantryClientError(
      'MISUSE_TENANT_SETTING',
      'a statement that sets or resets the tenant setting inside a unit of work: the client sets it for the unit',
    );
  return null;
}
