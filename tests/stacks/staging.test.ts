/**
 * A promotion's staged placement on the aws target: the source tier's program with `stagedTier`
 * builds the target tier's placement next to the routed one, with the URNs the target tier's own
 * program gives it (so the later `up` of that program adopts it in place).
 */

import * as pulumi from '@pulumi/pulumi';
import { MockMonitor } from '@pulumi/pulumi/runtime/mocks.js';
import { afterAll, describe, expect, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import { assertProgramInput, type TenantProgramInput } from '../../stacks/common/input.js';
import { TIER_COMPONENT_TYPES } from '../../stacks/common/tenant.js';
import { SILO_SCHEMA } from '../../stacks/common/tenant-postgres.js';
import { rootStackUrn, stackUrnPrefix } from '../helpers/urns.js';
import {
  mockAdminPassword,
  PLATFORM_SETTINGS,
  POOL_ROLE_PASSWORD,
  type ProgramRun,
  runTierProgram,
  tenantInput,
} from './harness.js';

const KEY = 'aws:kms/key:Key';
const SECRET_VERSION = 'aws:secretsmanager/secretVersion:SecretVersion';
const RDS = 'aws:rds/instance:Instance';
const PARAMS = 'aws:rds/parameterGroup:ParameterGroup';
const DYNAMIC = 'pulumi-nodejs:dynamic:Resource';
const COMPONENT = TIER_COMPONENT_TYPES;
/** The pool's shared schema and roles: retained in every run, they belong to no tenant. */
const SHARED_POOL_OBJECT = /-pool-(owner|app)$|-pool$/;

/**
 * Every registration as the mock monitor answers it, in order. The harness matches registrations
 * to resources by type and name, which two placements of one stack share (`tenant-<slug>-pg` under
 * the Pool and under the Silo component): URNs here come from the monitor itself, one per call.
 */
interface Registration {
  urn: string;
  type: string;
  name: string;
  parent: string;
  custom: boolean;
  retainOnDelete: boolean;
  /** The inputs as serialized for the engine (secrets keep their signature). */
  object: unknown;
}

interface Req {
  getType(): string;
  getName(): string;
  getParent(): string;
  getCustom(): boolean;
  getRetainondelete(): boolean | undefined;
  getObject(): { toJavaScript(): unknown } | undefined;
  getUrn(): string;
  getOutputs(): { toJavaScript(): unknown } | undefined;
}
type Callback = (err: unknown, resp?: { getUrn(): string }) => void;
const proto = MockMonitor.prototype as unknown as {
  newUrn(parent: string, type: string, name: string): string;
  registerResource(req: Req, cb: Callback): Promise<void>;
  registerResourceOutputs(req: Req, cb: (err: unknown, resp?: unknown) => void): void;
};
const originalNewUrn = proto.newUrn;
const originalRegister = proto.registerResource;
const originalOutputs = proto.registerResourceOutputs;
/**
 * URNs as the engine makes them (NewURN in pulumi/sdk/go/common/resource/urn.go): the type is
 * prefixed with the parent's whole qualified type, except under the root stack. The mock monitor
 * prefixes only the parent's last type (and the stack's), so two resources of one name and type
 * under different components (`tenant-<slug>-pg-owner` under the Bridge and under the Silo) would
 * share a mock URN while the engine gives them distinct ones.
 */
proto.newUrn = function (this: unknown, parent: string, type: string, name: string) {
  const parentType = parent ? parent.split('::')[2] : undefined;
  const qualified = parentType && parentType !== 'pulumi:pulumi:Stack' ? `${parentType}$${type}` : type;
  return originalNewUrn.call(this, '', qualified, name);
};
let registrations: Registration[] = [];
/** The stack's outputs as the engine receives them (serialized: a secret output keeps its signature). */
let stackOutputs: Record<string, unknown> | undefined;
proto.registerResource = function (this: unknown, req: Req, cb: Callback) {
  return originalRegister.call(this, req, (err, resp) => {
    if (!err && resp) {
      registrations.push({
        urn: resp.getUrn(),
        type: req.getType(),
        name: req.getName(),
        parent: req.getParent(),
        custom: req.getCustom(),
        retainOnDelete: req.getRetainondelete() === true,
        object: req.getObject()?.toJavaScript(),
      });
    }
    cb(err, resp);
  });
};
proto.registerResourceOutputs = function (this: unknown, req: Req, cb) {
  if (req.getUrn().includes('::pulumi:pulumi:Stack::')) {
    stackOutputs = req.getOutputs()?.toJavaScript() as Record<string, unknown>;
  }
  return originalOutputs.call(this, req, cb);
};
afterAll(() => {
  proto.newUrn = originalNewUrn;
  proto.registerResource = originalRegister;
  proto.registerResourceOutputs = originalOutputs;
});

interface Run {
  run: ProgramRun;
  regs: Registration[];
  stackOutputs: Record<string, unknown> | undefined;
}

/** Runs share Pulumi's global runtime state: never concurrently, always through this. */
let queue: Promise<unknown> = Promise.resolve();
function program(tier: Tier, input: TenantProgramInput): Promise<Run> {
  const next = queue.then(async () => {
    registrations = [];
    stackOutputs = undefined;
    const run = await runTierProgram(tier, input);
    return { run, regs: registrations, stackOutputs };
  });
  queue = next.catch(() => undefined);
  return next;
}

function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => {
    p ??= fn();
    return p;
  };
}

