import { afterAll } from 'vitest';
import { onboard, startStack, type TestStack } from '../helpers/runtime.js';
import { TABLES } from './red-team-shared.js';
import {
  describeRedTeamPromoted,
  type PromotedTenant,
  promoteTenant,
  redTeamTenant,
  seedTenant,
  type Tier,
} from './red-team-suite.js';

/**
 * The red-team isolation attempts for promoted tenants (describeRedTeamPromoted in
 * red-team-suite.ts) at version 1: tenants promoted pool → bridge, pool → silo and bridge → silo,
 * attacked and attacking during their rollback window. red-team-v2.test.ts runs the same attempts at
 * version 2, after a rollout.
 */
const VERSION_1 = { version: 1, tables: TABLES };
let s: TestStack | undefined;

describeRedTeamPromoted('isolation of promoted tenants, inside the rollback window', VERSION_1, async () => {
  s = await startStack({ TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: '600000' });
  const plan: [string, Tier, Tier | null][] = [
    ['pool', 'pool', null],
    ['pool-2', 'pool', null],
    ['bridge', 'bridge', null],
    ['silo', 'silo', null],
    ['pool→bridge', 'pool', 'bridge'],
    ['pool→silo', 'pool', 'silo'],
    ['bridge→silo', 'bridge', 'silo'],
  ];
  const tenants: PromotedTenant[] = [];
  for (const [label, tier, to] of plan) {
    const t = { ...(await redTeamTenant(s, await onboard(s, tier), tier)), label };
    await seedTenant(t, VERSION_1);
    tenants.push(to ? await promoteTenant(s, t, to) : t);
  }
  return { stack: s, tenants };
});

afterAll(async () => {
  await s?.close();
});
