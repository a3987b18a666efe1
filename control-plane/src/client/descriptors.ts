import type { ConnectionDescriptor } from '../domain/ports.js';
import { TenantryClientError } from './errors.js';
import type { ClientMetrics } from './metrics.js';

/** Where descriptors come from: the control plane's API, or a function of the application's own. */
export type DescriptorSource = (slug: string) => Promise<ConnectionDescriptor>;

/**
 * Descriptors from the control plane: `GET /v1/tenants/{slug}/connection` with a `dataplane` token
 * (every read is audited there). On the aws target the descriptor carries no password: the client
 * reads it from Secrets Manager by its `secretRef` (see `secretsManagerPasswords`).
 */
export function httpDescriptorSource(opts: {
  /** The control plane's base URL, e.g. `http://127.0.0.1:3000`. */
  url: string;
  /** A token of the `dataplane` role. */
  token: string;
  timeoutMs?: number;
  fetch?: typeof fetch;
}): DescriptorSource {
  const get = opts.fetch ?? fetch;
  const base = opts.url.replace(/\/+$/, '');
  return async (slug) => {
    let res: Response;
    try {
      res = await get(`${base}/v1/tenants/${encodeURIComponent(slug)}/connection`, {
        headers: { authorization: `Bearer ${opts.token}`, accept: 'application/json' },
        signal: AbortSignal.timeout(opts.timeoutMs ?? 5000),
      });
    } catch (e) {
      throw new TenantryClientError(
        'DESCRIPTOR_UNAVAILABLE',
        `the control plane did not answer for ${slug}`,
        {
          cause: e,
        },
      );
    }
    if (res.ok) return (await res.json()) as ConnectionDescriptor;
    const body = (await res.json().catch(() => null)) as {
      error?: { code?: string; message?: string };
    } | null;
    const code = body?.error?.code ?? `HTTP ${res.status}`;
    if (res.status === 404 || code === 'TENANT_NOT_ACTIVE')
      throw new TenantryClientError('TENANT_NOT_FOUND', `tenant ${slug}: ${code}`);
    throw new TenantryClientError(
      'DESCRIPTOR_UNAVAILABLE',
      `tenant ${slug}: the control plane answered ${code}`,
    );
  };
}

interface Entry {
  descriptor: ConnectionDescriptor;
  readAt: number;
  /** Dropped for cause (a freeze, a refused login): the next lookup must read it again. */
  invalid: boolean;
}

/**
 * Descriptors by slug, each trusted for `ttlMs` after it was read, one read in flight per slug. A
 * re-read that fails keeps serving the expired descriptor (the control plane may be restarting), but
 * never one dropped for cause. Entries stay until replaced, so the pools of the placements they name
 * stay open (PlacementPools.drain closes those no entry names).
 */
export class DescriptorCache {
  private readonly entries = new Map<string, Entry>();
  private readonly reading = new Map<string, Promise<ConnectionDescriptor>>();

  constructor(
    private readonly source: DescriptorSource,
    private readonly ttlMs: number,
    private readonly metrics: ClientMetrics,
    private readonly onChange: () => void,
  ) {}

  async get(slug: string): Promise<ConnectionDescriptor> {
    const e = this.entries.get(slug);
    if (e && !e.invalid && Date.now() - e.readAt < this.ttlMs) {
      this.metrics.descriptorCache.inc({ result: 'hit' });
      return e.descriptor;
    }
    try {
      return await this.read(slug);
    } catch (err) {
      if (e && !e.invalid && !(err instanceof TenantryClientError && err.code === 'TENANT_NOT_FOUND')) {
        this.metrics.descriptorCache.inc({ result: 'stale' });
        return e.descriptor;
      }
      throw err;
    }
  }

  /** Drops a descriptor for cause: the next lookup reads it again, and never serves this one. */
  invalidate(slug: string): void {
    const e = this.entries.get(slug);
    if (e && !e.invalid) {
      e.invalid = true;
      this.metrics.descriptorCache.inc({ result: 'invalidated' });
    }
  }

  /** Every descriptor held (a tenant's pools are kept open while one names their placement). */
  descriptors(): ConnectionDescriptor[] {
    return [...this.entries.values()].map((e) => e.descriptor);
  }

  private read(slug: string): Promise<ConnectionDescriptor> {
    let p = this.reading.get(slug);
    if (!p) {
      this.metrics.descriptorCache.inc({ result: 'miss' });
      p = this.source(slug)
        .then((descriptor) => {
          this.entries.set(slug, { descriptor, readAt: Date.now(), invalid: false });
          this.onChange();
          return descriptor;
        })
        .finally(() => this.reading.delete(slug));
      this.reading.set(slug, p);
    }
    return p;
  }
}
