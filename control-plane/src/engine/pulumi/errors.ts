import { RETRYABLE_FAILURE_REASONS, TERMINAL_FAILURE_REASONS } from '../../aws/organizations.js';
import { TenantryError } from '../../domain/errors.js';

export type PulumiErrorKind =
  | 'concurrent-update'
  | 'stale-lock'
  | 'account-not-ready'
  | 'account-creation-failed'
  | 'transient'
  | 'timeout'
  | 'child-crashed'
  | 'cancelled'
  | 'stack-missing'
  | 'cli-version'
  | 'pending-operations'
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
  /** Account tier: the `CreateAccount` failure reason the provider reported (`EMAIL_ALREADY_EXISTS`, …). */
  reason?: string;
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

/**
 * The provider waits for `CreateAccount` and reports a FAILED request as
 * `… unexpected state 'FAILED', wanted target 'SUCCEEDED'. last error: EMAIL_ALREADY_EXISTS`.
 */
const CREATE_ACCOUNT_REASON = /last error: ([A-Z][A-Z0-9_]+)\b/;
/** Other waiters also say `last error:`; only an account creation's reason is read as one. */
const ACCOUNT_CONTEXT = /Organizations Account|CreateAccount|aws:organizations\/account:Account/i;
/** Organizations' own error for a conflicting change (CreateAccount itself, before any request id). */
const ORGANIZATIONS_CONFLICT = /ConcurrentModificationException/;

/** Names the runner gives a child that timed out or died without a result (runner.ts). */
export const TIMEOUT_ERROR = 'TimeoutError';
export const CHILD_CRASH_ERROR = 'ChildCrashError';
/** The child's own refusal to run on a CLI or aws plugin other than the pinned ones (operation.ts). */
export const CLI_VERSION_ERROR = 'PulumiVersionError';
/** A killed run left pending creations that are not known to be safe to drop (operation.ts). */
export const PENDING_OPERATIONS_ERROR = 'PendingOperationsError';

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

/**
 * What a failed Pulumi run was, and whether another attempt can help. Only an explicit
 * cancellation is final among the run-level failures: a timeout or a crashed child is a
 * transient interruption (the next attempt converges the same stack), while a stale lock
 * needs an operator (`pulumi cancel`, under the tenant's lease), so retrying it is pointless.
 */
export function classifyPulumiError(
  e: unknown,
  stale: StaleLockOptions = { maxAgeMs: 60 * 60_000 },
): PulumiErrorClass {
  const name = e instanceof Error ? e.name : '';
  const text = messageOf(e);
  if (name === 'AbortError') return { kind: 'cancelled', retryable: false };
  if (name === TIMEOUT_ERROR) return { kind: 'timeout', retryable: true };
  if (name === CHILD_CRASH_ERROR) return { kind: 'child-crashed', retryable: true };
  if (name === 'StackNotFoundError') return { kind: 'stack-missing', retryable: false };
  if (name === CLI_VERSION_ERROR) return { kind: 'cli-version', retryable: false };
  if (name === PENDING_OPERATIONS_ERROR) return { kind: 'pending-operations', retryable: false };
  if (name === 'ConcurrentUpdateError' || text.includes(CLOUD_CONFLICT) || text.includes(DIY_CONFLICT)) {
    const locks = parseLockHolders(text);
    if (isStaleLock(locks, stale)) return { kind: 'stale-lock', retryable: false, locks };
    return { kind: 'concurrent-update', retryable: true, ...(locks.length > 0 ? { locks } : {}) };
  }
  const reason = ACCOUNT_CONTEXT.test(text) ? CREATE_ACCOUNT_REASON.exec(text)?.[1] : undefined;
  if (reason !== undefined && TERMINAL_FAILURE_REASONS.has(reason)) {
    return { kind: 'account-creation-failed', retryable: false, reason };
  }
  if (reason !== undefined && RETRYABLE_FAILURE_REASONS.has(reason)) {
    return { kind: 'transient', retryable: true, reason };
  }
  if (ORGANIZATIONS_CONFLICT.test(text)) return { kind: 'transient', retryable: true };
  if (ACCOUNT_NOT_READY.some((re) => re.test(text))) return { kind: 'account-not-ready', retryable: true };
  if (TRANSIENT.some((re) => re.test(text))) return { kind: 'transient', retryable: true };
  if (reason !== undefined) return { kind: 'account-creation-failed', retryable: false, reason };
  if (name === 'CommandError' || /\berror: /.test(text)) return { kind: 'provider', retryable: false };
  return { kind: 'unknown', retryable: false };
}

/** `<path> (user@host pid N since <time>)`: what an operator needs to find and clear a lock. */
function describeLocks(locks: LockHolder[]): string {
  return locks
    .map((l) => `${l.path} (${l.user}@${l.host} pid ${l.pid} since ${l.acquiredAt.toISOString()})`)
    .join('; ');
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
    // Lock files name a path, a user, a host, a pid and a time: no credentials, and what the operator needs.
    'stale-lock': `the stack is locked by an operation that no longer runs: ${describeLocks(c.locks ?? [])}; confirm nothing runs it, then clear the lock with \`pulumi cancel\` and resume the operation`,
    'account-not-ready': 'the new account is not ready to assume its role yet',
    'account-creation-failed': `CreateAccount failed: ${c.reason ?? 'UNKNOWN'}${c.reason === 'EMAIL_ALREADY_EXISTS' ? ' (root emails are never reusable; this tenant needs a new one)' : ''}`,
    transient: `a transient infrastructure error interrupted the operation${c.reason ? ` (${c.reason})` : ''}`,
    timeout: 'the Pulumi operation timed out; it was cancelled and will be retried',
    'child-crashed': 'the Pulumi process ended without a result; the operation will be retried',
    cancelled: 'the operation was cancelled',
    'stack-missing': 'the tenant has no stack in the Pulumi backend',
    // Written by operation.ts from the CLI's and plugin's versions alone: nothing secret in it.
    'cli-version':
      c.kind === 'cli-version' && e instanceof Error
        ? e.message
        : 'the Pulumi CLI or aws plugin is not the version Tenantry runs',
    // Written by operation.ts: resource URNs and what to do, nothing secret.
    'pending-operations':
      c.kind === 'pending-operations' && e instanceof Error
        ? e.message
        : 'a killed run left pending operations an operator must resolve',
    provider: 'a resource provider rejected the change',
    unknown: 'the Pulumi operation failed',
  };
  return new TenantryError('PROVIDER_FAILED', messages[c.kind], {
    retryable: c.retryable,
    context: {
      ...context,
      pulumiErrorKind: c.kind,
      ...(c.reason ? { reason: c.reason } : {}),
      ...(c.kind === 'stale-lock' && c.locks
        ? {
            locks: c.locks.map((l) => ({ ...l, acquiredAt: l.acquiredAt.toISOString() })),
          }
        : {}),
    },
    cause: e,
  });
}

/** Whether a process of this host still exists (EPERM: it exists, owned by someone else). */
export function isPidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
