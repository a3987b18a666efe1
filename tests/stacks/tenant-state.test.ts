/**
 * A bridge, silo or account tenant's recorded state in its stack (docs/aws.md, "A tenant's second day on the aws
 * target"): suspended, its own login role is NOLOGIN; its limit overrides are that role's limits. The
 * owner roles and the pool's shared roles never carry either. Pulumi mocks (harness.ts).
 */
import * as pulumi from '@pulumi/pulumi';
import { describe, expect, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { assertProgramInput } from '../../stacks/common/input.js';
import { programContext } from '../../stacks/common/program.js';
import { DEFAULT_TEMPLATES_DIR, loadProgramTemplates } from '../../stacks/common/templates.js';
import { tenantOwnerRoleName } from '../../stacks/common/tenant-postgres.js';
import {
  BASE_CONFIG,
  type ProgramRun,
  type RecordedResource,
  runTierProgram,
  tenantInput,
} from './harness.js';

type OwnLoginTier = 'bridge' | 'silo' | 'account';
/** A tier's program input (the account tier's root email suffix, which its engine derives, included). */
const inputOf = (tier: OwnLoginTier, slug: string, extra: Parameters<typeof tenantInput>[2] = {}) =>
  tenantInput(tier, slug, {
    ...(tier === 'account' ? { accountEmailSuffix: '0a1b2c3d4e5f' } : {}),
    ...extra,
  });

const { catalog } = loadProgramTemplates(DEFAULT_TEMPLATES_DIR);
const DYNAMIC = 'pulumi-nodejs:dynamic:Resource';

const roleSpec = (run: ProgramRun, name: string) =>
  (run
    .byType(DYNAMIC)
    .find(
      (r: RecordedResource) => r.inputs.kind === 'role' && (r.inputs.spec as { name: string }).name === name,
    )?.inputs.spec as Record<string, unknown> | undefined) ?? {};

describe.each(['bridge', 'silo', 'account'] as const)('the %s tenant’s state in its program', (tier) => {
  it('makes its own login role NOLOGIN while it is suspended, and leaves the owner as it was', async () => {
    const slug = `susp-${tier}`;
    const run = await runTierProgram(tier, inputOf(tier, slug, { suspended: true }));
    expect(roleSpec(run, tenantObjectName(slug))).toMatchObject({
      name: tenantObjectName(slug),
      login: false,
      connectionLimit: catalog.tiers[tier].role.connectionLimit,
    });
    expect(roleSpec(run, tenantOwnerRoleName(slug))).toMatchObject({ login: false, connectionLimit: 0 });
  });

  it('gives the login back (no login flag: LOGIN, the role provider’s default) when not suspended', async () => {
    const slug = `active-${tier}`;
    const run = await runTierProgram(tier, inputOf(tier, slug, { suspended: false }));
    const spec = roleSpec(run, tenantObjectName(slug));
    expect(spec.name).toBe(tenantObjectName(slug));
    expect(spec).not.toHaveProperty('login');
  });

  it('sets its limit overrides on its login role only, the tier’s limits where it has none', async () => {
    const slug = `limits-${tier}`;
    const run = await runTierProgram(
      tier,
      inputOf(tier, slug, { limitOverrides: { connectionLimit: 3, statementTimeoutMs: 2000 } }),
    );
    expect(roleSpec(run, tenantObjectName(slug))).toMatchObject({
      connectionLimit: 3,
      statementTimeoutMs: 2000,
      idleInTransactionSessionTimeoutMs: catalog.tiers[tier].role.idleInTransactionSessionTimeoutMs,
    });
    expect(roleSpec(run, tenantOwnerRoleName(slug))).toMatchObject({
      connectionLimit: 0,
      statementTimeoutMs: catalog.tiers[tier].role.statementTimeoutMs,
    });
  });

  it('refuses overrides above the tier’s limits before anything is built', () => {
    pulumi.runtime.setAllConfig(BASE_CONFIG, []);
    const over = catalog.tiers[tier].role.connectionLimit + 1;
    expect(() =>
      programContext(inputOf(tier, `over-${tier}`, { limitOverrides: { connectionLimit: over } }), tier),
    ).toThrow(/connectionLimit must be between 1 and/);
  });
});

describe.each(['silo', 'account'] as const)('the %s stack’s outputs', (tier) => {
  it('name its instance’s master secret (in the tenant’s account for the account tier), through which the engine ends sessions and exports', async () => {
    const run = await runTierProgram(tier, inputOf(tier, `out-${tier}`));
    const master = run.byType('aws:rds/instance:Instance')[0]?.state.masterUserSecrets as
      | { secretArn: string }[]
      | undefined;
    expect(master?.[0]?.secretArn).toMatch(/^arn:aws:secretsmanager:.*:secret:rds!db-/);
    expect(run.outputs.adminSecretArn).toBe(master?.[0]?.secretArn);
    if (tier === 'account') expect(run.outputs.accountId).toMatch(/^\d{12}$/);
  });
});

describe('the pool’s shared login', () => {
  it('is never suspended nor given overrides through a pool tenant’s stack', () => {
    expect(() => assertProgramInput(tenantInput('pool', 'susp-pool', { suspended: true }), 'pool')).toThrow(
      /no login role of its own to suspend/,
    );
    expect(() =>
      assertProgramInput(
        tenantInput('pool', 'limits-pool', { limitOverrides: { connectionLimit: 2 } }),
        'pool',
      ),
    ).toThrow(/no login role of its own/);
  });
});

describe('a promotion of a tenant with overrides', () => {
  it('stages the silo with the same overrides its own program will give it (the URNs and inputs agree)', async () => {
    const slug = 'limits-promo';
    const limitOverrides = { connectionLimit: 4 };
    const staged = await runTierProgram(
      'bridge',
      tenantInput('bridge', slug, { limitOverrides, stagedTier: 'silo' }),
    );
    const target = await runTierProgram('silo', tenantInput('silo', slug, { limitOverrides }));
    const login = (run: ProgramRun) =>
      run
        .byType(DYNAMIC)
        .filter(
          (r) =>
            r.inputs.kind === 'role' && (r.inputs.spec as { name: string }).name === tenantObjectName(slug),
        )
        .map((r) => ({ urn: r.urn, spec: r.inputs.spec }));
    const siloLogin = login(target)[0];
    expect(siloLogin?.spec).toMatchObject({ connectionLimit: 4 });
    expect(login(staged)).toContainEqual(siloLogin);
  });
});
