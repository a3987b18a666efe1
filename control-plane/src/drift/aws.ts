import type { EngineEvent } from '@pulumi/pulumi/automation/index.js';
import { TenantryError } from '../domain/errors.js';
import { tenantStackName } from '../domain/naming.js';
import type { StepContext, StepOutputs, StepTenant } from '../domain/ports.js';
import { AWS_RECONCILE_STEPS, type AwsReconcileStep, isAwsReconcileStep } from '../domain/steps.js';
import { type DriftFinding, driftFromPreviewEvents } from '../engine/pulumi/events.js';

import { mapLimit } from '../lib/concurrency.js';
import { missingSuspensionFreeze } from './lifecycle.js';
import type {
  DetectInput,
  DetectResult,
  DriftCategory,
  DriftDetector,
  DriftRemediator,
  Finding,
  TenantRecord,
} from './types.js';

/** What the aws drift detector and remediator need of the aws engine. */
export interface StackDriver {
  previewRefresh(t: StepTenant, signal?: AbortSignal): Promise<EngineEvent[]>;
  runStep(ctx: StepContext): Promise<StepOutputs | undefined>;
  /** Which suspended pool tenants' rows are frozen for their suspension (no stack holds that freeze). */
  suspendedPoolFreezes?(tenantIds: string[]): Promise<{ name: string; frozen: Set<string> }>;
}

/**
 * Properties whose drift weakens a tenant's isolation rather than just its configuration: a key
 * policy or rotation, encryption, public reachability, network rules, deletion protection.
 */
