import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { lintTemplate } from '../../control-plane/src/lib/template-lint.js';
import { loadTemplates } from '../../control-plane/src/lib/templates.js';
import { adminUrl, auth, onboard, startStack, superQuery, type TestStack } from '../helpers/runtime.js';
import { until } from '../helpers/server.js';
import {
  CARELESS_VERSION_3,
  copyTemplates,
  ISOLATION_VERSION_2,
  restartStack,
  type TemplatesCopy,
} from '../helpers/templates.js';
import { attempt, secretsOf, TABLES, TABLES_V2 } from './red-team-shared.js';
import {
  describeRedTeam,
  describeRedTeamPromoted,
  hardenDataPlane,
  type PromotedTenant,
  promoteTenant,
  type RedTeamSchema,
  type RedTeamTenant,
  redTeamTenant,
  seedTenant,
  type Tier,
} from './red-team-suite.js';

/**
 * The red-team isolation suite (red-team-suite.ts, the same attacks as red-team.test.ts and
 * red-team-promoted.test.ts) at version 2 of the template. A fleet is onboarded at version 1 from a
 * copy of the templates and seeded; version 2 (tests/helpers/templates.ts ISOLATION_VERSION_2: a
 * nullable `note` and an index on (tenant_id, note) on every table, and a new table `tags`) is
 * deployed, the control plane restarted on it, and shipped through POST /v1/rollouts (the pool's
 * shared tables as the platform step, then the waves). Tenants onboarded after the rollout get
 * version 2 directly; three rolled-out tenants are then promoted (pool → bridge, pool → silo,
 * bridge → silo). Every attack runs against every tier, and through the new column and index.
 * Last, on the same stack, a version 3 that grants its schema and tables to PUBLIC is deployed and
 * rolled out (a bridge tenant promoted across it): nothing of it may stay reachable (docs/rollouts.md,
 * Isolation at a new version).
 */
const VERSION_1: RedTeamSchema = { version: 1, tables: TABLES };
const VERSION_2: RedTeamSchema = {
  version: 2,
  tables: TABLES_V2,
  added: { column: 'note', index: (table) => `${table}_note_idx` },
};

let s: TestStack | undefined;
let tpl: TemplatesCopy | undefined;
/** The suite's fleet: per tier, a rolled-out tenant, one onboarded after the rollout, another rolled out. */
const fleet: RedTeamTenant[] = [];
/** The promoted suite's: unpromoted bystanders from the fleet, and three tenants promoted at version 2. */
const promotedFleet: PromotedTenant[] = [];
/** A bridge tenant at version 2 that no suite attacks: the last test promotes it while version 3 is deployed. */
let spare: PromotedTenant;
type Rollout = {
  id: string;
  status: string;
  platform: { status: string; fromVersion: number; version: number };
  progress: Record<string, number>;
  verification: { mismatchCount: number; checked: number };
  tenants: { slug: string; status: string }[];
};
let rollout: Rollout;
const api = (method: 'GET' | 'POST', url: string, payload?: object) =>
  s!.app.inject({ method, url, headers: auth(s!.tokens.sre), ...(payload ? { payload } : {}) });

/**
 * Deploys a version as an operator does (the file lands in the templates directory, the control plane
 * restarts) and rolls it out with the default waves (a canary of one tenant per tier, then the rest).
 */
async function deployAndRollOut(version: number, name: string, sql: string): Promise<Rollout> {
  await deploy(version, name, sql);
  return rollOut(version);
}
async function deploy(version: number, name: string, sql: string): Promise<void> {
  tpl!.addVersion(version, name, sql);
  s = await restartStack(s!);
}
async function rollOut(version: number): Promise<Rollout> {
  const res = await api('POST', '/v1/rollouts', { toVersion: version });
  if (res.statusCode !== 202) throw new Error(`rollout: ${res.statusCode} ${res.body}`);
  return until('the rollout to settle', async () => {
    const r = (await api('GET', `/v1/rollouts/${res.json().id}?limit=1000`)).json();
    return r.status === 'running' ? undefined : r;
  });
}

