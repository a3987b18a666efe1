import { describe, expect, it } from 'vitest';
import { TERMINAL_FAILURE_REASONS } from '../../control-plane/src/aws/organizations.js';
import { tenantStackName } from '../../control-plane/src/domain/naming.js';
import {
  CHILD_CRASH_ERROR,
  classifyPulumiError,
  isPidAlive,
  isStaleLock,
  parseLockHolders,
  TIMEOUT_ERROR,
  toTenantryError,
} from '../../control-plane/src/engine/pulumi/errors.js';
import { fullyQualifiedStackName } from '../../control-plane/src/engine/pulumi/naming.js';

function named(name: string, message: string, stderr = ''): Error {
  const e = new Error(message) as Error & { commandResult: { stderr: string } };
  e.name = name;
  e.commandResult = { stderr };
  return e;
}

const STACK = tenantStackName('acme');
/** Where a DIY backend keeps a lock of the stack. */
const LOCK_PATH = `s3://tenantry-state/.pulumi/locks/${fullyQualifiedStackName('acme')}/5d4c.json`;
const DIY_LOCK = `error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock file with \`pulumi cancel\`.
  ${LOCK_PATH}: created by tenantry@worker-1 (pid 4242) at 2025-01-01T10:00:00Z`;

describe('classifyPulumiError', () => {
  it('treats ConcurrentUpdateError (Pulumi Cloud 409) as a retryable concurrent update', () => {
    const e = named(
      'ConcurrentUpdateError',
      'code: 255',
      'error: [409] Conflict: Another update is currently in progress.',
    );
    expect(classifyPulumiError(e)).toEqual({ kind: 'concurrent-update', retryable: true });
  });

  it('parses DIY lock holders and calls a fresh lock a concurrent update', () => {
    const e = named('ConcurrentUpdateError', 'code: 255', DIY_LOCK);
    const c = classifyPulumiError(e, { maxAgeMs: 3_600_000, now: new Date('2025-01-01T10:05:00Z') });
    expect(c.kind).toBe('concurrent-update');
    expect(c.locks).toEqual([
      {
        path: LOCK_PATH,
        user: 'tenantry',
        host: 'worker-1',
        pid: 4242,
        acquiredAt: new Date('2025-01-01T10:00:00Z'),
      },
    ]);
  });

  it('detects a stale lock by age, or by a dead holder on this host, and does not retry it', () => {
    const e = named('ConcurrentUpdateError', 'code: 255', DIY_LOCK);
    expect(
      classifyPulumiError(e, { maxAgeMs: 3_600_000, now: new Date('2025-01-01T12:00:00Z') }),
    ).toMatchObject({ kind: 'stale-lock', retryable: false });
    const locks = parseLockHolders(DIY_LOCK);
    const recent = { maxAgeMs: 3_600_000, now: new Date('2025-01-01T10:01:00Z') };
    expect(isStaleLock(locks, { ...recent, hostname: 'worker-1', isPidAlive: () => false })).toBe(true);
    expect(isStaleLock(locks, { ...recent, hostname: 'worker-1', isPidAlive: () => true })).toBe(false);
    expect(isStaleLock(locks, { ...recent, hostname: 'worker-2', isPidAlive: () => false })).toBe(false);
    expect(isStaleLock([], recent)).toBe(false);
  });

  it('treats a provider rejection as terminal', () => {
    const e = named(
      'CommandError',
      'code: 255',
      'error: creating RDS DB Instance (tenantry-acme): operation error RDS: CreateDBInstance, https response error StatusCode: 400, api error InvalidParameterCombination: Cannot find version 99 for postgres',
    );
    expect(classifyPulumiError(e)).toEqual({ kind: 'provider', retryable: false });
  });

  it('retries gRPC unavailability and throttling', () => {
    expect(
      classifyPulumiError(named('CommandError', 'code: 1', '14 UNAVAILABLE: Connection dropped')).retryable,
    ).toBe(true);
    expect(
      classifyPulumiError(
        named(
          'CommandError',
          'code: 255',
          'error: operation error KMS: CreateKey, ThrottlingException: Rate exceeded',
        ),
      ),
    ).toEqual({ kind: 'transient', retryable: true });
  });

  it('retries an AssumeRole denial in a just-vended account', () => {
    const e = named(
      'CommandError',
      'code: 255',
      'error: configuring AWS provider: operation error STS: AssumeRole, https response error StatusCode: 403, api error AccessDenied: User is not authorized to perform: sts:AssumeRole',
    );
    expect(classifyPulumiError(e)).toEqual({ kind: 'account-not-ready', retryable: true });
  });

  it('does not retry a cancelled operation', () => {
    const e = new Error('aborted');
    e.name = 'AbortError';
    expect(classifyPulumiError(e)).toEqual({ kind: 'cancelled', retryable: false });
  });

  it('explains a drift check refused on an old CLI, and a stack that does not exist, without retrying', () => {
    const old = named(
      'PulumiVersionError',
      'drift checks need the Pulumi CLI 3.229.0 or newer on a DIY backend (pulumi#22385); found 3.200.0',
    );
    const t = toTenantryError(old, { stack: STACK });
    expect(t).toMatchObject({ retryable: false, context: { pulumiErrorKind: 'cli-version' } });
    expect(t.message).toContain('found 3.200.0');
    const missing = named('StackNotFoundError', `code: 255\nstderr: error: no stack named '${STACK}' found`);
    expect(classifyPulumiError(missing)).toEqual({ kind: 'stack-missing', retryable: false });
  });

  it('retries a timed-out run and a child that died without a result', () => {
    expect(classifyPulumiError(named(TIMEOUT_ERROR, 'timed out after 1000 ms'))).toEqual({
      kind: 'timeout',
      retryable: true,
    });
    expect(classifyPulumiError(named(CHILD_CRASH_ERROR, 'pulumi child exited (137)'))).toEqual({
      kind: 'child-crashed',
      retryable: true,
    });
  });
});

