/**
 * A promotion on the aws target, end to end on real Postgres: the source is a shared cluster (the
 * test server, a database of its own), the target a second Postgres server standing in for the
 * tenant's RDS instance. What cannot run here is simulated, and only that: the Pulumi `up`s (a
 * runner that applies what each program's dynamic resources would, through the same providers)
 * (Secrets Manager is the AWS API emulator, moto_server: the secrets the programs would write are
 * written there, and the engine reads them through the real SDK client). The engine's own steps, the
 * row move (copy, logical catch-up, freeze, drain, verify), routing and cleanup are the real ones.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CreateSecretCommand,
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import type pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantObjectName, tenantSecretName } from '../../control-plane/src/domain/naming.js';
import type {
  ConnectionDescriptor,
  PromotionParams,
  StepContext,
  StepTenant,
} from '../../control-plane/src/domain/ports.js';
import { startEmbedded } from '../../control-plane/src/embedded.js';
import { AwsEngine } from '../../control-plane/src/engine/aws.js';
import type { PulumiJob, PulumiResult } from '../../control-plane/src/engine/pulumi/runner.js';
import {
  databaseProvider,
  grantsProvider,
  poolMembershipProvider,
  poolProvider,
  roleProvider,
  schemaProvider,
} from '../../control-plane/src/providers/postgres/index.js';
import { DEFAULT_TEMPLATES_DIR, loadProgramTemplates } from '../../stacks/common/templates.js';
import { tenantOwnerRoleName } from '../../stacks/common/tenant-postgres.js';
import { MOTO_REGION, skipReason, useMoto } from '../aws/helpers/moto.js';
import { TEST_PLATFORM } from '../fixtures/platform.js';
import {
  adminUrl,
  createOwnerRole,
  dropDatabases,
  rand,
  superQuery,
  tenantClient,
  withClient,
} from '../helpers/runtime.js';
import { freePort } from '../helpers/server.js';
import { isCount } from './promotion-helpers.js';

const { catalog, tenantSchema: template } = loadProgramTemplates(DEFAULT_TEMPLATES_DIR);
const id = rand(4);
const SHARED_DB = `sc_${id}`;
const POOL_OWNER = `po_${id}`;
const POOL_APP = `pa_${id}`;
const POOL_PASSWORD = `pw-${rand(12)}`;
const SHARED_SECRET = TEST_PLATFORM.sharedCluster!.adminSecretName;
/**
 * The shared cluster's admin, as on RDS: no SUPERUSER, no BYPASSRLS (it sees pool rows only under
 * a tenant context), but CREATEROLE, CREATEDB and REPLICATION. It builds everything of the shared
 * database itself, as the stacks' dynamic resources would.
 */
const SHARED_ADMIN = `adm_${id}`;
const SHARED_ADMIN_PASSWORD = `a-${rand(12)}`;
const sharedAdminUrl = (database: string) => {
  const u = new URL(adminUrl(database));
  u.username = SHARED_ADMIN;
  u.password = SHARED_ADMIN_PASSWORD;
  return u.toString();
};
const platform = {
  ...TEST_PLATFORM,
  sharedCluster: { adminSecretName: SHARED_SECRET, ssl: false },
  pool: {
    ...TEST_PLATFORM.pool,
    schema: 'pool',
    ownerRole: POOL_OWNER,
    appRole: POOL_APP,
    tenantSetting: 'app.tenant_id',
  },
};
const uuid = () => crypto.randomUUID();
const opId = () => `op_${rand(14)}`;

/* ------------------------------------------------------------ the two servers */

const rdsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-rds-'));
fs.chmodSync(rdsDir, 0o755);
let rds: Awaited<ReturnType<typeof startEmbedded>>;
let rdsPassword: string;
let rdsPort: number;
const sharedPort = Number(new URL(adminUrl()).port);

