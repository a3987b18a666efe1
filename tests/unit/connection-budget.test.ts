import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../control-plane/src/config.js';
import {
  connectionBudgetOf,
  connectionCost,
  judgeConnections,
  overcommitCeiling,
  tenantConnectionLimit,
} from '../../control-plane/src/domain/tiers.js';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';

const { catalog } = loadTemplates(path.resolve(import.meta.dirname, '../../templates'));
const limit = (t: 'bridge' | 'silo') => catalog.tiers[t].role.connectionLimit;

describe('connection budget of a cluster', () => {
  it('is max_connections less the superuser and the reserved slots', () => {
    expect(
      connectionBudgetOf({ maxConnections: 300, superuserReservedConnections: 3, reservedConnections: 20 }),
    ).toBe(277);
    expect(
      connectionBudgetOf({ maxConnections: 10, superuserReservedConnections: 3, reservedConnections: 20 }),
    ).toBe(0);
  });
});

describe('what a change adds', () => {
  it('a pool tenant shares the pool login: nothing', () => {
    expect(tenantConnectionLimit(catalog, 'pool')).toBe(0);
    expect(connectionCost(catalog, 'pool')).toBe(0);
  });
  it("a bridge or silo onboarding: its tier's role limit", () => {
    expect(connectionCost(catalog, 'bridge')).toBe(limit('bridge'));
    expect(connectionCost(catalog, 'silo')).toBe(limit('silo'));
  });
  it("a promotion: the difference between the tiers' limits, never less than nothing", () => {
    expect(connectionCost(catalog, 'silo', 'pool')).toBe(limit('silo'));
    expect(connectionCost(catalog, 'silo', 'bridge')).toBe(limit('silo') - limit('bridge'));
    expect(connectionCost(catalog, 'pool', 'silo')).toBe(0); // a rollback gives connections back
  });
});

describe('admission', () => {
  it('admits what fits the budget', () => {
    expect(judgeConnections({ budget: 277, committed: 277, cost: 50, overcommit: 1 })).toBe('within');
  });
  it('refuses what goes past it without an overcommit', () => {
    expect(judgeConnections({ budget: 277, committed: 278, cost: 50, overcommit: 1 })).toBe('refused');
  });
  it('accepts past the budget up to budget × overcommit, flagged', () => {
    expect(overcommitCeiling(200, 1.5)).toBe(300);
    expect(judgeConnections({ budget: 200, committed: 300, cost: 50, overcommit: 1.5 })).toBe(
      'overcommitted',
    );
    expect(judgeConnections({ budget: 200, committed: 301, cost: 50, overcommit: 1.5 })).toBe('refused');
    expect(judgeConnections({ budget: 200, committed: 10_000, cost: 50, overcommit: Infinity })).toBe(
      'overcommitted',
    );
  });
  it('never refuses a change that adds nothing, even on a cluster already past its budget', () => {
    expect(judgeConnections({ budget: 100, committed: 500, cost: 0, overcommit: 1 })).toBe('within');
  });
});

describe('TENANTRY_CONNECTION_OVERCOMMIT', () => {
  it('defaults to no overcommit', () => {
    expect(loadConfig({}).connectionOvercommit).toBe(1);
  });
  it('takes a ratio, or allow for no ceiling', () => {
    expect(loadConfig({ TENANTRY_CONNECTION_OVERCOMMIT: '1.25' }).connectionOvercommit).toBe(1.25);
    expect(loadConfig({ TENANTRY_CONNECTION_OVERCOMMIT: 'allow' }).connectionOvercommit).toBe(
      Number.POSITIVE_INFINITY,
    );
  });
  it.each(['0.5', '0', 'yes', '-1', '1e3', ''.padEnd(5, '9')])('refuses %s, naming the variable', (v) => {
    expect(() => loadConfig({ TENANTRY_CONNECTION_OVERCOMMIT: v })).toThrow(ConfigError);
    expect(() => loadConfig({ TENANTRY_CONNECTION_OVERCOMMIT: v })).toThrow(/TENANTRY_CONNECTION_OVERCOMMIT/);
  });
});