/** What the AWS provider reports when Organizations answers a CreateAccount request with FAILED. */
const createAccountFailed = (reason: string) =>
  named(
    'CommandError',
    'code: 255',
    `error: creating AWS Organizations Account (tenantry-acme): waiting for AWS Organizations Account create (car-0123456789abcdef0123456789abcdef): unexpected state 'FAILED', wanted target 'SUCCEEDED'. last error: ${reason}`,
  );

describe('CreateAccount failures of the account tier', () => {
  it.each([...TERMINAL_FAILURE_REASONS])('fails for good on %s, with the reason in the message', (reason) => {
    const c = classifyPulumiError(createAccountFailed(reason));
    expect(c).toEqual({ kind: 'account-creation-failed', retryable: false, reason });
    const t = toTenantryError(createAccountFailed(reason), { stack: STACK });
    expect(t.retryable).toBe(false);
    expect(t.message).toContain(reason);
    expect(t.context).toMatchObject({ pulumiErrorKind: 'account-creation-failed', reason });
  });

  it('retries CONCURRENT_ACCOUNT_MODIFICATION, a ConcurrentModificationException and throttling', () => {
    expect(classifyPulumiError(createAccountFailed('CONCURRENT_ACCOUNT_MODIFICATION'))).toEqual({
      kind: 'transient',
      retryable: true,
      reason: 'CONCURRENT_ACCOUNT_MODIFICATION',
    });
    const conflict = named(
      'CommandError',
      'code: 255',
      "error: creating AWS Organizations Account (tenantry-acme): operation error Organizations: CreateAccount, https response error StatusCode: 400, api error ConcurrentModificationException: AWS Organizations can't complete your request because it conflicts with another attempt to modify the same entity.",
    );
    expect(classifyPulumiError(conflict).retryable).toBe(true);
    const throttled = named(
      'CommandError',
      'code: 255',
      "error: creating AWS Organizations Account (tenantry-acme): operation error Organizations: CreateAccount, api error TooManyRequestsException: AWS Organizations can't complete your request because another request is already in progress.",
    );
    expect(classifyPulumiError(throttled)).toEqual({ kind: 'transient', retryable: true });
  });

  it('reads a `last error:` as an account failure only in an account creation', () => {
    const rds = named(
      'CommandError',
      'code: 255',
      "error: waiting for RDS DB Instance (tenantry-acme) create: unexpected state 'failed', wanted target 'available'. last error: KMS_KEY_DISABLED",
    );
    expect(classifyPulumiError(rds)).toEqual({ kind: 'provider', retryable: false });
  });
});

describe('toTenantryError', () => {
  it('stores a stale lock as terminal, with the lock holders in the message and context', () => {
    const e = named('ConcurrentUpdateError', 'code: 255', DIY_LOCK);
    const t = toTenantryError(
      e,
      { stack: STACK },
      {
        maxAgeMs: 1_800_000,
        now: new Date('2025-01-01T10:05:00Z'),
        hostname: 'worker-1',
        isPidAlive: () => false,
      },
    );
    expect(t.retryable).toBe(false);
    expect(t.message).toContain(`${LOCK_PATH} (tenantry@worker-1 pid 4242 since 2025-01-01T10:00:00.000Z)`);
    expect(t.message).toContain('pulumi cancel');
    expect(t.message.length).toBeLessThan(500); // the executor keeps the first 500 characters
    expect(t.context).toMatchObject({
      pulumiErrorKind: 'stale-lock',
      locks: [{ host: 'worker-1', pid: 4242, acquiredAt: '2025-01-01T10:00:00.000Z' }],
    });
  });

  it('keeps stderr (which may hold secrets) out of the message and records the kind', () => {
    const e = named('CommandError', 'code: 255', 'error: password=hunter2 rejected');
    const t = toTenantryError(e, { tenantId: 't1', step: 'stack-up' });
    expect(t.code).toBe('PROVIDER_FAILED');
    expect(t.retryable).toBe(false);
    expect(t.message).not.toContain('hunter2');
    expect(t.context).toEqual({ tenantId: 't1', step: 'stack-up', pulumiErrorKind: 'provider' });
  });
});

describe('isPidAlive', () => {
  it('knows this process is alive and an unused pid is not', () => {
    expect(isPidAlive(process.pid)).toBe(true);
    expect(isPidAlive(2 ** 22 + 1)).toBe(false); // above Linux's pid_max
    expect(isPidAlive(0)).toBe(false);
  });
});
