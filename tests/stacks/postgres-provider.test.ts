import * as pulumi from '@pulumi/pulumi';
import { describe, expect, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import {
  POSTGRES_SECRET_OUTPUTS,
  type PostgresResourceOutputs,
  postgresProvider,
} from '../../stacks/common/postgres-provider.js';
import { tenantOwnerRoleName } from '../../stacks/common/tenant-postgres.js';

/** An admin reference (AdminRef): which secret to read, and where to connect. */
const admin = JSON.stringify({
  secretId: 'arn:aws:secretsmanager:eu-west-1:111111111111:secret:rds!db-0123-AbCdEf',
  region: 'eu-west-1',
  host: 'db.internal',
  port: 5432,
  database: 'postgres',
  ssl: true,
});
/** What earlier versions kept in the state: the admin's connection, password and all. */
const legacyAdmin = JSON.stringify({
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
    // The admin secret is read when the provider connects, with the AWS SDK's own clients.
    expect(sf.text).toContain('require("@aws-sdk/client-secrets-manager');
    expect(sf.text).toContain('require("@aws-sdk/client-sts');
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

  it('refuses an admin connection that carries its password, at check time and on create', async () => {
    const check = postgresProvider.check;
    if (!check) throw new Error('check is not implemented');
    const bad = await check(outs('role', {}), { ...outs('role', { name: 'r' }), admin: legacyAdmin });
    expect(bad.failures).toEqual([
      { property: 'admin', reason: 'must reference the admin secret (secretId), never carry the password' },
    ]);
    await expect(
      postgresProvider.create({ kind: 'role', admin: legacyAdmin, spec: { name: 'r' } }),
    ).rejects.toThrow(/reference its secret/);
  });

  it('replaces a resource whose identity changes and updates one whose settings change', async () => {
    const diff = postgresProvider.diff;
    if (!diff) throw new Error('diff is not implemented');
    const [a, b] = [tenantObjectName('acme'), tenantObjectName('beta')];
    const role = outs('role', { name: a, connectionLimit: 20 });
    const renamed = await diff(`role/${a}`, role, {
      ...role,
      spec: { name: b, connectionLimit: 20 },
    });
    expect(renamed).toEqual({ changes: true, replaces: ['spec'] });
    const limited = await diff(`role/${a}`, role, {
      ...role,
      spec: { name: a, connectionLimit: 5 },
    });
    expect(limited).toEqual({ changes: true, replaces: [] });
    const grants = outs('grants', { database: 'd', schema: 's', role: 'r', owner: 'o' });
    const regranted = await diff('g', grants, {
      ...grants,
      spec: { database: 'd', schema: 's', role: 'r2', owner: 'o' },
    });
    expect(regranted.replaces).toEqual(['spec']);
  });

  it('does not treat another admin reference as a change to the resource', async () => {
    const diff = postgresProvider.diff;
    if (!diff) throw new Error('diff is not implemented');
    const schema = outs('schema', { name: tenantObjectName('acme'), owner: tenantOwnerRoleName('acme') });
    const moved = await diff(`schema/${tenantObjectName('acme')}`, schema, {
      ...schema,
      admin: admin.replace('rds!db-0123', 'rds!db-4567'),
    });
    expect(moved).toEqual({ changes: false, replaces: [] });
  });

  it('rewrites a state that holds the admin password: the next up updates it to a reference', async () => {
    const diff = postgresProvider.diff;
    if (!diff) throw new Error('diff is not implemented');
    const schema = outs('schema', { name: tenantObjectName('acme'), owner: tenantOwnerRoleName('acme') });
    const legacy = { ...schema, admin: legacyAdmin };
    expect(await diff(`schema/${tenantObjectName('acme')}`, legacy, schema)).toEqual({
      changes: true,
      replaces: [],
    });
  });

  it('marks only the role password secret: the admin reference holds none', () => {
    expect(POSTGRES_SECRET_OUTPUTS).toEqual(['password']);
  });
});