/** A drift sweep's findings on this file's tenants and on the platform (the cluster is shared). */
async function fleetDrift(): Promise<{ findings: unknown[]; tenantsChecked: number }> {
  const run = await api('POST', '/v1/drift-runs');
  expect(run.statusCode).toBe(202);
  const body = await until('the sweep to end', async () => {
    const b = (await api('GET', `/v1/drift-runs/${run.json().id}`)).json();
    return b.status === 'queued' || b.status === 'running' ? undefined : b;
  });
  expect(body.status).toBe('succeeded');
  const mine = [...fleet, ...promotedFleet, spare].map((t) => t.slug);
  const findings = body.findings as { tenantSlug: string | null; scope: string; name: string }[];
  // Orphans of other test files' tenants are theirs; none names ours.
  return {
    findings: findings.filter(
      (f) =>
        (f.tenantSlug !== null && mine.includes(f.tenantSlug)) ||
        f.scope === 'platform' ||
        mine.some((slug) => f.name.includes(tenantObjectName(slug))),
    ),
    tenantsChecked: body.tenantsChecked,
  };
}

beforeAll(async () => {
  tpl = copyTemplates();
  s = await startStack({ TENANTRY_TEMPLATES_DIR: tpl.dir, TENANTRY_PROMOTION_ROLLBACK_WINDOW_MS: '600000' });
  await hardenDataPlane(s);
  // Version 1: the fleet the rollout finds, each tenant with its rows.
  const rolled: RedTeamTenant[] = [];
  for (const tier of ['pool', 'pool', 'bridge', 'bridge', 'silo', 'silo'] as const)
    rolled.push(await redTeamTenant(s, await onboard(s, tier), tier));
  const toPromote: [string, Tier, Tier][] = [
    ['pool→bridge', 'pool', 'bridge'],
    ['pool→silo', 'pool', 'silo'],
    ['bridge→silo', 'bridge', 'silo'],
  ];
  const movers: PromotedTenant[] = [];
  for (const [label, tier] of toPromote)
    movers.push({ ...(await redTeamTenant(s, await onboard(s, tier), tier)), label });
  for (const t of [...rolled, ...movers]) await seedTenant(t, VERSION_1);

  rollout = await deployAndRollOut(2, 'notes', ISOLATION_VERSION_2);
  // What version 2 adds, on the rows the tenants had, and the new table.
  for (const t of [...rolled, ...movers]) await seedTenant(t, VERSION_2, ['tags']);

  // Onboarded after the rollout: built at version 2.
  const late: RedTeamTenant[] = [];
  for (const tier of ['pool', 'bridge', 'silo'] as const) {
    const t = await redTeamTenant(s, await onboard(s, tier), tier);
    await seedTenant(t, VERSION_2);
    late.push(t);
  }
  // Per tier: rolled out, onboarded late, rolled out; a pair within a tier is rolled vs late.
  for (const i of [0, 1, 2]) fleet.push(rolled[2 * i]!, late[i]!, rolled[2 * i + 1]!);

  // Promoted at version 2, inside their rollback window; bystanders of every tier, both kinds.
  const [pool, poolLate, , bridge, , , silo] = fleet;
  promotedFleet.push(
    { ...pool!, label: 'pool' },
    { ...poolLate!, label: 'pool-2' },
    { ...bridge!, label: 'bridge' },
    { ...silo!, label: 'silo' },
  );
  for (const [i, [, , to]] of toPromote.entries()) promotedFleet.push(await promoteTenant(s, movers[i]!, to));
  spare = { ...(await redTeamTenant(s, await onboard(s, 'bridge'), 'bridge')), label: 'spare' };
  await seedTenant(spare, VERSION_2);
}, 300_000);

afterAll(async () => {
  await s?.close();
  tpl?.remove();
});

describe('the fleet at version 2', () => {
  it('reached version 2 through one rollout: the platform step, then every tenant of every tier, ledger and catalogs agreeing', () => {
    expect(rollout.status).toBe('completed');
    expect(rollout.platform).toMatchObject({ status: 'succeeded', fromVersion: 1, version: 2 });
    // Every tenant onboarded at version 1 (the late ones came after it); the movers were promoted after it.
    const rolledOut = [...fleet.filter((_, i) => i % 3 !== 1), ...promotedFleet.filter((t) => t.left)];
    expect(Object.fromEntries(rollout.tenants.map((t) => [t.slug, t.status]))).toEqual(
      Object.fromEntries(rolledOut.map((t) => [t.slug, 'succeeded'])),
    );
    expect(rollout.progress).toMatchObject({ total: 9, succeeded: 9, failed: 0, parked: 0 });
    expect(rollout.verification).toMatchObject({ mismatchCount: 0, checked: 9 });
  });

  it('the template lint accepts version 2, a new table and a column on every table', async () => {
    const db = new pg.Client({ connectionString: adminUrl('postgres') });
    await db.connect();
    try {
      const lint = await lintTemplate(db, loadTemplates(tpl!.dir).tenantSchema);
      expect(lint.issues).toEqual([]);
      expect(lint.tablesByVersion[2]).toEqual(Object.keys(TABLES_V2).sort());
      expect(lint.createsTables).toEqual([1, 2]);
    } finally {
      await db.end();
    }
  });

  it('a drift sweep finds nothing on the fleet: no drift, no isolation finding, nothing pending', async () => {
    const drift = await fleetDrift();
    expect(drift.findings).toEqual([]);
    expect(drift.tenantsChecked).toBeGreaterThanOrEqual(fleet.length + 3);
  });
});

