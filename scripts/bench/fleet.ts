import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { DataPlane } from '../../control-plane/src/dataplane/dataplane.js';
import { Db } from '../../control-plane/src/db/db.js';
import type { Tier } from '../../control-plane/src/domain/tiers.js';
import { LocalEngine } from '../../control-plane/src/engine/local.js';
import { loadTemplates, type Templates } from '../../control-plane/src/lib/templates.js';
import { LocalKeyStore, loadRootKey } from '../../control-plane/src/local/keystore.js';
import { isRetryable } from '../../control-plane/src/worker/executor.js';
import { type ControlPlane, mapLimit, round } from './lib.js';

/** The shared data database of the embedded default. */
export const DATA = 'tenantry_data';

export interface BenchTenant {
  id: string;
  slug: string;
  tier: Exclude<Tier, 'account'>;
}

export interface BenchFleet {
  fleet: BenchTenant[];
  /** The fleet was already in the data directory (`--data-dir`), not provisioned now. */
  reused: boolean;
  provisionMs: number;
  control: Db;
  dp: DataPlane;
  templates: Templates;
  close(): Promise<void>;
}

/**
 * A benchmark fleet on a running control plane's embedded Postgres: `silos` silo tenants, `bridges`
 * bridge tenants and the rest pool, provisioned directly for speed (the local engine's own steps,
 * without the API and the queue), then recorded as active tenants in one statement. A data directory
 * that already holds exactly this many active tenants is reused as it is.
 */
export async function provisionFleet(
  cp: ControlPlane,
  o: {
    tenants: number;
    silos: number;
    bridges: number;
    /** The templates the control plane runs with (its TENANTRY_TEMPLATES_DIR). */
    templatesDir?: string;
    log: (msg: string) => void;
  },
): Promise<BenchFleet> {
  const control = new Db(cp.pgUrl('tenantry'), 8);
  const dp = new DataPlane(cp.pgUrl(DATA), { maxConnections: 8 });
  const keys = new LocalKeyStore(control, loadRootKey(cp.dataDir));
  const templates = loadTemplates(o.templatesDir ?? path.resolve(import.meta.dirname, '../../templates'));
  const engine = new LocalEngine(dp, keys, templates.catalog, templates.tenantSchema);
  await engine.bootstrap();

  const fleet: BenchTenant[] = [];
  const existing = await control.query<BenchTenant & Record<string, unknown>>(
    `SELECT id, slug, tier FROM tenants WHERE status = 'active' ORDER BY slug`,
  );
  const reused = existing.rows.length === o.tenants;
  if (reused) fleet.push(...existing.rows);
  else if (existing.rows.length > 0)
    throw new Error(`${cp.dataDir} holds another fleet; remove it or pass another --data-dir`);
  else {
    for (let i = 0; i < o.tenants; i++) {
      const tier = i < o.silos ? 'silo' : i < o.silos + o.bridges ? 'bridge' : 'pool';
      fleet.push({ id: randomUUID(), slug: `${tier[0]}-${String(i).padStart(5, '0')}`, tier });
    }
  }

  const t0 = performance.now();
  let done = reused ? o.tenants : 0;
  const outputs = new Map<string, Record<string, unknown>>();
  // Silos first (CREATE DATABASE is the slowest step), a few at a time; then the rest.
  for (const [group, conc] of reused
    ? []
    : ([
        [fleet.filter((t) => t.tier === 'silo'), 3],
        [fleet.filter((t) => t.tier !== 'silo'), 8],
      ] as const)) {
    await mapLimit(group, conc, async (t) => {
      const out: Record<string, unknown> = {};
      for (const step of engine.steps('onboard', t.tier)) {
        const run = () =>
          engine.runStep({
            operationId: 'op_bench',
            kind: 'onboard',
            step,
            tenant: { id: t.id, slug: t.slug, tier: t.tier, templateVersion: templates.tenantSchema.version },
            signal: new AbortController().signal,
          });
        // A transient failure (a catalog race between concurrent DDL sessions) is run again, as the
        // executor does with an onboarding's step.
        for (let attempt = 1; ; attempt++) {
          try {
            Object.assign(out, await run());
            break;
          } catch (e) {
            if (!isRetryable(e) || attempt >= 5) throw e;
            await new Promise((r) => setTimeout(r, 50 * attempt));
          }
        }
      }
      outputs.set(t.id, out);
      if (++done % 1000 === 0) o.log(`provisioned ${done}/${o.tenants}`);
    });
  }
  if (!reused)
    await control.query(
      `INSERT INTO tenants (id, slug, name, tier, status, template_version, outputs)
     SELECT x.id, x.slug, x.slug, x.tier, 'active', $2, x.outputs
       FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, slug text, tier text, outputs jsonb)`,
      [
        JSON.stringify(fleet.map((t) => ({ ...t, outputs: outputs.get(t.id) ?? {} }))),
        templates.tenantSchema.version,
      ],
    );
  const provisionMs = performance.now() - t0;
  o.log(
    reused
      ? `reusing the fleet of ${o.tenants} in ${cp.dataDir}`
      : `fleet of ${o.tenants} provisioned in ${round(provisionMs / 1000, 1)} s`,
  );
  return {
    fleet,
    reused,
    provisionMs,
    control,
    dp,
    templates,
    async close() {
      await dp.close();
      await control.close();
    },
  };
}
