/**
 * What the data-plane client refuses or gives up on, each with a stable code. Misuse (`MISUSE_*`) is a
 * bug in the application: it is thrown at once, never retried.
 */
export const CLIENT_ERROR_CODES = [
  /** A statement through a unit's handle after the unit ended (a handle kept outside `withTenant`). */
  'MISUSE_OUTSIDE_UNIT',
  /** `withTenant` for another tenant inside a unit of work: one unit is one tenant's transaction. */
  'MISUSE_NESTED_TENANT',
  /** BEGIN, COMMIT, ROLLBACK and the like inside a unit: the client owns the transaction. */
  'MISUSE_TRANSACTION_CONTROL',
  /** A statement naming the tenant setting: only the client sets it, for the unit's transaction. */
  'MISUSE_TENANT_SETTING',
  /** The control plane knows no such tenant (or it is not active). */
  'TENANT_NOT_FOUND',
  /** The tenant's descriptor (or its password) could not be read, and no earlier one is cached. */
  'DESCRIPTOR_UNAVAILABLE',
  /** The client cannot connect as configured (a descriptor without a password, and no password source). */
  'MISCONFIGURED',
  /** A unit kept meeting a retryable condition (a freeze, a refused login) past its retry budget. */
  'RETRIES_EXHAUSTED',
  /** The connection was lost while COMMIT was in flight: whether the unit committed is unknown. */
  'COMMIT_OUTCOME_UNKNOWN',
] as const;
export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];

export class TenantryClientError extends Error {
  override name = 'TenantryClientError';
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    opts: { cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
  }
}

const codeOf = (e: unknown): string | undefined => {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
};

/** A write refused because the placement is frozen or retired (a promotion): re-read the descriptor, retry. */
export const isFrozen = (e: unknown): boolean => codeOf(e) === '25006';

/** A login refused: its password rotated (28P01) or its login retired (28000). */
export const isLoginRefused = (e: unknown): boolean => codeOf(e) === '28P01' || codeOf(e) === '28000';

/**
 * The session went away before the unit committed (terminated by an admin, a restart, a lost socket):
 * nothing of the unit was committed, so it may run again. Lost during COMMIT is another matter (see
 * COMMIT_OUTCOME_UNKNOWN).
 */
export const isSessionLost = (e: unknown): boolean => {
  const c = codeOf(e);
  if (c === '57P01' || c === '57P02' || c === '57P03' || (c !== undefined && /^08/.test(c))) return true;
  if (c === 'ECONNRESET' || c === 'ECONNREFUSED' || c === 'EPIPE') return true;
  return /Connection terminated|Client has encountered a connection error/i.test(
    String((e as { message?: unknown } | null)?.message ?? ''),
  );
};

/** A transaction that lost a race and succeeds when run again: serialization failure, deadlock. */
export const isRace = (e: unknown): boolean => codeOf(e) === '40001' || codeOf(e) === '40P01';
