import type * as pulumi from '@pulumi/pulumi';
import { describe, expect, it } from 'vitest';
import {
  driftFromPreviewEvents,
  errorDiagnostics,
  parseUrn,
  progressFromEvent,
} from '../../control-plane/src/engine/pulumi/events.js';
import { rootStackUrn, stackUrnPrefix } from '../helpers/urns.js';

type EngineEvent = pulumi.automation.EngineEvent;
type OpType = pulumi.automation.OpType;

const STACK = rootStackUrn('acme');
const ACME = stackUrnPrefix('acme');
const KEY = `${ACME}tenantry:tenant:Silo$tenantry:tenant:Key$aws:kms/key:Key::tenant-acme-key-key`;
const RDS = `${ACME}tenantry:tenant:Silo$tenantry:tenant:Database$aws:rds/instance:Instance::tenant-acme-db-instance`;
const SECRET = `${ACME}tenantry:tenant:Silo$tenantry:tenant:Secret$aws:secretsmanager/secret:Secret::tenant-acme-connection-secret`;
const COMPONENT = `${ACME}tenantry:tenant:Silo::tenant-acme`;

let seq = 0;
function ev(e: Omit<EngineEvent, 'sequence' | 'timestamp'>): EngineEvent {
  return { sequence: seq++, timestamp: 1_700_000_000 + seq, ...e };
}

function meta(
  urn: string,
  op: OpType,
  extra: Partial<pulumi.automation.StepEventMetadata> = {},
  custom = true,
) {
  const { type } = parseUrn(urn);
  const state = { type, urn, custom, id: 'x', parent: STACK, inputs: {}, outputs: {}, provider: '' };
  return { op, urn, type, provider: '', old: state, new: state, ...extra };
}

describe('progressFromEvent', () => {
  it('maps a resource step to running, then succeeded', () => {
    expect(progressFromEvent(ev({ resourcePreEvent: { metadata: meta(KEY, 'create') } }))).toEqual({
      resource: 'aws:kms/key:Key::tenant-acme-key-key',
      action: 'create',
      status: 'running',
    });
    expect(progressFromEvent(ev({ resOutputsEvent: { metadata: meta(KEY, 'create') } }))?.status).toBe(
      'succeeded',
    );
  });

  it('maps a failed operation and an error diagnostic to failed', () => {
    expect(
      progressFromEvent(ev({ resOpFailedEvent: { metadata: meta(RDS, 'update'), status: 1, steps: 1 } })),
    ).toEqual({
      resource: 'aws:rds/instance:Instance::tenant-acme-db-instance',
      action: 'update',
      status: 'failed',
    });
    expect(
      progressFromEvent(
        ev({
          diagnosticEvent: {
            urn: RDS,
            message: 'InvalidParameterCombination',
            color: 'never',
            severity: 'error',
          },
        }),
      ),
    ).toEqual({
      resource: 'aws:rds/instance:Instance::tenant-acme-db-instance',
      action: 'diagnostic',
      status: 'failed',
    });
  });

  it('drops unchanged steps and info diagnostics, and closes with the summary', () => {
    expect(progressFromEvent(ev({ resourcePreEvent: { metadata: meta(KEY, 'same') } }))).toBeNull();
    expect(
      progressFromEvent(ev({ resourcePreEvent: { metadata: meta(KEY, 'same') } }), { includeSame: true })
        ?.action,
    ).toBe('same');
    expect(
      progressFromEvent(ev({ diagnosticEvent: { message: 'hello', color: 'never', severity: 'info' } })),
    ).toBeNull();
    expect(progressFromEvent(ev({ stdoutEvent: { message: 'Updating', color: 'never' } }))).toBeNull();
    const summary = {
      maybeCorrupt: false,
      durationSeconds: 12,
      resourceChanges: { create: 3 },
      policyPacks: {},
    };
    expect(progressFromEvent(ev({ summaryEvent: summary }))).toEqual({
      resource: 'stack',
      action: 'summary',
      status: 'succeeded',
    });
    expect(progressFromEvent(ev({ summaryEvent: { ...summary, maybeCorrupt: true } }))?.status).toBe(
      'failed',
    );
  });

  it('collects error diagnostics for the step error', () => {
    const events = [
      ev({
        diagnosticEvent: {
          urn: RDS,
          message: 'creating RDS DB Instance: InvalidParameterValue\n',
          color: 'never',
          severity: 'error',
        },
      }),
      ev({ diagnosticEvent: { message: 'just info', color: 'never', severity: 'info' } }),
    ];
    expect(errorDiagnostics(events)).toEqual([
      'aws:rds/instance:Instance::tenant-acme-db-instance: creating RDS DB Instance: InvalidParameterValue',
    ]);
  });
});

describe('driftFromPreviewEvents', () => {
  it('finds nothing when every step after the refresh is same, whatever the summary says', () => {
    const events = [
      ev({ resourcePreEvent: { metadata: meta(KEY, 'refresh') } }),
      ev({ resOutputsEvent: { metadata: meta(KEY, 'refresh') } }),
      ev({ resourcePreEvent: { metadata: meta(KEY, 'same'), planning: true } }),
      ev({ resourcePreEvent: { metadata: meta(RDS, 'same'), planning: true } }),
      // refresh-preview summaries can report changes that are not there (pulumi#19443)
      ev({
        summaryEvent: {
          maybeCorrupt: false,
          durationSeconds: 3,
          resourceChanges: { update: 2 },
          policyPacks: {},
        },
      }),
    ];
    expect(driftFromPreviewEvents(events)).toEqual([]);
  });

  it('reports changed properties, replacements and resources deleted out of band, per resource', () => {
    const events = [
      ev({
        resourcePreEvent: {
          metadata: meta(RDS, 'update', {
            diffs: ['publiclyAccessible'],
            detailedDiff: { publiclyAccessible: { diffKind: 'update' as never, inputDiff: false } },
          }),
          planning: true,
        },
      }),
      ev({
        resourcePreEvent: {
          metadata: meta(KEY, 'create-replacement', { diffs: ['policy'] }),
          planning: true,
        },
      }),
      ev({
        resourcePreEvent: {
          metadata: meta(KEY, 'replace', { diffs: ['customerMasterKeySpec'] }),
          planning: true,
        },
      }),
      ev({ resourcePreEvent: { metadata: meta(SECRET, 'create'), planning: true } }),
      ev({ resourcePreEvent: { metadata: meta(COMPONENT, 'update', {}, false), planning: true } }),
    ];
    // Sorted by URN (stable output for the findings table).
    expect(driftFromPreviewEvents(events)).toEqual([
      {
        urn: RDS,
        type: 'aws:rds/instance:Instance',
        name: 'tenant-acme-db-instance',
        kind: 'changed',
        op: 'update',
        properties: ['publiclyAccessible'],
      },
      {
        urn: KEY,
        type: 'aws:kms/key:Key',
        name: 'tenant-acme-key-key',
        kind: 'changed-requires-replace',
        op: 'create-replacement',
        properties: ['customerMasterKeySpec', 'policy'],
      },
      {
        urn: SECRET,
        type: 'aws:secretsmanager/secret:Secret',
        name: 'tenant-acme-connection-secret',
        kind: 'missing',
        op: 'create',
        properties: [],
      },
    ]);
  });
});
