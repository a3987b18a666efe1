import { describe, expect, it } from 'vitest';
import { can, ROLES } from '../../control-plane/src/domain/auth.js';
import { newOperationId, newTokenId } from '../../control-plane/src/domain/ids.js';
import {
  assertSlug,
  loginRoleName,
  loginRoleNames,
  nextLogin,
  parseLoginRoleName,
  tenantKeyAlias,
  tenantObjectName,
  tenantSecretName,
  tenantStackName,
} from '../../control-plane/src/domain/naming.js';
import { policyExpression } from '../../control-plane/src/providers/postgres/pool.js';
import { ident, literal } from '../../control-plane/src/providers/postgres/sql.js';

describe('slugs and derived names', () => {
  it.each(['abc', 'acme-corp', 'a1-2-3', `a${'b'.repeat(39)}`])('accepts %s', (slug) => {
    expect(assertSlug(slug)).toBe(slug);
  });
  it.each([
    'ab',
    'Acme',
    '1abc',
    '-abc',
    'a_b_c',
    'acme corp',
    "a'; drop role x; --",
    `a${'b'.repeat(40)}`,
    'ačme',
  ])('rejects %s', (slug) => {
    expect(() => assertSlug(slug)).toThrow(/slug must match/);
  });
  it('derives every name from the slug through one function each', () => {
    expect(tenantObjectName('acme-corp')).toBe('tenant_acme_corp');
    expect(tenantStackName('acme-corp')).toBe('tenant-acme-corp');
    expect(tenantSecretName('acme-corp')).toBe('tenantry/acme-corp/connection');
    expect(tenantKeyAlias('acme-corp')).toBe('alias/tenantry/acme-corp');
  });
  it('never maps two slugs to one object name (slugs have no underscore)', () => {
    const slugs = ['a-bc', 'ab-c', 'abc', 'a-b-c', 'ab--c'];
    expect(new Set(slugs.map(tenantObjectName)).size).toBe(slugs.length);
  });
  it('object names stay within the 63-byte identifier limit', () => {
    expect(tenantObjectName(`a${'b'.repeat(39)}`).length).toBeLessThanOrEqual(63);
  });
});

describe('SQL quoting', () => {
  it('quotes valid identifiers and refuses anything else', () => {
    expect(ident('tenant_acme')).toBe('"tenant_acme"');
    for (const bad of ['Tenant', 'a"b', 'a;b', '', 'a b', 'x'.repeat(64), 'ä'])
      expect(() => ident(bad)).toThrow();
  });
  it('escapes literals', () => {
    expect(literal("it's")).toBe("'it''s'");
    expect(() => literal('a\0b')).toThrow();
  });
  it('builds the one allowed policy shape', () => {
    expect(policyExpression('app.tenant_id')).toBe(
      "tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)",
    );
    expect(() => policyExpression("x') OR true --")).toThrow();
  });
});

describe('roles and ids', () => {
  it('grants each role exactly its permissions', () => {
    expect(can('sales-ops', 'tenants:create')).toBe(true);
    expect(can('sales-ops', 'tenants:offboard')).toBe(false);
    expect(can('sre', 'tenants:offboard')).toBe(true);
    expect(can('sre', 'connection:read')).toBe(false);
    expect(can('dataplane', 'connection:read')).toBe(true);
    expect(can('dataplane', 'tenants:read')).toBe(false);
    for (const r of ROLES) expect(can(r, 'tokens:manage')).toBe(r === 'admin');
  });
  it('makes prefixed, unique, time-ordered ids', () => {
    const a = newOperationId();
    const b = newOperationId();
    expect(a).toMatch(/^op_[0-9a-f]{28}$/);
    expect(newTokenId()).toMatch(/^tok_[0-9a-f]{28}$/);
    expect(a).not.toBe(b);
    expect(a.slice(0, 15) <= b.slice(0, 15)).toBe(true);
  });
});

describe('login groups (alternating users)', () => {
  it('names the two logins of a group with a prefix, and parses them back', () => {
    expect(loginRoleNames('tenant_acme')).toEqual(['login_a_tenant_acme', 'login_b_tenant_acme']);
    expect(loginRoleName('tenantry_data_pool', 'b')).toBe('login_b_tenantry_data_pool');
    expect(parseLoginRoleName('login_b_tenant_acme_corp')).toEqual({ group: 'tenant_acme_corp', slot: 'b' });
    expect(parseLoginRoleName('tenant_acme')).toBeNull();
    expect(parseLoginRoleName('login_c_tenant_acme')).toBeNull();
  });
  it('never makes a login name that is a tenant object name, nor two groups share one (a suffix would: tenant_acme_a is slug acme-a)', () => {
    const slugs = ['acme', 'acme-a', 'acme-b', 'login-a-acme', 'a-b-c', 'ab--c'];
    const groups = slugs.map(tenantObjectName);
    const logins = groups.flatMap(loginRoleNames);
    expect(new Set(logins).size).toBe(logins.length);
    expect(logins.filter((l) => groups.includes(l))).toEqual([]);
    // The longest slug's logins still fit an identifier (63 bytes).
    expect(() => ident(loginRoleName(tenantObjectName(`a${'b'.repeat(39)}`), 'a'))).not.toThrow();
  });
  it('a rotation moves to the other login; from the single-login layout (the group itself) to login a', () => {
    expect(nextLogin('tenant_acme', 'tenant_acme')).toBe('login_a_tenant_acme');
    expect(nextLogin('tenant_acme', 'login_a_tenant_acme')).toBe('login_b_tenant_acme');
    expect(nextLogin('tenant_acme', 'login_b_tenant_acme')).toBe('login_a_tenant_acme');
    expect(() => nextLogin('tenant_acme', 'login_a_tenant_other')).toThrow(/not one of tenant_acme's/);
  });
});
