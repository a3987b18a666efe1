import { describe, expect, it } from 'vitest';
import { tenantObjectName, tenantSecretName } from '../../control-plane/src/domain/naming.js';
import {
  type ObservedFleet,
  type ObservedTable,
  parseGuardStates,
} from '../../control-plane/src/drift/catalog.js';
import { CredentialChecker, type Login, verifierHash } from '../../control-plane/src/drift/credentials.js';
import { diffLocal } from '../../control-plane/src/drift/diff.js';
import {
  parseScramVerifier,
  scramMatches,
  scramVerifier,
  scramVerifierAsync,
} from '../../control-plane/src/providers/postgres/scram.js';
import type { Queryable } from '../../control-plane/src/providers/postgres/sql.js';
import { localLayout } from '../helpers/drift-layout.js';

describe('SCRAM verifiers', () => {
  it('recomputes StoredKey from a password and the verifier salt, and tells the right password', async () => {
    const v = scramVerifier('correct horse');
    expect(parseScramVerifier(v)).toMatchObject({ iterations: 4096 });
    expect(await scramMatches('correct horse', v)).toBe(true);
    expect(await scramMatches('correct horse ', v)).toBe(false);
    // Another verifier of the same password (another salt) matches too.
    expect(await scramMatches('correct horse', scramVerifier('correct horse'))).toBe(true);
  });

  it('makes the same kind of verifier on the thread pool, each with its own salt', async () => {
    const [a, b] = await Promise.all([
      scramVerifierAsync('correct horse'),
      scramVerifierAsync('correct horse'),
    ]);
    expect(parseScramVerifier(a)).toMatchObject({ iterations: 4096 });
    expect(a).not.toBe(b);
    expect(await scramMatches('correct horse', a)).toBe(true);
    expect(await scramMatches('correct horse', b)).toBe(true);
    expect(await scramMatches('correct horsE', a)).toBe(false);
  });

  it('does not take an md5 hash or a malformed value for a verifier', async () => {
    expect(parseScramVerifier('md5c4ca4238a0b923820dcc509a6f75849b')).toBeNull();
    expect(parseScramVerifier('SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB')).toBeNull(); // keys too short
    expect(await scramMatches('x', 'md5c4ca4238a0b923820dcc509a6f75849b')).toBe(false);
  });
});

/** The control database's drift_verified_credentials, in memory: the two statements the checker runs. */
function fakeControl(rows: Map<string, { version: number; hash: string }>): Queryable & { writes: number } {
  const q = {
    writes: 0,
    async query(text: string, params: unknown[] = []) {
      if (text.includes('SELECT role_name')) {
        const wanted = new Set(params[0] as string[]);
        const out = [...rows]
          .filter(([role]) => wanted.has(role))
          .map(([role, r]) => ({ role, version: r.version, hash: r.hash }));
        return { rows: out as never[], rowCount: out.length };
      }
      if (text.startsWith('INSERT INTO drift_verified_credentials')) {
        q.writes++;
        const [roles, , versions, hashes] = params as [string[], string[], number[], string[]];
        roles.forEach((role, i) => {
          rows.set(role, { version: versions[i] as number, hash: hashes[i] as string });
        });
        return { rows: [], rowCount: roles.length };
      }
      throw new Error(`unexpected statement ${text}`);
    },
  };
  return q;
}

