import type { OutputMap } from '@pulumi/pulumi/automation/index.js';

export type PlainOutputs = Record<string, string | number | boolean>;

/**
 * The stack outputs a control plane may record: never one Pulumi marks secret, and only plain
 * values (an object could carry anything; every output Tenantry records is a string, number or
 * boolean). Applied in the child, before anything crosses the process boundary, and again by
 * the engine on what it receives.
 */
export function plainOutputs(outputs: OutputMap | Record<string, unknown>, secretAware = true): PlainOutputs {
  const out: PlainOutputs = {};
  for (const [k, raw] of Object.entries(outputs)) {
    let v: unknown = raw;
    if (secretAware) {
      const o = raw as { value?: unknown; secret?: boolean };
      if (o?.secret !== false) continue; // secret, or not an output value at all
      v = o.value;
    }
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
  }
  return out;
}
