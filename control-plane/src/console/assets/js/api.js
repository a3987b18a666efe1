// The console's one way to the API: the public routes, with the token the user signed in with.

const TOKEN_KEY = 'tenantry.token';

/** The token lives in sessionStorage: it is gone when the tab closes, and never goes in a URL. */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** An API error as the API states it: `{ error: { code, message, requestId } }`, plus the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message, requestId = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

async function errorOf(res) {
  const body = await res.json().catch(() => null);
  const e = body?.error;
  if (e?.code) return new ApiError(res.status, e.code, e.message, e.requestId ?? null);
  return new ApiError(
    res.status,
    `HTTP_${res.status}`,
    `the server answered ${res.status} without an error body`,
  );
}

function headersWith(extra) {
  const headers = { accept: 'application/json', ...extra };
  const t = token.get();
  if (t) headers.authorization = `Bearer ${t}`;
  return headers;
}

/** A 401 means the token is unknown or revoked: the app signs the user out and says why. */
function checked(err) {
  if (err.status === 401) window.dispatchEvent(new CustomEvent('tenantry:unauthenticated', { detail: err }));
  return err;
}

async function request(method, path, { body, headers, signal } = {}) {
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: headersWith(body === undefined ? headers : { 'content-type': 'application/json', ...headers }),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      signal,
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'NETWORK_ERROR', `the control plane did not answer: ${e.message}`);
  }
  if (!res.ok) throw checked(await errorOf(res));
  return res;
}

/** Calls a route; resolves to its JSON body, or rejects with an ApiError (network failures included). */
export async function api(method, path, options = {}) {
  const res = await request(method, path, options);
  return res.status === 204 ? null : res.json();
}

/** GETs a route that answers text (GET /metrics). */
export async function apiText(path, options = {}) {
  return (await request('GET', path, options)).text();
}

/**
 * GETs a route that answers a file (an export's archive): the Authorization header goes with it, so
 * it is fetched here, not by a link. Resolves to the file as a Blob and the name the server gave it.
 */
export async function apiBlob(path, options = {}) {
  const res = await request('GET', path, { ...options, headers: { accept: 'application/gzip' } });
  const disposition = res.headers.get('content-disposition') ?? '';
  const filename = /filename="([^"]+)"/.exec(disposition)?.[1] ?? path.split('/').at(-2) ?? 'download';
  return { blob: await res.blob(), filename };
}

/** A query string from an object, leaving out empty values; an array repeats its key. */
export const qs = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const x of Array.isArray(v) ? v : [v]) if (x !== undefined && x !== null && x !== '') q.append(k, x);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
};

/**
 * Follows an operation's server-sent events (GET /v1/operations/{id}/events): the same stream the CLI
 * reads. EventSource cannot send an Authorization header, so this reads the stream with fetch and
 * parses its `event:`/`data:` lines. Calls `onEvent(name, data)` per event; resolves when the stream
 * ends (after `end`, or when the server closes it), rejects with an ApiError if it cannot start.
 */
export async function streamEvents(operationId, onEvent, signal) {
  const res = await request('GET', `/v1/operations/${encodeURIComponent(operationId)}/events`, {
    headers: { accept: 'text/event-stream' },
    signal,
  });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length > 0) onEvent(event, JSON.parse(data.join('\n')));
    }
  }
}

/** A random Idempotency-Key. crypto.randomUUID needs a secure context; getRandomValues does not. */
export function newIdempotencyKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return `ui-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
}