describe('checking logins against their stored secrets', () => {
  /** Three tenants' logins, each with its stored secret and the password that secret holds. */
  const slugs = ['acme', 'beta', 'gamma'];
  const [A, B, C] = slugs.map(tenantObjectName) as [string, string, string];
  const secrets = new Map(slugs.map((slug) => [tenantObjectName(slug), tenantSecretName(slug)]));
  const secretOf = (role: string) => secrets.get(role) as string;
  const passwords = new Map([
    [secretOf(A), 'pw-a'],
    [secretOf(B), 'pw-b'],
    [secretOf(C), 'pw-c'],
  ]);
  const setup = (
    verifiers: Map<string, string | null>,
    stored = new Map<string, { version: number; hash: string }>(),
    budget = 10,
  ) => {
    const asked: string[] = [];
    const control = fakeControl(stored);
    const checker = new CredentialChecker(
      control,
      {
        getSecret: async (name: string) => {
          asked.push(name);
          return { ref: name, version: 1, value: { password: passwords.get(name) } };
        },
      },
      async (roles) =>
        new Map(roles.filter((r) => verifiers.has(r)).map((r) => [r, verifiers.get(r) ?? null])),
      budget,
    );
    const logins = (): Login[] =>
      [...verifiers].map(([role, v]) => ({
        role,
        secretName: secretOf(role),
        verifierHash: v === null ? null : verifierHash(v),
      }));
    const versions = new Map([...verifiers.keys()].map((r) => [secretOf(r), 1]));
    return { checker, asked, control, logins, versions };
  };

  it('derives keys once per verifier and secret version, then answers from what it kept', async () => {
    const verifiers = new Map<string, string | null>([
      [A, scramVerifier('pw-a')],
      [B, scramVerifier('changed-by-the-tenant')],
      [C, null],
    ]);
    const t = setup(verifiers);
    const first = await t.checker.check(t.logins(), t.versions);
    expect(Object.fromEntries(first.statuses)).toEqual({
      [A]: 'ok',
      [B]: 'differs',
      [C]: 'none',
    });
    expect(t.asked.sort()).toEqual([secretOf(A), secretOf(B)].sort());
    expect(t.control.writes).toBe(1); // the match is stored, the mismatch is not
    t.asked.length = 0;
    const again = await t.checker.check(t.logins(), t.versions);
    expect(Object.fromEntries(again.statuses)).toEqual(Object.fromEntries(first.statuses));
    expect(t.asked).toEqual([]);
    // A new secret version is checked again.
    const rotated = new Map(t.versions).set(secretOf(A), 2);
    await t.checker.check(t.logins(), rotated);
    expect(t.asked).toEqual([secretOf(A)]);
  });

  it('trusts a match another process stored, for the same verifier and version only', async () => {
    const va = scramVerifier('pw-a');
    const stored = new Map([[A, { version: 1, hash: verifierHash(va) }]]);
    const t = setup(new Map([[A, va]]), stored);
    expect((await t.checker.check(t.logins(), t.versions)).statuses.get(A)).toBe('ok');
    expect(t.asked).toEqual([]);
  });

  it('reports an md5 hash, and a verifier with more iterations than Tenantry writes, without deriving keys', async () => {
    const huge = scramVerifier('pw-b').replace('SCRAM-SHA-256$4096:', 'SCRAM-SHA-256$9999999:');
    const t = setup(
      new Map([
        [A, 'md5c4ca4238a0b923820dcc509a6f75849b'],
        [B, huge],
      ]),
    );
    const r = await t.checker.check(t.logins(), t.versions);
    expect(Object.fromEntries(r.statuses)).toEqual({ [A]: 'md5', [B]: 'differs' });
    expect(t.asked).toEqual([]);
  });

  it('skips a login whose secret is missing: the secret finding covers it', async () => {
    const t = setup(new Map([[A, scramVerifier('pw-a')]]));
    const r = await t.checker.check(t.logins(), new Map());
    expect(r).toEqual({ statuses: new Map(), unchecked: 0 });
  });
});

describe('freeze guard states', () => {
  it('parses name=state items, sharing one empty object for tables with every guard as created', () => {
    expect(parseGuardStates(['tenantry_freeze_ins=D', 'tenantry_freeze_upd=R'])).toEqual({
      tenantry_freeze_ins: 'D',
      tenantry_freeze_upd: 'R',
    });
    expect(parseGuardStates(null)).toBe(parseGuardStates([]));
  });
});

describe('freeze guards that do not fire', () => {
  it('reports disabled and replica-only guards as isolation, an always-firing one as state', () => {
    const layout = localLayout('data', {
      limits: {
        pool: { connectionLimit: 1, statementTimeoutMs: 1, idleInTransactionSessionTimeoutMs: 1 },
        bridge: { connectionLimit: 1, statementTimeoutMs: 1, idleInTransactionSessionTimeoutMs: 1 },
        silo: { connectionLimit: 1, statementTimeoutMs: 1, idleInTransactionSessionTimeoutMs: 1 },
      },
      templateTables: ['users'],
      policyExpression: 'true',
    });
    const table: ObservedTable = {
      schema: layout.poolSchema,
      name: 'users',
      owner: layout.ownerRole,
      rlsEnabled: true,
      rlsForced: true,
      acl: null,
      guards: ['tenantry_freeze_del', 'tenantry_freeze_ins', 'tenantry_freeze_upd'],
      guardStates: { tenantry_freeze_del: 'R', tenantry_freeze_ins: 'A', tenantry_freeze_upd: 'D' },
    };
    const obs: ObservedFleet = {
      roles: new Map(),
      databases: new Map(),
      contents: new Map([
        [
          layout.dataDatabase,
          {
            schemas: new Map([
              [
                layout.poolSchema,
                { name: layout.poolSchema, owner: layout.ownerRole, version: null, acl: [] },
              ],
            ]),
            tables: new Map([[layout.poolSchema, [table]]]),
            policies: new Map(),
            defaultAcls: new Map(),
            frozen: [],
          },
        ],
      ]),
      unreachable: new Map(),
      poolMembers: new Map(),
      secrets: new Map(),
      keys: new Map(),
    };
    const input = { tenants: [], busy: new Set<string>(), known: [], retained: new Map() };
    const found = diffLocal(layout, input, obs).filter((f) => f.field.startsWith('freezeGuardEnabled:'));
    expect(found.map((f) => [f.field, f.desired, f.actual, f.category, f.affects])).toEqual([
      ['freezeGuardEnabled:tenantry_freeze_del', 'enabled', 'enabled replica', 'isolation', ['pool']],
      ['freezeGuardEnabled:tenantry_freeze_ins', 'enabled', 'enabled always', 'state', ['pool']],
      ['freezeGuardEnabled:tenantry_freeze_upd', 'enabled', 'disabled', 'isolation', ['pool']],
    ]);
  });
});
