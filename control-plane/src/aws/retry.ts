export interface RetryOptions {
  /** Total attempts, the first included. */
  maxAttempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  isRetryable: (error: unknown) => boolean;
  signal?: AbortSignal;
  /** Injected in tests. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** "Full jitter": a uniform delay in [0, min(cap, base * 2^attempt)). */
export function jitteredDelay(
  attempt: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** attempt));
}

export async function withRetry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const max = opts.maxAttempts ?? 8;
  const wait = opts.sleep ?? sleep;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (attempt + 1 >= max || !opts.isRetryable(e) || opts.signal?.aborted) throw e;
      await wait(
        jitteredDelay(attempt, opts.baseDelayMs ?? 500, opts.maxDelayMs ?? 20_000, opts.random),
        opts.signal,
      );
    }
  }
}

/** The AWS error name (SDK v3 sets `name`, older shapes `code`/`Code`). */
export function awsErrorName(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const r = e as { name?: unknown; code?: unknown; Code?: unknown };
  for (const v of [r.name, r.code, r.Code]) if (typeof v === 'string' && v !== 'Error') return v;
  return undefined;
}

const THROTTLING = new Set([
  'ThrottlingException',
  'Throttling',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'ProvisionedThroughputExceededException',
  'SlowDown',
]);

export function isThrottling(e: unknown): boolean {
  const name = awsErrorName(e);
  if (name && THROTTLING.has(name)) return true;
  const meta = (e as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata;
  return meta?.httpStatusCode === 429;
}
