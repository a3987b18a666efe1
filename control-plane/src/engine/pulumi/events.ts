import type * as pulumi from '@pulumi/pulumi';

type EngineEvent = pulumi.automation.EngineEvent;
type StepEventMetadata = pulumi.automation.StepEventMetadata;

export type ProgressStatus = 'running' | 'succeeded' | 'failed' | 'warning';

/** The shape StepContext.progress takes. */
export interface StepProgress {
  resource: string;
  action: string;
  status: ProgressStatus;
}

/** `urn:pulumi:<stack>::<project>::<parent$type>::<name>` → `{ type, name }`. */
export function parseUrn(urn: string): { type: string; name: string } {
  const parts = urn.split('::');
  const qualified = parts[2] ?? '';
  const type = qualified.split('$').at(-1) ?? qualified;
  return { type, name: parts.slice(3).join('::') };
}

const label = (urn: string) => {
  const { type, name } = parseUrn(urn);
  return `${type}::${name}`;
};

const QUIET_OPS = new Set(['same', 'read', 'refresh']);

/**
 * One engine event → at most one progress record. Steps that change nothing (`same`)
 * are dropped so a no-op run records no noise; the summary closes the step.
 */
export function progressFromEvent(
  event: EngineEvent,
  opts: { includeSame?: boolean } = {},
): StepProgress | null {
  const step = (m: StepEventMetadata, status: ProgressStatus): StepProgress | null =>
    !opts.includeSame && QUIET_OPS.has(m.op) ? null : { resource: label(m.urn), action: m.op, status };
  if (event.resourcePreEvent) return step(event.resourcePreEvent.metadata, 'running');
  if (event.resOutputsEvent) return step(event.resOutputsEvent.metadata, 'succeeded');
  if (event.resOpFailedEvent) {
    const m = event.resOpFailedEvent.metadata;
    return { resource: label(m.urn), action: m.op, status: 'failed' };
  }
  if (event.diagnosticEvent) {
    const d = event.diagnosticEvent;
    if (d.severity !== 'error' && d.severity !== 'warning') return null;
    return {
      resource: d.urn ? label(d.urn) : 'stack',
      action: 'diagnostic',
      status: d.severity === 'error' ? 'failed' : 'warning',
    };
  }
  if (event.summaryEvent) {
    const s = event.summaryEvent;
    return { resource: 'stack', action: 'summary', status: s.maybeCorrupt ? 'failed' : 'succeeded' };
  }
  return null;
}

/** Error diagnostics as text, for the step's error message (first few, trimmed). */
export function errorDiagnostics(events: EngineEvent[], limit = 5): string[] {
  return events
    .map((e) => e.diagnosticEvent)
    .filter((d): d is NonNullable<typeof d> => d !== undefined && d.severity === 'error' && !d.ephemeral)
    .map((d) => `${d.urn ? `${label(d.urn)}: ` : ''}${d.message.trim()}`)
    .slice(0, limit);
}

export type DriftKind = 'changed' | 'changed-requires-replace' | 'missing' | 'unmanaged-in-state';

export interface DriftFinding {
  urn: string;
  type: string;
  name: string;
  kind: DriftKind;
  op: string;
  /** Properties that differ, as the engine reports them. */
  properties: string[];
}

const DRIFT_OPS: Record<string, DriftKind> = {
  update: 'changed',
  replace: 'changed-requires-replace',
  'create-replacement': 'changed-requires-replace',
  'delete-replaced': 'changed-requires-replace',
  create: 'missing',
  delete: 'unmanaged-in-state',
};

/**
 * Drift from the events of `stack.preview({ refresh: true })`: after the refresh, every
 * step that is not `same` means the cloud no longer matches the program. Read from the
 * per-resource step events, never the summary counts (refresh-preview counts are wrong,
 * pulumi#19443). Components and the stack itself have no cloud state and are skipped.
 */
export function driftFromPreviewEvents(events: EngineEvent[]): DriftFinding[] {
  const byUrn = new Map<string, DriftFinding>();
  for (const e of events) {
    const m = e.resourcePreEvent?.metadata ?? e.resOutputsEvent?.metadata;
    if (!m) continue;
    const kind = DRIFT_OPS[m.op];
    if (!kind) continue;
    const state = m.new ?? m.old;
    if (state && state.custom === false) continue; // component resource
    if (m.type === 'pulumi:pulumi:Stack') continue;
    const { type, name } = parseUrn(m.urn);
    const properties = [...new Set([...(m.diffs ?? []), ...Object.keys(m.detailedDiff ?? {})])].sort();
    const prev = byUrn.get(m.urn);
    // A replace shows up as several steps; keep the most severe kind and the union of properties.
    const severity = (k: DriftKind) =>
      ['changed', 'unmanaged-in-state', 'missing', 'changed-requires-replace'].indexOf(k);
    if (!prev || severity(kind) > severity(prev.kind)) {
      byUrn.set(m.urn, {
        urn: m.urn,
        type,
        name,
        kind,
        op: m.op,
        properties: [...new Set([...(prev?.properties ?? []), ...properties])].sort(),
      });
    } else {
      prev.properties = [...new Set([...prev.properties, ...properties])].sort();
    }
  }
  return [...byUrn.values()].sort((a, b) => a.urn.localeCompare(b.urn));
}