/** Secrets Manager on the emulator: what the programs' `up`s write, and what the engine reads. */
useMoto({ reset: false });
const secrets = {
  client: () => new SecretsManagerClient({ region: MOTO_REGION }),
  /** Writes a secret's new version (creating the secret the first time); returns its ARN. */
  async set(name: string, value: Record<string, unknown>): Promise<string> {
    const sm = secrets.client();
    const SecretString = JSON.stringify(value);
    try {
      return (await sm.send(new PutSecretValueCommand({ SecretId: name, SecretString }))).ARN as string;
    } catch (e) {
      if ((e as Error).name !== 'ResourceNotFoundException') throw e;
      return (await sm.send(new CreateSecretCommand({ Name: name, SecretString }))).ARN as string;
    }
  },
  async get(name: string): Promise<Record<string, unknown>> {
    const res = await secrets.client().send(new GetSecretValueCommand({ SecretId: name }));
    return JSON.parse(res.SecretString ?? '{}');
  },
};
/** The staged RDS instance's master secret (its ARN, as RDS reports it). */
let RDS_SECRET_ARN = '';

/** The tenant's connection descriptor, as its secret holds it (with the password). */
const descriptorOf = async (slug: string) =>
  (await secrets.get(tenantSecretName(slug))) as unknown as Required<ConnectionDescriptor>;

const siloName = tenantObjectName;
/** Each tenant's descriptor on its first placement: what the source program's secret version holds. */
const sourceDescriptors = new Map<string, Record<string, unknown>>();
const siloPasswords = new Map<string, string>();

/**
 * The Pulumi `up`s, as the programs' dynamic resources would apply them: staging creates the silo
 * (roles, database, schema, grants) on the "RDS instance"; the target program's `up` writes the
 * secret's new version; the source program alone (unstage) deletes a discarded silo.
 */
const jobs: PulumiJob[] = [];
async function runner(job: PulumiJob): Promise<PulumiResult> {
  jobs.push(job);
  const { slug, tenantId } = job.input;
  const name = siloName(slug);
  const owner = tenantOwnerRoleName(slug);
  const limits = catalog.tiers.silo.role;
  if (job.input.stagedTier && !job.input.discardStaged) {
    // The routed (source) program writes its own descriptor: unchanged when staging, the flip back
    // when a rollback's `up` runs it again.
    await secrets.set(tenantSecretName(slug), { ...sourceDescriptors.get(slug) });
  }
  if (job.input.stagedTier === 'silo' && !job.input.discardStaged) {
    const password = siloPasswords.get(slug) ?? `s-${rand(12)}`;
    siloPasswords.set(slug, password);
    await withClient(rds.url('postgres'), async (db) => {
      await roleProvider.create(db, { name: owner, ...limits, connectionLimit: 0, login: false });
      await roleProvider.create(db, { name, ...limits, searchPath: ['app'], password });
      await databaseProvider.create(db, { name, owner });
    });
    await withClient(rds.url(name), async (db) => {
      await schemaProvider.create(db, { name: 'app', owner, template });
      await grantsProvider.create(db, { database: name, schema: 'app', role: name, owner });
    });
    return {
      summary: {},
      outputs: {
        stagedTier: 'silo',
        stagedHost: '127.0.0.1',
        stagedPort: rdsPort,
        stagedDatabase: name,
        stagedSchema: 'app',
        stagedUser: name,
        stagedAdminSecretArn: RDS_SECRET_ARN,
      },
    };
  }
  if (job.input.stagedTier === 'bridge' && !job.input.discardStaged) {
    // A staged bridge: the schema and its roles on the shared cluster itself.
    const password = siloPasswords.get(slug) ?? `s-${rand(12)}`;
    siloPasswords.set(slug, password);
    await withClient(sharedAdminUrl(SHARED_DB), async (db) => {
      const bridgeLimits = catalog.tiers.bridge.role;
      await roleProvider.create(db, {
        name: owner,
        ...bridgeLimits,
        connectionLimit: 0,
        login: false,
        grantToSessionUser: true,
      });
      await roleProvider.create(db, { name, ...bridgeLimits, searchPath: [name], password });
      await schemaProvider.create(db, { name, owner, template });
      await grantsProvider.create(db, { database: SHARED_DB, schema: name, role: name, owner });
    });
    return {
      summary: {},
      outputs: {
        stagedTier: 'bridge',
        stagedHost: '127.0.0.1',
        stagedPort: sharedPort,
        stagedDatabase: SHARED_DB,
        stagedSchema: name,
        stagedUser: name,
        stagedAdminSecretArn: '',
      },
    };
  }
  if (job.input.tier === 'bridge' && job.op === 'up' && !job.input.stagedTier) {
    await secrets.set(tenantSecretName(slug), {
      tenantId,
      tier: 'bridge',
      host: '127.0.0.1',
      port: sharedPort,
      database: SHARED_DB,
      schema: name,
      user: name,
      password: siloPasswords.get(slug),
      secretRef: tenantSecretName(slug),
    });
    return { summary: {}, outputs: { tier: 'bridge', database: SHARED_DB, schema: name, user: name } };
  }
  if (job.input.tier === 'silo' && job.op === 'up') {
    // Simulated engine latency: the write freeze spans the real `up`, too.
    await new Promise((r) => setTimeout(r, 300));
    await secrets.set(tenantSecretName(slug), {
      tenantId,
      tier: 'silo',
      host: '127.0.0.1',
      port: rdsPort,
      database: name,
      schema: 'app',
      user: name,
      password: siloPasswords.get(slug),
      secretRef: tenantSecretName(slug),
    });
    return { summary: {}, outputs: { tier: 'silo', database: name, schema: 'app', user: name } };
  }
  if (job.input.tier === 'pool' && !job.input.stagedTier) {
    await withClient(rds.url('postgres'), async (db) => {
      await databaseProvider.delete(db, { name, owner });
      await roleProvider.delete(db, { name, ...limits });
      await roleProvider.delete(db, { name: owner, ...limits });
    });
  }
  return { summary: {}, outputs: {} };
}