/** The registrations of a component (by its type and name) and everything under it. */
function under(r: Run, slug: string, componentType: string): Registration[] {
  const prefix = `${stackUrnPrefix(slug)}${componentType}`;
  return r.regs.filter((x) => x.urn.startsWith(`${prefix}::`) || x.urn.startsWith(`${prefix}$`));
}
const urns = (regs: Registration[]) => regs.map((x) => x.urn).sort();
const one = (regs: Registration[], type: string) => {
  const found = regs.filter((x) => x.type === type);
  expect(found, type).toHaveLength(1);
  return found[0] as Registration;
};

function descriptorOf(run: ProgramRun): Record<string, unknown> {
  return JSON.parse(String(run.one(SECRET_VERSION).inputs.secretString)) as Record<string, unknown>;
}

const PAIRS = [
  ['pool', 'bridge'],
  ['pool', 'silo'],
  ['bridge', 'silo'],
] as const;

describe.each(PAIRS)('staging %s → %s', (from, to) => {
  const slug = `stage-${from}-${to}`;
  const runs = once(async () => ({
    staged: await program(from, tenantInput(from, slug, { stagedTier: to })),
    source: await program(from, tenantInput(from, slug)),
    target: await program(to, tenantInput(to, slug)),
    discard: await program(from, tenantInput(from, slug, { stagedTier: to, discardStaged: true })),
  }));

  it('registers both placements, each once, and no URN twice', async () => {
    const { staged } = await runs();
    expect(staged.run.byType(COMPONENT[from])).toHaveLength(1);
    expect(staged.run.byType(COMPONENT[to])).toHaveLength(1);
    expect(new Set(urns(staged.regs)).size).toBe(staged.regs.length);
  });

  it('gives every resource of the staged placement the URN and inputs the target program gives it', async () => {
    const { staged, target } = await runs();
    const stagedPart = under(staged, slug, COMPONENT[to]);
    const targetPart = under(target, slug, COMPONENT[to]);
    // The component, its Postgres objects and (silo) the RDS instance and parameter group.
    expect(targetPart.length).toBeGreaterThanOrEqual(to === 'silo' ? 10 : 6);
    expect(urns(stagedPart)).toEqual(urns(targetPart));
    for (const x of targetPart) {
      const same = stagedPart.find((y) => y.urn === x.urn);
      expect(same?.object, x.urn).toEqual(x.object);
      expect(same?.parent, x.urn).toBe(x.parent);
    }
    // The placement has no parent but the stack, as in the target program.
    const component = one(stagedPart, COMPONENT[to]);
    expect(component.urn).toBe(`${stackUrnPrefix(slug)}${COMPONENT[to]}::tenant-${slug}`);
    expect(component.parent).toBe(rootStackUrn(slug));
  });

  it('is the source program’s stack plus the staged placement: nothing else is added, nothing renamed', async () => {
    const { staged, source, target } = await runs();
    const stagedPart = urns(under(staged, slug, COMPONENT[to]));
    expect(urns(staged.regs)).toEqual([...urns(source.regs), ...stagedPart].sort());
    // The key and the secret are the stack's own: one each, the URNs every tier gives them.
    const shared = (r: Run) =>
      urns(r.regs.filter((x) => x.type === 'tenantry:tenant:Key' || x.type === 'tenantry:tenant:Secret'));
    expect(shared(staged)).toHaveLength(2);
    expect(shared(staged)).toEqual(shared(target));
    for (const x of source.regs) {
      const same = staged.regs.find((y) => y.urn === x.urn);
      expect(same?.object, x.urn).toEqual(x.object);
      expect(same?.retainOnDelete, x.urn).toBe(x.retainOnDelete);
    }
  });

  it('keeps routing to the source placement: the secret holds its descriptor', async () => {
    const { staged, source } = await runs();
    const descriptor = descriptorOf(staged.run);
    expect(descriptor).toEqual(descriptorOf(source.run));
    expect(descriptor.tier).toBe(from);
    expect(descriptor.host).toBe('shared.cluster.internal');
    if (from === 'pool') {
      expect(descriptor).toMatchObject({
        user: PLATFORM_SETTINGS.pool.appRole,
        schema: PLATFORM_SETTINGS.pool.schema,
        password: POOL_ROLE_PASSWORD,
        tenantSetting: PLATFORM_SETTINGS.pool.tenantSetting,
      });
    } else {
      expect(descriptor).toMatchObject({ user: tenantObjectName(slug) });
      expect(descriptor.tenantSetting).toBeUndefined();
    }
    const rest = Object.fromEntries(
      Object.entries(staged.run.outputs).filter(([k]) => !k.startsWith('staged')),
    );
    expect(rest).toEqual(source.run.outputs);
    expect(staged.run.outputs.tier).toBe(from);
    expect(Object.keys(source.run.outputs).filter((k) => k.startsWith('staged'))).toEqual([]);
    expect(Object.keys(source.stackOutputs ?? {}).filter((k) => k.startsWith('staged'))).toEqual([]);
  });

  it('exports where the staged placement is, not as a secret and without any password', async () => {
    const { staged, target } = await runs();
    const out = stagedOf(staged.run.outputs);
    const user = tenantObjectName(slug);
    if (to === 'silo') {
      const rds = staged.run.one(RDS);
      const master = (rds.state.masterUserSecrets as { secretArn: string }[])[0]?.secretArn;
      expect(master).toMatch(/^arn:aws:secretsmanager:.*:secret:rds!/);
      expect(out).toEqual({
        tier: 'silo',
        host: rds.state.address,
        port: 5432,
        database: user,
        schema: SILO_SCHEMA,
        user,
        adminSecretArn: master,
      });
      expect(out.host).toBe(target.run.outputs.host);
    } else {
      expect(out).toEqual({
        tier: 'bridge',
        host: 'shared.cluster.internal',
        port: 5432,
        database: 'tenantry_data',
        schema: user,
        user,
      });
    }
    expect({ ...out, tier: undefined, adminSecretArn: undefined }).toMatchObject({
      host: target.run.outputs.host,
      port: target.run.outputs.port,
      database: target.run.outputs.database,
      schema: target.run.outputs.schema,
      user: target.run.outputs.user,
    });
    // No password: not the staged login role's, not the pool's, not an admin's.
    const text = JSON.stringify(out);
    expect(text).not.toMatch(/password/i);
    const secrets = new Set<string>([POOL_ROLE_PASSWORD]);
    for (const x of staged.run.byType(DYNAMIC)) {
      if (typeof x.state.password === 'string') secrets.add(x.state.password);
      // Each admin is a reference to its secret: the password is only in the (mocked) secret.
      const admin = JSON.parse(String(x.inputs.admin)) as { secretId: string; password?: string };
      expect(admin.password).toBeUndefined();
      secrets.add(mockAdminPassword(admin.secretId));
    }
    // The pool role's, the staged login role's, and the admin's of each cluster involved.
    expect(secrets.size).toBeGreaterThanOrEqual(3);
    for (const s of secrets) expect(text).not.toContain(s);
    // The stack outputs as the engine receives them: plain values (flat), none of them a secret.
    const serialized = stagedOf((staged.stackOutputs ?? {}) as Record<string, unknown>);
    expect(serialized).toEqual(out);
    expect(JSON.stringify(staged.stackOutputs)).not.toContain(pulumi.runtime.specialSecretSig);
  });

  it('retains the staged placement as tenant data, and the discard run retains none of it', async () => {
    const { staged, discard } = await runs();
    const tenantOwned = (regs: Registration[]) =>
      regs.filter((x) => x.custom && !SHARED_POOL_OBJECT.test(x.name));
    const stagedPart = tenantOwned(under(staged, slug, COMPONENT[to]));
    const discarded = tenantOwned(under(discard, slug, COMPONENT[to]));
    expect(stagedPart.length).toBeGreaterThanOrEqual(4);
    for (const x of stagedPart) expect(x.retainOnDelete, x.urn).toBe(true);
    // The discard run updates the same resources in place, then the next up deletes them.
    expect(urns(discarded)).toEqual(urns(stagedPart));
    for (const x of discarded) expect(x.retainOnDelete, x.urn).toBe(false);
    // The routed placement stays tenant data in either run.
    for (const run of [staged, discard]) {
      const source = tenantOwned(under(run, slug, COMPONENT[from]));
      expect(source.length).toBeGreaterThanOrEqual(1);
      for (const x of source) expect(x.retainOnDelete, x.urn).toBe(true);
      for (const x of under(run, slug, COMPONENT[from]).filter((y) => SHARED_POOL_OBJECT.test(y.name))) {
        expect(x.retainOnDelete, x.urn).toBe(true);
      }
    }
    expect(descriptorOf(discard.run)).toEqual(descriptorOf(staged.run));
    expect(discard.run.outputs.staged).toEqual(staged.run.outputs.staged);
  });
});

