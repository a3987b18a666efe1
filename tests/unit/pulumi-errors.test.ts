import { describe, expect, it } from 'vitest';
import {
  classifyPulumiError,
  isStaleLock,
  parseLockHolders,
  toTenantryError,
} from '../../control-plane/src/engine/pulumi/errors.js';

function named(name: string, message: string, stderr = ''): Error {
  const e = new Error(message) as Error & { commandResult: { stderr: string } };
  e.name = name;
  e.commandResult = { stderr };
  return e;
}

const DIY_LOCK = `error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock file with \`pulumi cancel\`.
  s3://tenantry-state/.pulumi/locks/organization/tenantry/tenant-acme/5d4c.json: created by tenantry@worker-1 (pid 4242) at 2025-01-01T10:00:00Z`;

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
        path: 's3://tenantry-state/.pulumi/locks/organization/tenantry/tenant-acme/5d4c.json',
        user: 'tenantry',
        host: 'worker-1',
        pid: 4242,
        acquiredAt: new Date('2025-01-01T10:00:00Z'),
      },
    ]);
  });

  it('detects a stale lock by age, or by a dead holder on this host', () => {
    const e = named('ConcurrentUpdateError', 'code: 255', DIY_LOCK);
    expect(classifyPulumiError(e, { maxAgeMs: 3_600_000, now: new Date('2025-01-01T12:00:00Z') }).kind).toBe(
      'stale-lock',
    );
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
});

describe('toTenantryError', () => {
  it('keeps stderr (which may hold secrets) out of the message and records the kind', () => {
    const e = named('CommandError', 'code: 255', 'error: password=hunter2 rejected');
    const t = toTenantryError(e, { tenantId: 't1', step: 'stack-up' });
    expect(t.code).toBe('PROVIDER_FAILED');
    expect(t.retryable).toBe(false);
    expect(t.message).not.toContain('hunter2');
    expect(t.context).toEqual({ tenantId: 't1', step: 'stack-up', pulumiErrorKind: 'provider' });
  });
});