const ISOLATION_PROPERTIES =
  /^(policy|enableKeyRotation|kmsKeyId|storageEncrypted|publiclyAccessible|vpcSecurityGroupIds|ingress|egress|cidrBlocks|deletionProtection|parameters|secretString)(\b|\.|\[|$)/;

/**
 * With the state its stack's config carries (suspended, limit overrides), so a check compares the stack
 * with what its last `up` applied, and a repair's `up` keeps that state.
 */
const toTenant = (t: TenantRecord): StepTenant => ({
  id: t.id,
  slug: t.slug,
  tier: t.tier,
  templateVersion: t.templateVersion,
  ...(t.limits ? { limits: t.limits } : {}),
  ...(t.status === 'suspended' ? { suspended: true } : {}),
});

/** One stack's drift (from its refreshing preview) as findings against the tenant. */
export function findingsFromStack(t: Pick<TenantRecord, 'id' | 'slug'>, drift: DriftFinding[]): Finding[] {
  const out: Finding[] = [];
  for (const d of drift) {
    const name = `${tenantStackName(t.slug)}/${d.type}::${d.name}`;
    const base = { tenantId: t.id, tenantSlug: t.slug, resource: 'stack' as const, name };
    if (d.kind === 'missing') {
      out.push({
        ...base,
        kind: 'missing',
        field: 'exists',
        desired: true,
        actual: false,
        category: 'state',
      });
      continue;
    }
    if (d.kind === 'unmanaged-in-state') {
      out.push({
        ...base,
        kind: 'unexpected',
        field: 'exists',
        desired: false,
        actual: true,
        category: 'state',
      });
      continue;
    }
    const props = d.properties.length > 0 ? d.properties : ['*'];
    for (const p of props) {
      const category: DriftCategory = ISOLATION_PROPERTIES.test(p) ? 'isolation' : 'state';
      out.push({
        ...base,
        kind: 'changed',
        field: d.kind === 'changed-requires-replace' ? `${p} (replace)` : p,
        desired: null,
        actual: null,
        category,
      });
    }
  }
  return out;
}

/**
 * The aws target's detector: a refreshing preview per tenant stack, bounded by the engine's Pulumi
 * concurrency, read through its structured engine events. It never writes state. The tenants to
 * check are read first; busy tenants are re-read after the previews, so a stack whose operation ran
 * meanwhile is skipped rather than reported.
 */
export class AwsDriftDetector implements DriftDetector {
  readonly target = 'aws' as const;

  constructor(
    private readonly driver: StackDriver,
    private readonly opts: { concurrency: number },
  ) {}

  async detect(snapshot: () => Promise<DetectInput>): Promise<DetectResult> {
    const t0 = performance.now();
    const before = await snapshot();
    const results = new Map<string, Finding[]>();
    await mapLimit(before.tenants, this.opts.concurrency, async (tenant) => {
      try {
        const events = await this.driver.previewRefresh(toTenant(tenant));
        results.set(tenant.id, findingsFromStack(tenant, driftFromPreviewEvents(events)));
      } catch (e) {
        results.set(tenant.id, [
          {
            tenantId: tenant.id,
            tenantSlug: tenant.slug,
            resource: 'stack',
            name: tenantStackName(tenant.slug),
            kind: 'changed',
            field: 'reachable',
            desired: true,
            actual: (e as Error).message.slice(0, 200),
            category: 'state',
          },
        ]);
      }
    });
    await this.checkSuspensionFreezes(before.tenants, results);
    const t1 = performance.now();
    const after = await snapshot();
    const judged = new Set(after.tenants.map((t) => t.id));
    const input: DetectInput = {
      ...after,
      tenants: after.tenants.filter((t) => results.has(t.id)),
    };
    const findings = [...results.entries()].filter(([id]) => judged.has(id)).flatMap(([, f]) => f);
    return { input, findings, timings: { previewMs: t1 - t0, snapshotMs: performance.now() - t1 } };
  }

  /**
   * A suspended pool tenant is expected frozen on the shared cluster (reason `suspended`), which its
   * stack's preview cannot show: a missing freeze is an isolation finding, as on the local target
   * (drift/lifecycle.ts). Re-applying the suspension (POST …/suspension) freezes it again.
   */
  private async checkSuspensionFreezes(
    tenants: TenantRecord[],
    results: Map<string, Finding[]>,
  ): Promise<void> {
    const suspended = tenants.filter((t) => t.tier === 'pool' && t.status === 'suspended');
    if (suspended.length === 0 || !this.driver.suspendedPoolFreezes) return;
    try {
      const { name, frozen } = await this.driver.suspendedPoolFreezes(suspended.map((t) => t.id));
      for (const t of suspended) {
        if (!frozen.has(t.id)) results.get(t.id)?.push(missingSuspensionFreeze(t, name));
      }
    } catch (e) {
      for (const t of suspended) {
        results.get(t.id)?.push({
          ...missingSuspensionFreeze(t, 'shared cluster'),
          kind: 'changed',
          field: 'reachable',
          desired: true,
          actual: (e as Error).message.slice(0, 200),
          category: 'state',
        });
      }
    }
  }
}

/** Repairs a tenant's stack drift with an `up` of its program, like provisioning did. */
export class AwsDriftRemediator implements DriftRemediator {
  constructor(private readonly driver: StackDriver) {}

  remediable(f: Finding): boolean {
    return f.resource === 'stack' && f.field !== 'reachable' && f.category !== 'orphan';
  }

  plan(tenant: TenantRecord | null): AwsReconcileStep[] {
    return tenant ? [...AWS_RECONCILE_STEPS] : [];
  }

  async runStep(
    tenant: TenantRecord | null,
    step: string,
    _findings: Finding[],
    ctx: { signal?: AbortSignal; operationId?: string } = {},
  ): Promise<void> {
    if (!tenant || !isAwsReconcileStep(step))
      throw new TenantryError('PROVIDER_FAILED', `unknown reconcile step ${step}`);
    await this.driver.runStep({
      operationId: ctx.operationId ?? 'reconcile',
      kind: 'reconcile',
      step,
      tenant: toTenant(tenant),
      signal: ctx.signal ?? new AbortController().signal,
    });
  }
}