/** The staged placement from a stack's flat outputs (`stagedTier`, `stagedHost` …), as the engine reads it. */
function stagedOf(o: Record<string, unknown>): Record<string, unknown> {
  return {
    tier: o.stagedTier,
    host: o.stagedHost,
    port: o.stagedPort,
    database: o.stagedDatabase,
    schema: o.stagedSchema,
    user: o.stagedUser,
    ...(o.stagedAdminSecretArn ? { adminSecretArn: o.stagedAdminSecretArn } : {}),
  };
}

describe('a silo staged in a pool stack', () => {
  const slug = 'upgrader';
  const runs = once(async () => ({
    staged: await program('pool', tenantInput('pool', slug, { stagedTier: 'silo' })),
    discard: await program('pool', tenantInput('pool', slug, { stagedTier: 'silo', discardStaged: true })),
  }));

  it('is an RDS instance encrypted with the tenant key, private, deletion-protected, tagged as silo', async () => {
    const { run } = (await runs()).staged;
    const key = run.one(KEY);
    const rds = run.one(RDS);
    expect(rds.inputs).toMatchObject({
      engine: 'postgres',
      storageEncrypted: true,
      kmsKeyId: key.state.arn,
      masterUserSecretKmsKeyId: key.state.arn,
      manageMasterUserPassword: true,
      publiclyAccessible: false,
      deletionProtection: true,
      skipFinalSnapshot: false,
      dbSubnetGroupName: 'tenantry-private',
      vpcSecurityGroupIds: ['sg-0123456789abcdef0'],
    });
    expect(rds.inputs.applyImmediately).toBeUndefined();
    expect(rds.inputs.tags).toEqual({
      'tenantry:tenant-id': run.outputs.tenantId,
      'tenantry:tier': 'silo',
      'tenantry:managed-by': 'tenantry',
    });
    // The routed tier's resources keep the routed tier's tags.
    expect((key.inputs.tags as Record<string, string>)['tenantry:tier']).toBe('pool');
    const { regs } = (await runs()).staged;
    expect(one(regs, RDS).retainOnDelete).toBe(true);
    expect(one(regs, PARAMS).retainOnDelete).toBe(true);
    // The pool's key is the pool program's (deleted with the stack); only the silo program retains it.
    expect(one(regs, KEY).retainOnDelete).toBe(false);
  });

  it('is built without deletion protection and retained by nothing in the discard run', async () => {
    const { discard } = await runs();
    const rds = discard.run.one(RDS);
    expect(rds.inputs).toMatchObject({
      deletionProtection: false,
      applyImmediately: true,
      skipFinalSnapshot: false,
      storageEncrypted: true,
    });
    expect(one(discard.regs, RDS).retainOnDelete).toBe(false);
    expect(one(discard.regs, PARAMS).retainOnDelete).toBe(false);
    // Its final snapshot has a name of its own: the tenant's real final snapshot keeps its name free.
    const { staged } = await runs();
    const finalName = String(staged.run.one(RDS).inputs.finalSnapshotIdentifier);
    expect(finalName).toMatch(/-final-[0-9a-f]{12}$/);
    expect(String(rds.inputs.finalSnapshotIdentifier)).toMatch(
      new RegExp(`^${finalName}-discarded-\\d{12}$`),
    );
    const membership = discard.regs.find((x) => x.name.endsWith('-membership'));
    expect(membership?.urn).toContain(`${COMPONENT.pool}$`);
    expect(membership?.retainOnDelete).toBe(true);
  });
});

