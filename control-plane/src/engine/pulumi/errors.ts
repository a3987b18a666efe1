import { TenantryError } from '../../domain/errors.js';

export type PulumiErrorKind =
  | 'concurrent-update'
  | 'stale-lock'
  | 'account-not-ready'
  | 'transient'
  | 'cancelled'
  | 'provider'
  | 'unknown';

export interface LockHolder {
  path: string;
  user: string;
  host: string;
  pid: number;
  acquiredAt: Date;
}

export interface PulumiErrorClass {
  kind: PulumiErrorKind;
  retryable: boolean;
  /** DIY-backend lock holders, when the message lists them. */
  locks?: LockHolder[];
}

/** Messages the Node SDK maps to ConcurrentUpdateError (sdk/nodejs/automation/errors.ts). */
const CLOUD_CONFLICT = '[409] Conflict: Another update is currently in progress.';
const DIY_CONFLICT = 'the stack is currently locked by';
/** DIY lock lines: `  <path>: created by <user>@<host> (pid <n>) at <RFC 3339 time>`. */
const LOCK_LINE = /^\s*(\S+): created by ([^@\s]+)@(\S+) \(pid (\d+)\) at (\S+)\s*$/gm;

const TRANSIENT = [
  /\bUNAVAILABLE\b/,
  /ECONNRESET|ETIMEDOUT|EAI_AGAIN|socket hang up/,
  /context deadline exceeded/i,
  /\b(Throttling|ThrottlingException|RequestLimitExceeded|TooManyRequestsException)\b/,
  /rate exceeded/i,
  /\b(500|502|503|504) (Internal Server Error|Bad Gateway|Service Unavailable|Gateway Timeout)\b/,
];

/** A freshly vended account is eventually consistent: assuming its role fails for a while (org-formation #192). */
const ACCOUNT_NOT_READY = [
  /AssumeRole.*(AccessDenied|is not authorized to perform: sts:AssumeRole)/s,
  /InvalidClientTokenId.*(not valid|security token)/s,
  /OptInRequired/,
];

export function parseLockHolders(message: string): LockHolder[] {
  const out: LockHolder[] = [];
  for (const m of message.matchAll(LOCK_LINE)) {
    const acquiredAt = new Date(m[5] ?? '');
    if (Number.isNaN(acquiredAt.getTime())) continue;
    out.push({ path: m[1] ?? '', user: m[2] ?? '', host: m[3] ?? '', pid: Number(m[4]), acquiredAt });
  }
  return out;
}

export interface StaleLockOptions {
  now?: Date;
  /** A lock older than this is stale: no Tenantry operation runs that long (our own timeout is shorter). */
  maxAgeMs: number;
  /** This host's name, and whether a pid is alive here: a dead local holder is stale at once. */
  hostname?: string;
  isPidAlive?: (pid: number) => boolean;
}

/**
 * A lock is stale when every holder is older than maxAgeMs, or is a process of this host
 * that no longer exists. A 409 cannot tell a running update from an orphaned lock
 * (pulumi#2073), so a stale verdict is a hint for the caller, which must also hold the
 * tenant's Postgres lease before it runs `pulumi cancel`.
 */
export function isStaleLock(locks: LockHolder[], opts: StaleLockOptions): boolean {
  if (locks.length === 0) return false;
  const now = (opts.now ?? new Date()).getTime();
  return locks.every(
    (l) =>
      now - l.acquiredAt.getTime() > opts.maxAgeMs ||
      (opts.hostname !== undefined && l.host === opts.hostname && opts.isPidAlive?.(l.pid) === false),
  );
}

function messageOf(e: unknown): string {
  if (e instanceof Error) {
    const r = e as Error & { commandResult?: { stderr?: string } };
    return `${e.message}\n${r.commandResult?.stderr ?? ''}`;
  }
  return String(e);
}

export function classifyPulumiError(
  e: unknown,
  stale: StaleLockOptions = { maxAgeMs: 60 * 60_000 },
): PulumiErrorClass {
  const name = e instanceof Error ? e.name : '';
  const text = messageOf(e);
  if (name === 'AbortError') return { kind: 'cancelled', retryable: false };
  if (name === 'ConcurrentUpdateError' || text.includes(CLOUD_CONFLICT) || text.includes(DIY_CONFLICT)) {
    const locks = parseLockHolders(text);
    if (isStaleLock(locks, stale)) return { kind: 'stale-lock', retryable: true, locks };
    return { kind: 'concurrent-update', retryable: true, ...(locks.length > 0 ? { locks } : {}) };
  }
  if (ACCOUNT_NOT_READY.some((re) => re.test(text))) return { kind: 'account-not-ready', retryable: true };
  if (TRANSIENT.some((re) => re.test(text))) return { kind: 'transient', retryable: true };
  if (name === 'CommandError' || /\berror: /.test(text)) return { kind: 'provider', retryable: false };
  return { kind: 'unknown', retryable: false };
}

/** The domain error a failed Pulumi operation becomes; the message carries no stderr (it may hold secrets). */
export function toTenantryError(
  e: unknown,
  context: Record<string, unknown>,
  stale?: StaleLockOptions,
): TenantryError {
  const c = classifyPulumiError(e, stale);
  const messages: Record<PulumiErrorKind, string> = {
    'concurrent-update': 'another update of this stack is in progress',
    'stale-lock': 'the stack is locked by an operation that no longer runs',
    'account-not-ready': 'the new account is not ready to assume its role yet',
    transient: 'a transient infrastructure error interrupted the operation',
    cancelled: 'the operation was cancelled',
    provider: 'a resource provider rejected the change',
    unknown: 'the Pulumi operation failed',
  };
  return new TenantryError('PROVIDER_FAILED', messages[c.kind], {
    retryable: c.retryable,
    context: { ...context, pulumiErrorKind: c.kind },
    cause: e,
  });
}
