import fs from 'node:fs';
import path from 'node:path';
import { Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { TierCatalog } from '../domain/tiers.js';
import type { TenantTemplate } from '../providers/postgres/types.js';

const Limits = Type.Object({
  connectionLimit: Type.Integer({ minimum: 1, maximum: 10_000 }),
  statementTimeoutMs: Type.Integer({ minimum: 0 }),
  idleInTransactionSessionTimeoutMs: Type.Integer({ minimum: 0 }),
});
const Rds = Type.Object({
  instanceClass: Type.String({ pattern: '^db\\.' }),
  allocatedStorageGb: Type.Integer({ minimum: 20 }),
  maxAllocatedStorageGb: Type.Integer({ minimum: 21, maximum: 65_536 }),
  multiAz: Type.Boolean(),
  // Production: at least a week of point-in-time recovery (the policy pack checks it too).
  backupRetentionDays: Type.Integer({ minimum: 7, maximum: 35 }),
  engineVersion: Type.String(),
  performanceInsightsRetentionDays: Type.Union(
    [7, ...Array.from({ length: 23 }, (_, i) => 31 * (i + 1)), 731].map((d) => Type.Literal(d)),
  ),
  logExports: Type.Array(Type.Union([Type.Literal('postgresql'), Type.Literal('upgrade')]), {
    minItems: 1,
    uniqueItems: true,
  }),
  monitoringIntervalSeconds: Type.Union([1, 5, 10, 15, 30, 60].map((s) => Type.Literal(s))),
});
/** Scheduled credential rotation (domain/rotation.ts): the grace period bounded to a week. */
const Rotation = Type.Object({
  everyDays: Type.Integer({ minimum: 1, maximum: 3650 }),
  spreadHours: Type.Integer({ minimum: 0, maximum: 87_600 }),
  graceMinutes: Type.Integer({ minimum: 1, maximum: 10_080 }),
});
const TierDef = Type.Object({
  description: Type.String(),
  role: Limits,
  rds: Type.Optional(Rds),
  rotation: Type.Optional(Rotation),
});
const Catalog = Type.Object({
  templateVersion: Type.Integer({ minimum: 1 }),
  tiers: Type.Object({ pool: TierDef, bridge: TierDef, silo: TierDef, account: TierDef }),
});

export interface Templates {
  catalog: TierCatalog;
  tenantSchema: TenantTemplate;
}

/** Reads the tier definitions and the versioned tenant schema from `templates/`. */
export function loadTemplates(dir: string): Templates {
  const raw = JSON.parse(fs.readFileSync(path.join(dir, 'tiers.json'), 'utf8')) as Record<string, unknown>;
  delete raw.$comment;
  const errors = [...Value.Errors(Catalog, raw)];
  if (errors.length > 0) {
    throw new Error(
      `templates/tiers.json is invalid: ${errors.map((e) => `${e.path} ${e.message}`).join('; ')}`,
    );
  }
  const catalog = Value.Clean(Catalog, raw) as TierCatalog;
  for (const [tier, def] of Object.entries(catalog.tiers)) {
    if (def.rds && def.rds.maxAllocatedStorageGb <= def.rds.allocatedStorageGb) {
      throw new Error(
        `templates/tiers.json is invalid: /tiers/${tier}/rds/maxAllocatedStorageGb must be above allocatedStorageGb (storage autoscaling)`,
      );
    }
  }
  const schemaDir = path.join(dir, 'tenant-schema');
  const migrations = fs
    .readdirSync(schemaDir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((f) => ({
      version: Number(f.slice(0, 4)),
      name: f.replace(/\.sql$/, ''),
      sql: fs.readFileSync(path.join(schemaDir, f), 'utf8'),
    }));
  migrations.forEach((m, i) => {
    if (m.version !== i + 1)
      throw new Error(`tenant-schema migrations must be numbered 0001.. without gaps; found ${m.name}`);
  });
  const version = migrations.length;
  if (version !== catalog.templateVersion) {
    throw new Error(
      `templates/tiers.json says templateVersion ${catalog.templateVersion} but tenant-schema has ${version} migrations`,
    );
  }
  return { catalog, tenantSchema: { version, migrations } };
}