describe('assertProgramInput and staging', () => {
  const input = (tier: Tier, extra: Partial<TenantProgramInput> = {}) =>
    tenantInput(tier, 'checked', tier === 'account' ? { accountEmailSuffix: 'abcd1234', ...extra } : extra);

  it.each(PAIRS)('accepts %s → %s, staged or discarded', (from, to) => {
    expect(assertProgramInput(input(from, { stagedTier: to }), from).stagedTier).toBe(to);
    expect(assertProgramInput(input(from, { stagedTier: to, discardStaged: true }), from).discardStaged).toBe(
      true,
    );
  });

  it.each([
    ['silo', 'bridge'],
    ['silo', 'pool'],
    ['bridge', 'pool'],
    ['bridge', 'bridge'],
    ['pool', 'pool'],
    ['silo', 'silo'],
  ] as const)('refuses %s → %s', (from, to) => {
    expect(() => assertProgramInput(input(from, { stagedTier: to }), from)).toThrow(/stage/);
  });

  it('refuses staging into or out of the account tier', () => {
    expect(() => assertProgramInput(input('account', { stagedTier: 'silo' }), 'account')).toThrow(
      /only a pool or bridge tenant stages/,
    );
    expect(() => assertProgramInput(input('pool', { stagedTier: 'account' }), 'pool')).toThrow(
      /cannot stage a account placement/,
    );
    expect(() => assertProgramInput(input('bridge', { stagedTier: 'account' }), 'bridge')).toThrow(/stage/);
  });

  it('refuses discardStaged without stagedTier, and staging in an offboarding run', () => {
    expect(() => assertProgramInput(input('pool', { discardStaged: true }), 'pool')).toThrow(
      /discardStaged needs stagedTier/,
    );
    expect(() =>
      assertProgramInput(input('pool', { stagedTier: 'silo', offboarding: true }), 'pool'),
    ).toThrow(/offboarding/);
    expect(() =>
      assertProgramInput(
        input('pool', { stagedTier: 'silo', discardStaged: true, offboarding: true }),
        'pool',
      ),
    ).toThrow(/offboarding/);
    expect(() => assertProgramInput(input('pool', { stagedTier: 'nowhere' as Tier }), 'pool')).toThrow(
      /stage/,
    );
    // Unchanged without staging.
    expect(assertProgramInput(input('pool', { offboarding: true }), 'pool').offboarding).toBe(true);
  });

  it('is what the programs run: a program asked to stage what it cannot fails before registering anything', async () => {
    // programContext asserts the input first: no Pulumi runtime is needed to see the refusal.
    const { programFor } = await import('../../stacks/index.js');
    await expect(programFor(input('silo', { stagedTier: 'account' }))()).rejects.toThrow(
      /only a pool or bridge tenant stages/,
    );
    await expect(programFor(input('bridge', { stagedTier: 'pool' }))()).rejects.toThrow(
      /a bridge tenant cannot stage a pool placement/,
    );
  });
});
