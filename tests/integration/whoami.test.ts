import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROLES } from '../../control-plane/src/domain/auth.js';
import { auth, startStack, type TestStack } from '../helpers/runtime.js';

/** GET /v1/whoami: who a token is, for any role (the console reads it at sign-in to follow the role). */
let s: TestStack;
beforeAll(async () => {
  s = await startStack({ TENANTRY_ROLE: 'api' });
});
afterAll(async () => {
  await s?.close();
});

describe('GET /v1/whoami', () => {
  it.each(ROLES)(
    'tells a %s token its id, name, role and the permissions the server enforces',
    async (role) => {
      const res = await s.app.inject({ method: 'GET', url: '/v1/whoami', headers: auth(s.tokens[role]) });
      expect(res.statusCode).toBe(200);
      const me = res.json();
      expect(me).toEqual({
        id: expect.stringMatching(/^tok_[0-9a-f]{28}$/),
        name: `test-${role}`,
        role,
        permissions: expect.any(Array),
      });
      expect(me.permissions).toContain('self:read');
      expect(me.permissions.includes('tenants:promote')).toBe(role === 'sre' || role === 'admin');
      expect(me.permissions.includes('tokens:manage')).toBe(role === 'admin');
      expect(me.permissions.includes('tenants:create')).toBe(role !== 'dataplane');
    },
  );

  it('answers 401 without a token, and never shows the token itself', async () => {
    const res = await s.app.inject({ method: 'GET', url: '/v1/whoami' });
    expect(res.statusCode).toBe(401);
    expect(res.json().error.code).toBe('UNAUTHENTICATED');
    const mine = await s.app.inject({ method: 'GET', url: '/v1/whoami', headers: auth(s.tokens.admin) });
    expect(mine.body).not.toContain(s.tokens.admin);
  });
});
