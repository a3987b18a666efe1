import * as pulumi from '@pulumi/pulumi';
import { describe, expect, it } from 'vitest';
import { type PostgresResourceOutputs, postgresProvider } from '../../stacks/common/postgres-provider.js';

const admin = JSON.stringify({
  host: 'db.internal',
  port: 5432,
  database: 'postgres',
  user: 'admin',
  password: 'x',
});

function outs(kind: PostgresResourceOutputs['kind'], spec: Record<string, unknown>): PostgresResourceOutputs {
  return { kind, admin, spec, generatePassword: false, state: {} };
}

describe('the Postgres dynamic provider', () => {
  it('serializes, capturing pg and node:crypto as requires rather than by value', async () => {
    // This is what the engine does when it registers a dynamic resource; a closure that
    // cannot be serialized must fail here, not in the middle of a tenant's onboarding.
    const sf = await pulumi.runtime.serializeFunction(() => postgresProvider);
    expect(sf.text).toContain('require("pg")');
    expect(sf.text).toContain('require("crypto")');
    // The shared providers travel by value: the SQL is theirs, not a copy.
    expect(sf.text).toContain('CREATE ROLE');
    expect(sf.text).toContain('CREATE SCHEMA IF NOT EXISTS');
    expect(sf.text.length).toBeLessThan(200_000);
  });

  it('rejects an unknown kind and a missing admin connection at check time', async () => {
    const check = postgresProvider.check;
    if (!check) throw new Error('check is not implemented');
    const bad = await check(outs('role', {}), {
      ...outs('role', { name: 'r' }),
      kind: 'table' as never,
      admin: '',
    });
    expect(bad.failures?.map((f) => f.property).sort()).toEqual(['admin', 'kind']);
    const good = await check(outs('role', {}), outs('role', { name: 'r' }));
    expect(good.failures).toBeUndefined();
  });

  it('replaces a resource whose identity changes and updates one whose settings change', async () => {
    const diff = postgresProvider.diff;
    if (!diff) throw new Error('diff is not implemented');
    const role = outs('role', { name: 'tenant_a', connectionLimit: 20 });
    const renamed = await diff('role/tenant_a', role, {
      ...role,
      spec: { name: 'tenant_b', connectionLimit: 20 },
    });
    expect(renamed).toEqual({ changes: true, replaces: ['spec'] });
    const limited = await diff('role/tenant_a', role, {
      ...role,
      spec: { name: 'tenant_a', connectionLimit: 5 },
    });
    expect(limited).toEqual({ changes: true, replaces: [] });
    const grants = outs('grants', { database: 'd', schema: 's', role: 'r', owner: 'o' });
    const regranted = await diff('g', grants, {
      ...grants,
      spec: { database: 'd', schema: 's', role: 'r2', owner: 'o' },
    });
    expect(regranted.replaces).toEqual(['spec']);
  });

  it('does not treat a rotated admin credential as a change to the resource', async () => {
    const diff = postgresProvider.diff;
    if (!diff) throw new Error('diff is not implemented');
    const schema = outs('schema', { name: 'tenant_a', owner: 'tenant_a_owner' });
    const rotated = await diff('schema/tenant_a', schema, { ...schema, admin: admin.replace('"x"', '"y"') });
    expect(rotated).toEqual({ changes: false, replaces: [] });
  });
});
