import { afterAll } from 'vitest';
import { onboard, startStack, type TestStack } from '../helpers/runtime.js';
import { TABLES } from './red-team-shared.js';
import {
  describeRedTeam,
  hardenDataPlane,
  type RedTeamTenant,
  redTeamTenant,
  seedTenant,
} from './red-team-suite.js';

/**
 * The red-team isolation suite (red-team-suite.ts) on a fleet built at version 1 of the template:
 * two tenants per tier, each seeded with one row in every table. red-team-v2.test.ts runs the same
 * suite on a fleet rolled out to version 2.
 */
const VERSION_1 = { version: 1, tables: TABLES };
let s: TestStack | undefined;

describeRedTeam('the template at version 1', VERSION_1, async () => {
  s = await startStack();
  await hardenDataPlane(s);
  const tenants: RedTeamTenant[] = [];
  for (const tier of ['pool', 'pool', 'bridge', 'bridge', 'silo', 'silo'] as const) {
    const t = await redTeamTenant(s, await onboard(s, tier), tier);
    await seedTenant(t, VERSION_1);
    tenants.push(t);
  }
  return { stack: s, tenants };
});

afterAll(async () => {
  await s?.close();
});