let engine: AwsEngine;

beforeAll(async () => {
  if (skipReason) return;
  rdsPort = await freePort();
  rds = await startEmbedded({ dataDir: rdsDir, port: rdsPort, log: pino({ level: 'silent' }) });
  rdsPassword = fs.readFileSync(path.join(rdsDir, 'pg-superuser.secret'), 'utf8').trim();
  await superQuery(
    'postgres',
    `CREATE ROLE ${SHARED_ADMIN} LOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE CREATEDB REPLICATION PASSWORD '${SHARED_ADMIN_PASSWORD}'`,
  );
  // What rds_superuser may do: write in replica mode (the target's guards and foreign keys stand aside).
  await superQuery('postgres', `GRANT SET ON PARAMETER session_replication_role TO ${SHARED_ADMIN}`);
  // Another file's local target may have revoked PUBLIC's CONNECT on the maintenance database.
  await superQuery('postgres', `GRANT CONNECT ON DATABASE postgres TO ${SHARED_ADMIN}`);
  await secrets.set(SHARED_SECRET, {
    username: SHARED_ADMIN,
    password: SHARED_ADMIN_PASSWORD,
    host: '127.0.0.1',
    port: sharedPort,
    dbname: SHARED_DB,
  });
  RDS_SECRET_ARN = await secrets.set('rds!db-0123', { username: 'postgres', password: rdsPassword });

  // The shared cluster as the pool program's dynamic resources leave it.
  await withClient(sharedAdminUrl('postgres'), (db) =>
    db.query(`CREATE DATABASE ${SHARED_DB} TEMPLATE template0`),
  );
  await withClient(sharedAdminUrl(SHARED_DB), async (db) => {
    const limits = catalog.tiers.pool.role;
    await roleProvider.create(db, {
      name: POOL_OWNER,
      ...limits,
      connectionLimit: 0,
      login: false,
      grantToSessionUser: true,
    });
    await roleProvider.create(db, {
      name: POOL_APP,
      ...limits,
      searchPath: ['pool'],
      password: POOL_PASSWORD,
    });
    await poolProvider.create(db, {
      schema: 'pool',
      owner: POOL_OWNER,
      appRole: POOL_APP,
      database: SHARED_DB,
      setting: 'app.tenant_id',
      template,
    });
  });

  engine = newEngine();
}, 120_000);

