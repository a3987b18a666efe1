import pc from 'picocolors';
import type { Operation, Tenant, TenantDetail } from '../domain/tenant.js';
import { type Column, listTable, recordTable, shortTime, status } from './output.js';

/** How each API object reads as a table. The JSON and YAML forms are the objects themselves. */

export const tenantColumns: Column<Tenant>[] = [
  { header: 'SLUG', value: (t) => t.slug },
  { header: 'TIER', value: (t) => t.tier },
  { header: 'STATUS', value: (t) => status(t.status) },
  { header: 'NAME', value: (t) => t.name },
  { header: 'CREATED', value: (t) => t.createdAt },
];

export function tenantTable(t: Tenant | TenantDetail): string {
  const detail = t as Partial<TenantDetail>;
  const rows: [string, unknown][] = [
    ['slug', t.slug],
    ['id', t.id],
    ['name', t.name],
    ['tier', t.tier],
    ['status', status(t.status)],
    ['region', t.region],
    ['plan', t.plan],
    ['contact', t.contactEmail],
    ['template version', t.templateVersion],
    ['created', t.createdAt],
    ['updated', t.updatedAt],
    ...Object.entries(t.labels ?? {}).map(([k, v]) => [`label ${k}`, v] as [string, unknown]),
    ...(t.suspension
      ? [
          [
            'suspended',
            `${t.suspension.reason} since ${shortTime(t.suspension.at)}${t.suspension.note ? ` (${t.suspension.note})` : ''}`,
          ] as [string, unknown],
        ]
      : []),
    ...Object.entries(t.outputs).map(([k, v]) => [`output ${k}`, v] as [string, unknown]),
  ];
  const op = detail.activeOperation;
  if (op !== undefined) {
    rows.push([
      'in flight',
      op
        ? `${op.id} ${op.kind} ${status(op.status)}${op.currentStep ? ` (step ${op.currentStep})` : ''}`
        : null,
    ]);
  }
  const p = detail.promotion;
  if (p) {
    rows.push(['promotion', `${p.operationId} ${p.fromTier}→${p.toTier}`]);
    rows.push(['cut over', p.cutoverAt]);
    rows.push([
      'rollback until',
      p.rolledBack
        ? 'rolled back'
        : `${p.rollbackUntil ?? '-'}${p.rollbackAvailable ? '' : ' (not available)'}`,
    ]);
  }
  return recordTable(rows);
}

export const operationColumns: Column<Operation>[] = [
  { header: 'ID', value: (o) => o.id },
  { header: 'KIND', value: (o) => o.kind },
  { header: 'TENANT', value: (o) => o.tenantSlug },
  { header: 'STATUS', value: (o) => status(o.status) },
  { header: 'STEP', value: (o) => o.currentStep },
  { header: 'CREATED', value: (o) => o.createdAt },
];

export function operationTable(o: Operation): string {
  const params = Object.keys(o.params).length > 0 ? o.params : null;
  const { resources: _listed, ...progress } = o.progress;
  const head = recordTable([
    ['id', o.id],
    ['kind', o.kind],
    ['tenant', o.tenantSlug],
    ['status', status(o.status)],
    ['current step', o.currentStep],
    ['attempts', o.attempts],
    ['error', o.error ? pc.red(o.error) : null],
    ['params', params],
    ...Object.entries(progress).map(([k, v]) => [`progress ${k}`, v] as [string, unknown]),
    ['created', o.createdAt],
    ['updated', o.updatedAt],
  ]);
  const steps = listTable(o.steps, [
    { header: 'STEP', value: (s) => s.name },
    { header: 'STATUS', value: (s) => status(s.status) },
    { header: 'STARTED', value: (s) => s.startedAt },
    { header: 'FINISHED', value: (s) => s.finishedAt },
    { header: 'ERROR', value: (s) => s.error },
  ]);
  return `${head}\n${steps}`;
}

/** A 202's tenant and operation, as table rows. */
export const acceptedTable = (body: { tenant: Tenant; operation: Operation }) =>
  recordTable([
    ['tenant', body.tenant.slug],
    ['tier', body.tenant.tier],
    ['status', status(body.tenant.status)],
    ['operation', body.operation.id],
    ['kind', body.operation.kind],
    ['operation status', status(body.operation.status)],
  ]);