describeRedTeam('the template at version 2, after a rollout', VERSION_2, async () => ({
  stack: s!,
  tenants: fleet,
}));

describeRedTeamPromoted(
  'isolation of tenants promoted at version 2, inside the rollback window',
  VERSION_2,
  async () => ({ stack: s!, tenants: promotedFleet }),
);

// Last: it deploys a version 3 on the same stack.
describe('a version that grants to PUBLIC, rolled out', () => {
  it("leaves nothing PUBLIC reaches in any tenant's schema: no tenant reads another's rows, drift finds nothing", async () => {
    await deploy(3, 'careless_grant', CARELESS_VERSION_3);
    // Promoted before the rollout: its bridge source is migrated to version 3 by the promotion itself
    // (a promotion moves a tenant between placements of one version) and kept for the rollback window.
    const moved = await promoteTenant(s!, spare, 'silo');
    const r = await rollOut(3);
    expect(r.status).toBe('completed');
    expect(r.progress).toMatchObject({ failed: 0, parked: 0, pending: 0, skipped: 1 });
    expect(r.progress.succeeded).toBe(fleet.length + 3);
    // Every placement of a tenant (the one a promotion left included): PUBLIC holds no privilege on
    // the schema, a table or a column.
    const tenants: (RedTeamTenant & Pick<PromotedTenant, 'left'>)[] = [
      ...fleet,
      ...promotedFleet.filter((t) => t.left),
      moved,
    ];
    const placements = tenants.flatMap((t) => [
      { database: t.conn.database, schema: t.conn.schema! },
      ...(t.left ? [t.left] : []),
    ]);
    expect(placements.filter((p) => p.schema !== 'pool').length).toBeGreaterThanOrEqual(8);
    for (const p of placements.filter((x) => x.schema !== 'pool')) {
      const [row] = await superQuery<{ version: number; granted: string[] }>(
        p.database,
        `SELECT (SELECT version FROM tenantry_meta.schema_versions WHERE schema_name = $1) AS version,
                ARRAY(SELECT 'schema'::text FROM pg_namespace n, aclexplode(n.nspacl) a
                       WHERE n.nspname = $1 AND a.grantee = 0
                      UNION ALL
                      SELECT c.relname::text FROM pg_class c, aclexplode(c.relacl) a
                       WHERE c.relnamespace = $1::regnamespace AND a.grantee = 0
                      UNION ALL
                      SELECT c.relname || '.' || t.attname::text FROM pg_class c
                        JOIN pg_attribute t ON t.attrelid = c.oid, aclexplode(t.attacl) a
                       WHERE c.relnamespace = $1::regnamespace AND a.grantee = 0) AS granted`,
        [p.schema],
      );
      expect({ ...p, ...row }).toEqual({ ...p, version: 3, granted: [] });
    }
    // Every tenant against every other's placements, every table: nothing read.
    for (const a of tenants)
      for (const b of tenants) {
        if (a === b) continue;
        for (const p of [
          { database: b.conn.database, schema: b.conn.schema! },
          ...(b.left ? [b.left] : []),
        ]) {
          const names = Object.keys(TABLES_V2);
          const out = await attempt(
            a,
            names.map((name) => [`SELECT * FROM ${p.schema}.${name} WHERE tenant_id = $1`, [b.id]]),
            p.database,
          );
          out.forEach((o, i) => {
            const where = `${a.slug} -> ${b.slug} ${p.schema}.${names[i]}`;
            expect(o.rows, where).toBe(0);
            for (const secret of secretsOf(b)) expect(o.refused ?? '', where).not.toContain(secret);
          });
        }
      }
    expect((await fleetDrift()).findings).toEqual([]);
  });
});