/** The engine as a control-plane process builds it; a second one stands for a restarted process. */
function newEngine(): AwsEngine {
  return new AwsEngine({
    backendUrl: 'file:///var/lib/tenantry/state',
    envVars: { PATH: '/usr/bin' },
    aws: { region: 'eu-west-1' },
    platform,
    workspaceRoot: path.join(rdsDir, 'pulumi'),
    concurrency: 4,
    timeoutMs: 60_000,
    programVersion: '1.0.0+template.1',
    policyPackDir: null,
    runner,
    clients: { secrets: secrets.client() },
    siloTls: false, // the second local server stands in for RDS, without TLS
    promotion: { freezeWaitMs: 5_000, lagPollMs: 100 },
  });
}

afterAll(async () => {
  await engine?.close();
  await rds?.stop();
  fs.rmSync(rdsDir, { recursive: true, force: true });
  // The shared cluster's database lives on the shared test cluster; the tenants' silos on `rds`, gone with it.
  await dropDatabases([SHARED_DB]);
});

/** A pool tenant of the shared cluster, with rows, routed there by its secret. */
async function poolTenant(slug: string, rows: number): Promise<StepTenant> {
  const t: StepTenant = { id: uuid(), slug, tier: 'pool', templateVersion: 1 };
  await withClient(sharedAdminUrl(SHARED_DB), (db) =>
    poolMembershipProvider.create(db, { schema: 'pool', tenantId: t.id, slug, setting: 'app.tenant_id' }),
  );
  await withClient(adminUrl(SHARED_DB), async (db) => {
    await db.query(
      `WITH u AS (INSERT INTO pool.users (tenant_id, email, name) SELECT $1, 'u' || g || '@x', 'n' || g FROM generate_series(1, $2) g RETURNING id)
       INSERT INTO pool.documents (tenant_id, owner_id, title, body) SELECT $1, id, 't', repeat('b', 50) FROM u`,
      [t.id, rows],
    );
  });
  await secrets.set(tenantSecretName(slug), {
    tenantId: t.id,
    tier: 'pool',
    host: '127.0.0.1',
    port: sharedPort,
    database: SHARED_DB,
    schema: 'pool',
    user: POOL_APP,
    password: POOL_PASSWORD,
    secretRef: tenantSecretName(slug),
    tenantSetting: 'app.tenant_id',
  });
  sourceDescriptors.set(slug, { ...(await secrets.get(tenantSecretName(slug))) });
  return t;
}

/** A bridge tenant of the shared cluster, as the bridge program's dynamic resources leave it. */
async function bridgeTenant(slug: string, rows: number): Promise<StepTenant> {
  const t: StepTenant = { id: uuid(), slug, tier: 'bridge', templateVersion: 1 };
  const name = siloName(slug);
  const owner = tenantOwnerRoleName(slug);
  const password = `b-${rand(12)}`;
  const limits = catalog.tiers.bridge.role;
  await withClient(sharedAdminUrl(SHARED_DB), async (db) => {
    await createOwnerRole(db, owner, limits);
    await roleProvider.create(db, { name, ...limits, searchPath: [name], password });
    await schemaProvider.create(db, { name, owner, template });
    await grantsProvider.create(db, { database: SHARED_DB, schema: name, role: name, owner });
  });
  await withClient(adminUrl(SHARED_DB), async (db) => {
    await db.query(
      `INSERT INTO ${name}.users (tenant_id, email) SELECT $1, 'u' || g || '@x' FROM generate_series(1, $2) g`,
      [t.id, rows],
    );
  });
  await secrets.set(tenantSecretName(slug), {
    tenantId: t.id,
    tier: 'bridge',
    host: '127.0.0.1',
    port: sharedPort,
    database: SHARED_DB,
    schema: name,
    user: name,
    password,
    secretRef: tenantSecretName(slug),
  });
  sourceDescriptors.set(slug, { ...(await secrets.get(tenantSecretName(slug))) });
  return t;
}

/**
 * A client of the tenant's application: each write follows the tenant's current descriptor (as a
 * data plane re-reading its secret would) and inserts one setting, in a transaction of its own.
 */
