import { describe, expect, it } from 'vitest';
import { isConnectionUnavailable, isTransient } from '../../control-plane/src/lib/transient.js';

/**
 * Pins the one classifier of transient failures. `unavailable` is what the HTTP layer answers 503
 * for; `transient` is what the executor retries (for errors that are not the domain's own). Rows
 * marked "used to differ" are where the executor's and the HTTP layer's copies of these rules
 * disagreed before they were merged.
 */
const err = (props: Record<string, unknown>, message = 'x') => Object.assign(new Error(message), props);
const code = (c: string) => err({ code: c });

const CASES: [label: string, error: unknown, unavailable: boolean, transient: boolean][] = [
  // socket and resolver errno codes
  ['ECONNREFUSED', code('ECONNREFUSED'), true, true],
  ['ECONNRESET', code('ECONNRESET'), true, true],
  ['ETIMEDOUT', code('ETIMEDOUT'), true, true],
  ['EPIPE', code('EPIPE'), true, true],
  ['EAI_AGAIN', code('EAI_AGAIN'), true, true],
  ['EHOSTUNREACH (used to differ)', code('EHOSTUNREACH'), true, true],
  ['ENETUNREACH (used to differ)', code('ENETUNREACH'), true, true],
  ['ENOTFOUND (used to differ)', code('ENOTFOUND'), true, true],
  // SQLSTATE class 08, connection exception
  ['08000 connection_exception', code('08000'), true, true],
  ['08001 sqlclient_unable_to_establish_sqlconnection', code('08001'), true, true],
  ['08003 connection_does_not_exist', code('08003'), true, true],
  ['08006 connection_failure', code('08006'), true, true],
  ['08004 server rejected the connection (used to differ)', code('08004'), true, true],
  ['08P01 protocol_violation (used to differ)', code('08P01'), true, true],
  // the server shutting down, starting up or full
  ['57P01 admin_shutdown', code('57P01'), true, true],
  ['57P02 crash_shutdown', code('57P02'), true, true],
  ['57P03 cannot_connect_now', code('57P03'), true, true],
  ['53300 too_many_connections', code('53300'), true, true],
  // lost connections, as node-postgres and pg-pool say it
  ['a connection lost mid-query', err({}, 'Connection terminated unexpectedly'), true, true],
  ['a pool connect timeout', err({}, 'timeout exceeded when trying to connect'), true, true],
  [
    'a lost connection inside a wrapped message (used to differ)',
    err({}, 'create role: Connection terminated unexpectedly'),
    true,
    true,
  ],
  // a multi-address connect that failed everywhere
  ['an AggregateError of refusals (used to differ)', new AggregateError([code('ECONNREFUSED')]), true, true],
  [
    'an AggregateError with one unreachable address among others (used to differ)',
    new AggregateError([code('23505'), code('EHOSTUNREACH')]),
    true,
    true,
  ],
  ['an AggregateError of a deadlock', new AggregateError([code('40P01')]), false, true],
  ['an AggregateError of bugs', new AggregateError([new TypeError('x'), code('42601')]), false, false],
  // races a re-run gets past: transient, but the database is available
  ['55006 object_in_use', code('55006'), false, true],
  ['40001 serialization_failure', code('40001'), false, true],
  ['40P01 deadlock_detected', code('40P01'), false, true],
  ['55P03 lock_not_available', code('55P03'), false, true],
  ['a catalog tuple concurrently updated', err({}, 'tuple concurrently updated'), false, true],
  ['a catalog tuple concurrently deleted', err({}, 'tuple concurrently deleted'), false, true],
  [
    'a publication dropped under a write (XX000)',
    err({ code: 'XX000' }, 'cache lookup failed for publication 25950'),
    false,
    true,
  ],
  // other internal errors are not races a re-run gets past
  [
    'XX000 cache lookup failed for a type',
    err({ code: 'XX000' }, 'cache lookup failed for type 1234'),
    false,
    false,
  ],
  // failures a retry does not fix
  ['23505 unique_violation', code('23505'), false, false],
  ['42601 syntax_error', code('42601'), false, false],
  ['42501 insufficient_privilege', code('42501'), false, false],
  ['22001 string_data_right_truncation', code('22001'), false, false],
  ['a plain bug', new TypeError('cannot read properties of undefined'), false, false],
  ['a non-error string naming an errno', 'ECONNREFUSED', false, false],
  ['a non-error string naming a lost connection', 'Connection terminated', false, false],
  ['null', null, false, false],
  ['undefined', undefined, false, false],
  ['a numeric code', err({ code: 8006 }), false, false],
];

describe('transient failures', () => {
  it.each(CASES)('%s: unavailable %s, transient %s', (_label, e, unavailable, transient) => {
    expect(isConnectionUnavailable(e)).toBe(unavailable);
    expect(isTransient(e)).toBe(transient);
  });

  it('counts everything unavailable as transient', () => {
    for (const [label, e] of CASES) {
      if (isConnectionUnavailable(e)) expect(isTransient(e), label).toBe(true);
    }
  });
});
