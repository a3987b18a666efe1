import fs from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Profile } from './config.js';

/**
 * The CLI's HTTP client: the public API with a bearer token, nothing else. An error the API answers
 * keeps its code, message and request id; a server out of reach is a NetworkError.
 */

export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId: string | null,
  ) {
    super(message);
  }
}

export class NetworkError extends Error {
  override readonly name = 'NetworkError';
}

export type Query = Record<string, string | number | boolean | readonly string[] | undefined>;

export interface SseEvent {
  event: string;
  data: unknown;
}

const USER_AGENT = 'tenantry-cli';

export class ApiClient {
  constructor(
    private readonly profile: Profile,
    private readonly opts: { timeoutMs?: number } = {},
  ) {}

  get baseUrl(): string {
    return this.profile.url;
  }

  url(path: string, query: Query = {}): string {
    const u = new URL(`${this.profile.url}${path}`);
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined) continue;
      for (const item of Array.isArray(v) ? v : [String(v)]) u.searchParams.append(k, item);
    }
    return u.toString();
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${this.profile.token}`, 'user-agent': USER_AGENT, ...extra };
  }

  async request<T>(
    method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
    path: string,
    opts: { query?: Query; body?: unknown; headers?: Record<string, string> } = {},
  ): Promise<T> {
    return (await this.requestWithHeaders<T>(method, path, opts)).body;
  }

  /** As `request`, with the response's headers (an ETag, say). */
  async requestWithHeaders<T>(
    method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
    path: string,
    opts: { query?: Query; body?: unknown; headers?: Record<string, string> } = {},
  ): Promise<{ body: T; headers: Headers }> {
    const url = this.url(path, opts.query);
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: this.headers({
          accept: 'application/json',
          ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }),
          ...opts.headers,
        }),
        ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 60_000),
      });
    } catch (e) {
      throw unreachable(this.profile.url, e);
    }
    const text = await res.text();
    if (!res.ok) throw apiError(res, text);
    return { body: (text === '' ? null : JSON.parse(text)) as T, headers: res.headers };
  }

  /**
   * A binary body (an export's archive), streamed to `file` as it arrives (written to `file.part`,
   * then renamed, so a failed download leaves no half file under the name asked for).
   */
  async download(path: string, file: string): Promise<{ bytes: number; headers: Headers }> {
    let res: Response;
    try {
      res = await fetch(this.url(path), { headers: this.headers({ accept: 'application/gzip' }) });
    } catch (e) {
      throw unreachable(this.profile.url, e);
    }
    if (!res.ok) throw apiError(res, await res.text());
    const part = `${file}.part`;
    let bytes = 0;
    try {
      const sink = fs.createWriteStream(part);
      const body = res.body ? Readable.fromWeb(res.body as never) : Readable.from([]);
      body.on('data', (c: Buffer) => {
        bytes += c.length;
      });
      await pipeline(body, sink);
      fs.renameSync(part, file);
    } catch (e) {
      fs.rmSync(part, { force: true });
      throw e instanceof Error && !(e instanceof TypeError) ? e : unreachable(this.profile.url, e);
    }
    return { bytes, headers: res.headers };
  }

  /**
   * Server-sent events of a stream route, as they arrive; ends when the server closes the stream.
   * `signal` stops it from the client side.
   */
  async *events(path: string, signal?: AbortSignal): AsyncGenerator<SseEvent> {
    let res: Response;
    try {
      res = await fetch(this.url(path), {
        headers: this.headers({ accept: 'text/event-stream' }),
        ...(signal ? { signal } : {}),
      });
    } catch (e) {
      throw unreachable(this.profile.url, e);
    }
    if (!res.ok) throw apiError(res, await res.text());
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end = buffer.indexOf('\n\n');
        while (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const parsed = parseEvent(block);
          if (parsed) yield parsed;
          end = buffer.indexOf('\n\n');
        }
      }
    } catch (e) {
      if (signal?.aborted) return;
      throw unreachable(this.profile.url, e);
    }
  }
}

/** One SSE block (`event:` and `data:` lines; comments and unknown fields skipped). */
function parseEvent(block: string): SseEvent | null {
  let event = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (data.length === 0) return null;
  const text = data.join('\n');
  try {
    return { event, data: JSON.parse(text) };
  } catch {
    return { event, data: text };
  }
}

function apiError(res: Response, text: string): ApiError {
  const requestId = res.headers.get('x-request-id');
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string; requestId?: string } };
    if (body.error?.code) {
      return new ApiError(
        res.status,
        body.error.code,
        body.error.message ?? '',
        body.error.requestId ?? requestId,
      );
    }
  } catch {
    // not the API's error shape: a proxy or another server answered
  }
  return new ApiError(res.status, `HTTP_${res.status}`, text.slice(0, 200) || res.statusText, requestId);
}

function unreachable(url: string, e: unknown): NetworkError {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message ?? (e as Error).message;
  return new NetworkError(`cannot reach ${url}: ${why}`);
}