function writer(slug: string) {
  const acked: string[] = [];
  const refused: { key: string; code: string }[] = [];
  const failed: string[] = [];
  let stop = false;
  let n = 0;
  const done = (async () => {
    while (!stop) {
      const d = await descriptorOf(slug);
      const key = `w${n++}`;
      let c: pg.Client | undefined;
      try {
        c = await tenantClient(d);
        await c.query('BEGIN');
        if (d.tenantSetting) await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, d.tenantId]);
        await c.query(`INSERT INTO ${d.schema}.settings (tenant_id, key, value) VALUES ($1, $2, '{}')`, [
          d.tenantId,
          key,
        ]);
        await c.query('COMMIT');
        acked.push(`${d.tier}:${key}`);
      } catch (e) {
        const code = (e as { code?: string }).code ?? '';
        // Refused, never acknowledged: frozen (25006), or the placement it was writing to was
        // removed under it (57P01, its session ended by the drop) after routing moved away.
        if (code === '25006' || code === '57P01') refused.push({ key, code });
        else failed.push(`${key}: ${(e as Error).message}`);
      } finally {
        await c?.end().catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return {
    acked,
    refused,
    failed,
    async stop() {
      stop = true;
      await done;
    },
  };
}

function stepCtx(
  t: StepTenant,
  operationId: string,
  params: PromotionParams,
  step: string,
  progress: Record<string, unknown>,
): StepContext {
  return {
    operationId,
    kind: 'promote',
    step,
    tenant: t,
    signal: new AbortController().signal,
    params: { ...params },
    progress: { ...progress },
    report: async (patch) => {
      Object.assign(progress, patch);
    },
  };
}

const until = async (cond: () => boolean, ms = 20_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};

/** Promotion slots left on the shared cluster. */
const promotionSlots = () =>
  superQuery(SHARED_DB, `SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE 'tenantry_promo_%'`);
/** A tenant's rows in the pool's users table. */
const poolUsers = async (tenantId: string) =>
  (
    await superQuery<{ n: number }>(
      SHARED_DB,
      'SELECT count(*)::int AS n FROM pool.users WHERE tenant_id = $1',
      [tenantId],
    )
  )[0]?.n;
/** Whether the tenant's silo database exists on the "RDS" server. */
const siloDatabases = (slug: string) =>
  withClient(rds.url('postgres'), (db) =>
    db.query('SELECT 1 FROM pg_database WHERE datname = $1', [siloName(slug)]).then((r) => r.rows),
  );
/** The Pulumi runs for a tenant: [tier, staged tier, discard]. */
const stackRuns = (slug: string) =>
  jobs
    .filter((j) => j.input.slug === slug)
    .map((j) => [j.input.tier, j.input.stagedTier ?? null, j.input.discardStaged ?? false]);

/**
 * Runs a promotion's steps while the tenant's application writes, until it has written a few rows
 * on each side of the move. The writer is still running when this returns.
 */
async function promoteWhileWriting(t: StepTenant, params: PromotionParams, restartBefore?: string) {
  const op = opId();
  const progress: Record<string, unknown> = {};
  const w = writer(t.slug);
  await until(() => w.acked.length >= 5);
  let running = engine;
  for (const step of engine.promotionSteps(params)) {
    if (step === restartBefore) {
      // The control plane restarts here: nothing the first process held in memory carries over.
      if (running !== engine) await running.close();
      running = newEngine();
    }
    await running.runStep(stepCtx(t, op, params, step, progress));
  }
  if (running !== engine) await running.close();
  await until(() => w.acked.filter((k) => k.startsWith(`${params.toTier}:`)).length >= 5);
  return { op, progress, w };
}

describe.skipIf(skipReason !== null /* the reason is in the title */)(
  `a promotion on the aws target${skipReason ? ` (skipped, ${skipReason})` : ''}`,
  () => {
    it('moves a pool tenant into its RDS silo while it writes: nothing lost, the freeze refuses clearly, others untouched', async () => {
      const t = await poolTenant(`mover-${id}`, 500);
      const other = await poolTenant(`stayer-${id}`, 50);
      const params: PromotionParams = { fromTier: 'pool', toTier: 'silo' };
      const steps = engine.promotionSteps(params);
      // Staging `up`, the row move, the flipping `up`, the release (the unit tests pin the whole list).
      expect([steps[0], ...steps.slice(-2)]).toEqual(['stack-stage', 'stack-up', 'release']);
      const op = opId();
      const progress: Record<string, unknown> = {};
      const w = writer(t.slug);
      const o = writer(other.slug);
      await until(() => w.acked.length >= 10);
      for (const step of steps) {
        if (step === 'release') {
          // Past the routing flip, the promotion is only ever finished forward.
          await expect(engine.runStep(stepCtx(t, op, params, 'abort-data', progress))).rejects.toMatchObject({
            context: { forwardOnly: true },
          });
        }
        await engine.runStep(stepCtx(t, op, params, step, progress));
      }
      await until(() => w.acked.filter((k) => k.startsWith('silo:')).length >= 10);
      await w.stop();
      await o.stop();

      // The Pulumi runs: the source program staging the silo, then the silo program (the flip).
      expect(
        jobs.filter((j) => j.input.slug === t.slug).map((j) => [j.input.tier, j.input.stagedTier ?? null]),
      ).toEqual([
        ['pool', 'silo'],
        ['silo', null],
      ]);
      // Routing: the secret now points at the RDS instance.
      expect(await descriptorOf(t.slug)).toMatchObject({
        tier: 'silo',
        port: rdsPort,
        database: siloName(t.slug),
      });

      expect(w.failed).toEqual([]);
      expect(w.refused.length).toBeGreaterThan(0); // the freeze spanned the `up`, and said so
      expect(o.failed).toEqual([]);
      expect(o.refused).toEqual([]); // the other tenant was never frozen

      // Every acknowledged write is in the silo exactly once; no refused one is.
      const siloKeys = await withClient(rds.url(siloName(t.slug)), async (db) => {
        const { rows } = await db.query<{ key: string; n: number }>(
          `SELECT key, count(*)::int AS n FROM app.settings WHERE tenant_id = $1 GROUP BY key`,
          [t.id],
        );
        return new Map(rows.map((r) => [r.key, r.n]));
      });
      const ackedKeys = w.acked.map((k) => k.split(':')[1]!);
      for (const key of ackedKeys) expect(siloKeys.get(key), key).toBe(1);
      expect(siloKeys.size).toBe(ackedKeys.length);
      for (const r of w.refused) expect(siloKeys.has(r.key)).toBe(false);
      const [users] = await withClient(rds.url(siloName(t.slug)), (db) =>
        db.query<{ n: number }>('SELECT count(*)::int AS n FROM app.users').then((r) => r.rows),
      );
      expect(users?.n).toBe(500);

      // What the operation shows.
      expect(progress.rowsCopied).toMatchObject({ users: 500, documents: 500 });
      expect(progress.writeFreezeMs).toSatisfy(isCount);
      // Read inside the drain session, after the slot was asserted: a byte count, never null.
      expect(progress.replicationLagBytes).toSatisfy(isCount);
      expect(Date.parse(String(progress.rollbackUntil))).toBeGreaterThan(Date.now() + 23 * 3600_000);
      // The slot that held every shared tenant's WAL is gone.
      const slots = await promotionSlots();
      expect(slots).toEqual([]);

      // The source stays, frozen, until the window ends; then cleanup deletes it, and only it.
      expect(await poolUsers(t.id)).toBe(500);
      // Another promotion in flight (its slot idle between two steps) is left alone by this cleanup.
      const otherSlot = `tenantry_promo_${rand(14)}`;
      await superQuery(SHARED_DB, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [otherSlot]);
      await engine.cleanupPromotion({ ...t, tier: 'silo' }, params, op);
      const kept = await superQuery(SHARED_DB, 'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [
        otherSlot,
      ]);
      expect(kept).toHaveLength(1);
      await superQuery(SHARED_DB, 'SELECT pg_drop_replication_slot($1)', [otherSlot]);
      const left = await superQuery<{ tenant_id: string; n: number }>(
        SHARED_DB,
        'SELECT tenant_id::text, count(*)::int AS n FROM pool.users WHERE tenant_id = ANY($1::uuid[]) GROUP BY 1',
        [[t.id, other.id]],
      );
      expect(left).toEqual([{ tenant_id: other.id, n: 50 }]);
      const otherSettings = await superQuery<{ n: number }>(
        SHARED_DB,
        'SELECT count(*)::int AS n FROM pool.settings WHERE tenant_id = $1',
        [other.id],
      );
      expect(otherSettings[0]?.n).toBe(o.acked.length);
    }, 120_000);

    it('aborts before the flip on a checksum mismatch: the source writable again, the staged silo deleted by the stack', async () => {
      const t = await poolTenant(`aborter-${id}`, 100);
      const params: PromotionParams = { fromTier: 'pool', toTier: 'silo' };
      const op = opId();
      const progress: Record<string, unknown> = {};
      const steps = engine.promotionSteps(params);
      let failure: unknown;
      for (const step of steps) {
        if (step === 'verify-full') {
          // A row on the target that the source never had (written past the target's freeze).
          await withClient(rds.url(siloName(t.slug)), async (db) => {
            await db.query('SET session_replication_role = replica');
            await db.query(`INSERT INTO app.settings (tenant_id, key, value) VALUES ($1, 'intruder', '{}')`, [
              t.id,
            ]);
          });
        }
        try {
          await engine.runStep(stepCtx(t, op, params, step, progress));
        } catch (e) {
          failure = e;
          break;
        }
      }
      expect(String((failure as Error)?.message)).toMatch(/verification failed on table settings/);
      for (const step of engine.promotionAbortSteps(params)) {
        await engine.runStep(stepCtx(t, op, params, step, progress));
      }
      // Routing never moved; the tenant writes its pool rows again.
      expect(await descriptorOf(t.slug)).toMatchObject({ tier: 'pool', database: SHARED_DB });
      const w = writer(t.slug);
      await until(() => w.acked.length >= 3);
      await w.stop();
      expect(w.refused).toEqual([]);
      expect(w.failed).toEqual([]);
      // The staged silo was discarded (deletable first), then deleted by the source program's `up`.
      expect(stackRuns(t.slug)).toEqual([
        ['pool', 'silo', false],
        ['pool', 'silo', true],
        ['pool', null, false],
      ]);
      expect(await siloDatabases(t.slug)).toEqual([]);
      const slots = await promotionSlots();
      expect(slots).toEqual([]);
      expect(await poolUsers(t.id)).toBe(100);
    }, 120_000);
    it('moves a bridge tenant into its RDS silo while it writes, then deletes the bridge schema and roles', async () => {
      const t = await bridgeTenant(`bridger-${id}`, 200);
      const name = siloName(t.slug);
      const params: PromotionParams = { fromTier: 'bridge', toTier: 'silo' };
      // A restart right after the flip: the release finishes the promotion from a fresh process.
      const { op, w } = await promoteWhileWriting(t, params, 'release');
      await w.stop();
      expect(w.failed).toEqual([]);
      expect(await descriptorOf(t.slug)).toMatchObject({
        tier: 'silo',
        port: rdsPort,
        database: name,
        schema: 'app',
      });
      const keys = await withClient(rds.url(name), (db) =>
        db
          .query<{ key: string }>('SELECT key FROM app.settings WHERE tenant_id = $1 ORDER BY 1', [t.id])
          .then((r) => r.rows.map((x) => x.key)),
      );
      expect(keys).toEqual(w.acked.map((k) => k.split(':')[1]!).sort());
      const users = await withClient(rds.url(name), (db) =>
        db.query<{ n: number }>('SELECT count(*)::int AS n FROM app.users').then((r) => r.rows[0]?.n),
      );
      expect(users).toBe(200);
      // The bridge schema stays, frozen, for the window; its deletion takes the roles with it.
      expect(
        await superQuery(SHARED_DB, 'SELECT 1 FROM pg_namespace WHERE nspname = $1', [name]),
      ).toHaveLength(1);
      await engine.cleanupPromotion({ ...t, tier: 'silo' }, params, op);
      expect(await superQuery(SHARED_DB, 'SELECT 1 FROM pg_namespace WHERE nspname = $1', [name])).toEqual(
        [],
      );
      expect(
        await superQuery('postgres', 'SELECT rolname FROM pg_roles WHERE rolname = ANY($1)', [
          [name, tenantOwnerRoleName(t.slug)],
        ]),
      ).toEqual([]);
      // The silo's own roles, on its own server, are untouched.
      const siloRoles = await withClient(rds.url('postgres'), (db) =>
        db.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [name]).then((r) => r.rows),
      );
      expect(siloRoles).toHaveLength(1);
    }, 120_000);
    it('moves a pool tenant into a bridge schema while it writes, across a control-plane restart inside the freeze', async () => {
      const t = await poolTenant(`bridged-${id}`, 300);
      const name = siloName(t.slug);
      const params: PromotionParams = { fromTier: 'pool', toTier: 'bridge' };
      const { op, w } = await promoteWhileWriting(t, params, 'drain');
      await w.stop();
      expect(w.failed).toEqual([]);
      expect(await descriptorOf(t.slug)).toMatchObject({
        tier: 'bridge',
        database: SHARED_DB,
        schema: name,
        user: name,
      });
      const keys = await superQuery<{ key: string }>(
        SHARED_DB,
        `SELECT key FROM ${name}.settings WHERE tenant_id = $1 ORDER BY 1`,
        [t.id],
      );
      expect(keys.map((r) => r.key)).toEqual(w.acked.map((k) => k.split(':')[1]!).sort());
      const users = await superQuery<{ n: number }>(
        SHARED_DB,
        `SELECT count(*)::int AS n FROM ${name}.users`,
      );
      expect(users[0]?.n).toBe(300);
      // The tenant's bridge role reaches its schema, and nothing of the pool's.
      const d = await descriptorOf(t.slug);
      const c = await tenantClient(d);
      try {
        await expect(c.query('SELECT count(*) FROM pool.users')).rejects.toMatchObject({ code: '42501' });
      } finally {
        await c.end();
      }
      await engine.cleanupPromotion({ ...t, tier: 'bridge' }, params, op);
      expect(await poolUsers(t.id)).toBe(0);
      expect(
        await superQuery(SHARED_DB, 'SELECT 1 FROM pg_namespace WHERE nspname = $1', [name]),
      ).toHaveLength(1);
    }, 120_000);
    it('rolls a promotion back inside its window: the rows written on the silo come back to the pool', async () => {
      const t = await poolTenant(`returner-${id}`, 100);
      const params: PromotionParams = { fromTier: 'pool', toTier: 'silo' };
      const { op, progress, w } = await promoteWhileWriting(t, params);
      // As the service builds it: the tiers swapped, the promotion's staged placement carried along.
      const back: PromotionParams = {
        fromTier: 'silo',
        toTier: 'pool',
        rollbackOf: op,
        promotedTo: progress.target as Record<string, unknown>,
      };
      const steps = engine.promotionSteps(back);
      // The row move back, the flipping `up`, the stack's deletion of the silo (the unit tests pin the list).
      expect([steps[0], steps[3], ...steps.slice(-2)]).toEqual([
        'freeze-target',
        'stack-back',
        'stack-discard',
        'stack-unstage',
      ]);
      const backProgress: Record<string, unknown> = {};
      const silo = { ...t, tier: 'silo' as const };
      for (const step of steps) await engine.runStep(stepCtx(silo, opId(), back, step, backProgress));
      await until(() => w.acked.filter((k) => k.startsWith('pool:')).length >= 10);
      await w.stop();
      expect(w.failed).toEqual([]);
      expect(await descriptorOf(t.slug)).toMatchObject({ tier: 'pool', database: SHARED_DB, schema: 'pool' });
      // Every acknowledged write (before the promotion, on the silo, after the way back) is in the pool once.
      const keys = await superQuery<{ key: string }>(
        SHARED_DB,
        'SELECT key FROM pool.settings WHERE tenant_id = $1 ORDER BY 1',
        [t.id],
      );
      expect(keys.map((r) => r.key)).toEqual(w.acked.map((k) => k.split(':')[1]!).sort());
      expect(w.acked.some((k) => k.startsWith('silo:'))).toBe(true);
      expect(backProgress.writeFreezeMs).toSatisfy(isCount);
      expect(backProgress.rowsRestored).toMatchObject({ users: 100 });
      // The silo left the stack deletable, then was deleted by it.
      expect(await siloDatabases(t.slug)).toEqual([]);
      expect(stackRuns(t.slug)).toEqual([
        ['pool', 'silo', false],
        ['silo', null, false],
        ['pool', 'silo', false],
        ['pool', 'silo', true],
        ['pool', null, false],
      ]);
    }, 120_000);
  },
);
